"""What each nightly stage costs as the shop grows: wall time and peak memory by size, and the growth exponent.

    python -m benchmarks.scale [--sizes S1,S2] [--steps 200] [--work DIR] [--quick] [beam options]

For each size (items / users / event lines, dirty ones included, 30 days) `shopllm sample` writes the raw feeds
into a fresh folder, then every stage runs as its own process with the production defaults, training fixed at
--steps steps (evaluated every 100): ingest, prepare, train, score (every item described: it is the first
night, nothing to carry over), evaluate, report. Unknown flags go to ingest, prepare and score (Beam options).

Wall time is the process's. Peak RSS is the larger of what `wait4` reports for the process (its own peak, or
its largest reaped child's) and the highest sum of resident memory over its whole process tree, polled every
0.2 s from /proc (Beam worker processes under `--direct_running_mode=multi_processing`; shared pages count in
each process). The growth exponent of a stage is the least-squares slope of log(wall) over log(input) across
the sizes run: input = events for every stage but train, whose fixed number of steps (about the same tokens at
every size) grows with the catalog, so its input is items. Linear is 1; fixed costs (imports, model loads)
weigh most at small sizes and pull the exponent down. `make bench` runs S1 and S2; --quick runs two tiny sizes
at 20 steps. Prints the issue's targets and writes everything to bench_out/scale.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from shopllm import storage

SIZES = {  # items, users, events
    "tiny": (300, 100, 3_000),
    "tiny2": (900, 300, 9_000),
    "S1": (1_000, 500, 10_000),
    "S2": (5_000, 3_000, 100_000),
    "S3": (20_000, 20_000, 1_000_000),
    "S4": (100_000, 50_000, 3_000_000),
}
STAGES = ("ingest", "prepare", "train", "score", "evaluate", "report")
BEAM_STAGES = ("ingest", "prepare", "score")
DATE = "2026-11-30"
ROOT = Path(__file__).resolve().parents[1]
PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss_mb(pid: int) -> float:
    """Resident MB of a process and all its descendants now, from /proc (0 for what has gone)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
        except (OSError, ValueError):
            pass
    return total / 2**20


def run_measured(cmd: list[str], log: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB, child processes included) of one command; raises with the log's tail."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    peak, done = [0.0], threading.Event()
    with log.open("w") as f:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

        def poll():
            while not done.wait(0.2):
                peak[0] = max(peak[0], tree_rss_mb(proc.pid))

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - start
        done.set()
        poller.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{' '.join(cmd[2:5])} failed (exit {proc.returncode}); log {log}:\n{tail}")
    return wall, max(peak[0], usage.ru_maxrss / 1024)  # Linux: ru_maxrss in KiB


def stage_command(stage: str, work: Path, beam_args: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "jobs", stage, "--out", str(work / "out"), "--date", DATE]
    if stage == "ingest":
        cmd += ["--catalog", str(work / "raw/catalog/*"), "--events", str(work / "raw/events/*")]
    if stage not in ("evaluate", "report"):
        cmd += ["--config", str(work / "config.toml")]
    return cmd + (beam_args if stage in BEAM_STAGES else [])


def measure_size(name: str, root: Path, steps: int, beam_args: list[str]) -> dict:
    items, users, events = SIZES[name]
    work = root / name
    shutil.rmtree(work, ignore_errors=True)  # a checkpoint left by an earlier run would be resumed, not trained
    work.mkdir(parents=True)
    (work / "config.toml").write_text(f"[train]\nmax_steps = {steps}\nmax_minutes = 600.0\neval_every = 100\n")
    sample = [sys.executable, "-m", "jobs", "sample", "--out", str(work / "raw"), "--items", str(items)]
    sample += ["--users", str(users), "--events", str(events), "--days", "30", "--end-date", DATE]
    result = {"items": items, "users": users, "events": events, "stages": {}}
    print(f"{name}: {items:,} items / {users:,} users / {events:,} events", flush=True)
    wall, rss = run_measured(sample, work / "sample.log")
    result["sample"] = {"wall_s": round(wall, 1), "peak_mb": round(rss)}
    for stage in STAGES:
        wall, rss = run_measured(stage_command(stage, work, beam_args), work / f"{stage}.log")
        result["stages"][stage] = {"wall_s": round(wall, 1), "peak_mb": round(rss)}
        print(f"  {stage:<9} {wall:>7.1f} s {rss:>7.0f} MB", flush=True)
    summary = lambda stage: storage.read_json(storage.summary_path(str(work / "out"), DATE, stage))  # noqa: E731
    train = summary("train")
    result["train"] = {k: train[k] for k in ("steps", "tokens", "tokens_per_s", "stopped_early")}
    result["descriptions_generated"] = summary("score")["descriptions"]["generated"]
    result["nightly_wall_s"] = round(sum(s["wall_s"] for s in result["stages"].values()), 1)
    result["nightly_peak_mb"] = max(s["peak_mb"] for s in result["stages"].values())
    return result


