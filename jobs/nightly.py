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
from dataclasses import replace

from jobs.cli import add_common
from shopllm import config, runstate, storage
from shopllm.config import Config
from shopllm.errors import ShopllmError

log = logging.getLogger("shopllm.nightly")

STAGES = ("ingest", "prepare", "train", "score", "evaluate", "report")


class StageFailed(ShopllmError):
    pass


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--catalog", required=True, help="catalog files: path or glob (JSONL, CSV, Parquet, .gz)")
    p.add_argument("--events", required=True, help="event files: path or glob (JSONL, CSV, Parquet, .gz)")
    add_common(p)
    p.add_argument(
        "--full-retrain", action="store_true", help="train from scratch instead of warm-starting from LATEST"
    )
    p.add_argument("--force", action="store_true", help="rerun every stage even if it completed for this date")


def run_stage(stage: str, args: argparse.Namespace, cfg: Config, beam_args: list[str]) -> float:
    """Run one stage of the night through its `run_<stage>` function; returns its seconds."""
    start = time.monotonic()
    try:
        STAGE_RUNS[stage](args, cfg, list(beam_args))
    except ShopllmError as e:
        raise StageFailed(f"stage {stage} failed: {e}") from None
    except Exception as e:  # one line for the user; the traceback goes to the log
        log.debug("stage %s traceback", stage, exc_info=True)
        raise StageFailed(f"stage {stage} failed: {type(e).__name__}: {e}") from e
    return time.monotonic() - start


def _ingest(args, cfg: Config, beam_args) -> None:
    from jobs import ingest

    catalog, events = ingest.match_inputs(args.catalog, "catalog"), ingest.match_inputs(args.events, "events")
    ingest.quiet_dofn_tracebacks()
    print(ingest.format_summary(ingest.run_ingest(catalog, events, args.out, args.date, cfg.ingest, beam_args)))


def _prepare(args, cfg: Config, beam_args) -> None:
    from jobs import prepare

    print(prepare.format_summary(prepare.run_prepare(args.out, args.date, cfg.prepare, beam_args)))


def _train(args, cfg: Config, beam_args) -> None:
    from jobs import train

    train.run_train(args.out, args.date, replace(cfg.train, full_retrain=cfg.train.full_retrain or args.full_retrain))


def _score(args, cfg: Config, beam_args) -> None:
    from jobs import score

    version = score.resolve_version(args.out, args.date, None)
    score.print_summary(score.run_score(args.out, args.date, version, cfg.score, beam_args))


def _evaluate(args, cfg: Config, beam_args) -> None:
    from jobs import evaluate

    evaluate.print_summary(evaluate.run_evaluate(args.out, args.date, cfg=cfg.evaluate))


def _report(args, cfg: Config, beam_args) -> None:
    from jobs import report

    print(f"report: {report.run_report(args.out, args.date)}")


STAGE_RUNS = {
    "ingest": _ingest,
    "prepare": _prepare,
    "train": _train,
    "score": _score,
    "evaluate": _evaluate,
    "report": _report,
}


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    cfg = config.load(args.config)  # a bad config stops the night before anything runs
    storage.check_writable(args.out)
    with runstate.RunLock(args.out, "nightly") as lock:
        if lock.took_over:
            print(f"shopllm nightly: took over a stale lock from pid {lock.took_over.get('pid')}", file=sys.stderr)
        removed = storage.clean_staging(args.out)
        if removed:
            log.info("removed %d staging folder(s) left by an interrupted run", removed)
        if args.force:
            runstate.clear_stages(args.out, args.date)
        return _run_stages(args, cfg, beam_args, lock)


def _run_stages(args: argparse.Namespace, cfg: Config, beam_args: list[str], lock) -> int:
    timings_path = storage.summary_path(args.out, args.date, "nightly")
    timings = storage.read_json_if_exists(timings_path) if not args.force else None
    timings = timings or {"stages": {}}
    started = time.monotonic()
    for stage in STAGES:
        lock.check()  # a run whose object-storage lease was taken over stops here
        if runstate.stage_done(args.out, args.date, stage):
            log.info("[%s] already completed for %s; skipping", stage, args.date)
            timings["stages"].setdefault(stage, {})["skipped_on_resume"] = True
            continue
        log.info("[%s] starting", stage)
        try:
            seconds = run_stage(stage, args, cfg, beam_args)
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
    print(
        f"nightly {args.date}: all stages complete in {timings['total_seconds_this_run']:.0f} s; "
        f"outputs under {args.out}"
    )
    return 0


if __name__ == "__main__":
    from jobs.cli import main

    raise SystemExit(main(["nightly", *sys.argv[1:]]))
