"""shopllm nightly: ingest -> prepare -> train -> score -> evaluate -> report for one date.

Each stage publishes its outputs atomically and then gets a marker under state/dt=D/; a run that failed
or was killed resumes at the first stage without a marker when started again for the same date.
A lock under --out refuses a second concurrent run. `models/LATEST` moves only when the score stage has
published that night's scores.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time

from jobs.cli import add_common
from shopllm import runstate, storage
from shopllm.errors import ShopllmError

log = logging.getLogger("shopllm.nightly")

STAGES = ("ingest", "prepare", "train", "score", "evaluate", "report")
BEAM_STAGES = {"ingest", "prepare", "score"}


class StageFailed(ShopllmError):
    pass


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--catalog", required=True, help="catalog files: path or glob (JSONL, CSV, Parquet, .gz)")
    p.add_argument("--events", required=True, help="event files: path or glob (JSONL, CSV, Parquet, .gz)")
    add_common(p)
    p.add_argument("--full-retrain", action="store_true", help="train from scratch instead of warm-starting from LATEST")
    p.add_argument("--force", action="store_true", help="rerun every stage even if it completed for this date")


def _stage_parsers(stage: str):
    """The full `shopllm` parser and the stage's own subparser."""
    from jobs.cli import build_parser, subcommand_parser

    parser = build_parser(only=stage)
    return parser, subcommand_parser(parser, stage)


def stage_argv(stage: str, args: argparse.Namespace, accepts: set[str]) -> list[str]:
    """The command line of one stage, built from the nightly's own flags (only those the stage takes)."""
    argv = [stage, "--out", args.out, "--date", args.date]
    if stage == "ingest":
        argv += ["--catalog", args.catalog, "--events", args.events]
    if args.full_retrain and "--full-retrain" in accepts:
        argv += ["--full-retrain"]
    if args.config and "--config" in accepts:
        argv += ["--config", args.config]
    return argv


def run_stage(stage: str, args: argparse.Namespace, beam_args: list[str]) -> float:
    parser, sub = _stage_parsers(stage)
    stage_args = parser.parse_args(stage_argv(stage, args, set(sub._option_string_actions)))
    start = time.monotonic()
    try:
        rc = stage_args._module.run(stage_args, list(beam_args) if stage in BEAM_STAGES else [])
    except ShopllmError as e:
        raise StageFailed(f"stage {stage} failed: {e}") from None
    except Exception as e:  # one line for the user; the traceback goes to the log
        log.debug("stage %s traceback", stage, exc_info=True)
        raise StageFailed(f"stage {stage} failed: {type(e).__name__}: {e}") from e
    if rc:
        raise StageFailed(f"stage {stage} failed with exit status {rc}")
    return time.monotonic() - start


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    storage.check_writable(args.out)
    with runstate.RunLock(args.out, "nightly") as lock:
        if lock.took_over:
            print(f"shopllm nightly: took over a stale lock from pid {lock.took_over.get('pid')}", file=sys.stderr)
        removed = storage.clean_staging(args.out)
        if removed:
            log.info("removed %d staging folder(s) left by an interrupted run", removed)
        if args.force:
            runstate.clear_stages(args.out, args.date)
        return _run_stages(args, beam_args)


def _run_stages(args: argparse.Namespace, beam_args: list[str]) -> int:
    timings_path = storage.summary_path(args.out, args.date, "nightly")
    timings = storage.read_json(timings_path) if timings_path.exists() and not args.force else {"stages": {}}
    started = time.monotonic()
    for stage in STAGES:
        if runstate.stage_done(args.out, args.date, stage):
            log.info("[%s] already completed for %s; skipping", stage, args.date)
            timings["stages"].setdefault(stage, {})["skipped_on_resume"] = True
            continue
        log.info("[%s] starting", stage)
        try:
            seconds = run_stage(stage, args, beam_args)
        except StageFailed as e:
            timings["failed_stage"] = stage
            storage.write_json(timings_path, timings)
            print(f"shopllm nightly: {e}", file=sys.stderr)
            return 1
        timings["stages"][stage] = {"seconds": round(seconds, 2)}
        timings.pop("failed_stage", None)
        storage.write_json(timings_path, timings)  # written before `report` so the report shows the timings
        runstate.mark_done(args.out, args.date, stage, seconds)
        log.info("[%s] done in %.1f s", stage, seconds)
    timings["total_seconds_this_run"] = round(time.monotonic() - started, 2)
    storage.write_json(timings_path, timings)
    print(f"nightly {args.date}: all stages complete in {timings['total_seconds_this_run']:.0f} s; outputs under {args.out}")
    return 0


if __name__ == "__main__":
    from jobs.cli import main

    raise SystemExit(main(["nightly", *sys.argv[1:]]))