def exponent(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y over log x; None with fewer than two distinct sizes."""
    if len(set(xs)) < 2:
        return None
    lx, ly = [math.log(x) for x in xs], [math.log(max(y, 1e-3)) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def exponents(results: dict) -> dict:
    runs = list(results.values())
    out = {}
    for stage in STAGES:
        key = "items" if stage == "train" else "events"
        e = exponent([r[key] for r in runs], [r["stages"][stage]["wall_s"] for r in runs])
        out[stage] = None if e is None else round(e, 2)
    return out


def targets(results: dict, growth: dict) -> dict:
    """The issue's targets, each where the sizes run can answer it."""
    out = {}
    if any(e is not None for e in growth.values()):
        over = [s for s, e in growth.items() if e is not None and e > 1.2]
        out["every_stage_exponent_le_1.2"] = {"met": not over, "over": over}
    big = max(results.values(), key=lambda r: r["items"])
    if "S2" in results and big["items"] > results["S2"]["items"]:
        share = big["train"]["tokens_per_s"] / results["S2"]["train"]["tokens_per_s"]
        out["train_tokens_per_s_at_most_items_over_5k_ge_0.5"] = {
            "met": share >= 0.5,
            "items": big["items"],
            "share": round(share, 2),
        }
    if "S4" in results:
        s4 = results["S4"]
        out["S4_nightly_under_30_min_and_4_GB"] = {
            "met": s4["nightly_wall_s"] < 30 * 60 and s4["nightly_peak_mb"] < 4096,
            "min": round(s4["nightly_wall_s"] / 60, 1),
            "peak_mb": s4["nightly_peak_mb"],
        }
    return out


def print_table(results: dict, growth: dict, goals: dict) -> None:
    def row(label: str, cells: list[str], tail: str = "") -> None:
        print(f"{label:<11}" + "".join(f"{c:>18}" for c in cells) + tail)

    row("", list(results))
    for stage in STAGES:
        e = growth[stage]
        tail = f"   exponent {'-' if e is None else e} (of {'items' if stage == 'train' else 'events'})"
        row(
            stage,
            [f"{r['stages'][stage]['wall_s']:.1f}s {r['stages'][stage]['peak_mb']}MB" for r in results.values()],
            tail,
        )
    row("nightly", [f"{r['nightly_wall_s']:.1f}s {r['nightly_peak_mb']}MB" for r in results.values()])
    row("train tok/s", [f"{r['train']['tokens_per_s']:,.0f}" for r in results.values()])
    for name, goal in goals.items():
        print(f"target {name}: {'met' if goal['met'] else 'NOT met'} {json.dumps(goal)}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="S1,S2", help=f"comma-separated, of {','.join(SIZES)} (default S1,S2)")
    p.add_argument("--steps", type=int, default=200, help="training steps at every size (default 200)")
    p.add_argument("--quick", action="store_true", help="sizes tiny,tiny2 at 20 steps (a smoke run)")
    p.add_argument("--work", help="where the inputs and outputs go (default: a temporary folder, removed)")
    p.add_argument("--json", default="bench_out/scale.json")
    args, beam_args = p.parse_known_args(argv)
    names, steps = (["tiny", "tiny2"], 20) if args.quick else (args.sizes.split(","), args.steps)
    unknown = [n for n in names if n not in SIZES]
    if unknown:
        p.error(f"unknown size(s) {unknown}; choose from {', '.join(SIZES)}")
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        root = Path(args.work or tmp).resolve()
        results = {name: measure_size(name, root, steps, beam_args) for name in names}
    growth = exponents(results)
    goals = targets(results, growth)
    print_table(results, growth, goals)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    report = {"steps": steps, "beam_args": beam_args, "sizes": results, "exponents": growth, "targets": goals}
    Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
