"""What each nightly stage costs as the shop grows: wall time and peak memory by size, and the growth exponent.

    python -m benchmarks.scale [--sizes S1,S2] [--work DIR] [--quick]

For each size (items / users / events, 30 days) `shopllm sample` writes the raw feeds, then every stage runs
as its own process with the production defaults, training fixed at 200 steps (evaluated at 100 and 200):
ingest, prepare, train, score (every item described: it is the first night), evaluate, report. Wall time is
the process's; peak RSS is what `wait4` reports for it (the in-process Beam runner and the trainer are one
process). The growth exponent of a stage is the least-squares slope of log(wall) over log(input) across the
sizes run: input = events for every stage but train, whose 200 steps grow with the catalog (items). Linear is
1; fixed costs (imports, the model load) pull small sizes up and so the exponent down. `make bench` runs
S1 and S2; --quick runs `tiny`. Writes bench_out/scale.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shopllm import storage

SIZES = {  # items, users, events
    "tiny": (300, 100, 3_000),
    "S1": (1_000, 500, 10_000),
    "S2": (5_000, 3_000, 100_000),
    "S3": (20_000, 20_000, 1_000_000),
    "S4": (100_000, 50_000, 3_000_000),
}
STAGES = ("ingest", "prepare", "train", "score", "evaluate", "report")
DATE = "2026-11-30"
CONFIG = """\
[train]
max_steps = 200
max_minutes = 120.0
eval_every = 100
"""
ROOT = Path(__file__).resolve().parents[1]


def run_measured(cmd: list[str], log: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one process; raises with the log's tail if it fails."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with log.open("w") as f:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{' '.join(cmd[2:5])} failed (exit {proc.returncode}); log {log}:\n{tail}")
    return wall, usage.ru_maxrss / 1024  # Linux: KiB


def stage_command(stage: str, work: Path) -> list[str]:
    cmd = [sys.executable, "-m", "jobs", stage, "--out", str(work / "out"), "--date", DATE]
    if stage == "ingest":
        cmd += ["--catalog", str(work / "raw/catalog/*"), "--events", str(work / "raw/events/*")]
    if stage not in ("evaluate", "report"):
        cmd += ["--config", str(work / "config.toml")]
    return cmd


def measure_size(name: str, root: Path) -> dict:
    items, users, events = SIZES[name]
    work = root / name
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.toml").write_text(CONFIG)
    sample = [sys.executable, "-m", "jobs", "sample", "--out", str(work / "raw"), "--items", str(items)]
    sample += ["--users", str(users), "--events", str(events), "--days", "30", "--end-date", DATE]
    result = {"items": items, "users": users, "events": events, "stages": {}}
    print(f"{name}: {items:,} items / {users:,} users / {events:,} events", flush=True)
    wall, rss = run_measured(sample, work / "sample.log")
    result["sample"] = {"wall_s": round(wall, 1), "peak_mb": round(rss)}
    for stage in STAGES:
        wall, rss = run_measured(stage_command(stage, work), work / f"{stage}.log")
        result["stages"][stage] = {"wall_s": round(wall, 1), "peak_mb": round(rss)}
        print(f"  {stage:<9} {wall:>7.1f} s {rss:>7.0f} MB", flush=True)
    train = storage.read_json(storage.summary_path(str(work / "out"), DATE, "train"))
    result["train_tokens_per_s"] = train["tokens_per_s"]
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


def cell(wall_s: float, peak_mb: float) -> str:
    return f"{wall_s:>8.1f}s {peak_mb:>5}MB"


def print_table(results: dict, growth: dict) -> None:
    names = list(results)
    print("\nstage      " + "".join(f"{n:>16}" for n in names) + "   exponent (of events; train: of items)")
    for stage in STAGES:
        cells = "".join(cell(r["stages"][stage]["wall_s"], r["stages"][stage]["peak_mb"]) for r in results.values())
        e = growth[stage]
        print(f"{stage:<10} {cells}   {'-' if e is None else e}{'' if e is None or e <= 1.2 else '  (> 1.2)'}")
    print(
        "nightly    " + "".join(f"{r['nightly_wall_s']:>8.1f}s {r['nightly_peak_mb']:>5}MB" for r in results.values())
    )
    print("train tok/s" + "".join(f"{r['train_tokens_per_s']:>16,.0f}" for r in results.values()))
    if "S2" in results and len(results) > 1:
        big = max(results.values(), key=lambda r: r["items"])
        share = big["train_tokens_per_s"] / results["S2"]["train_tokens_per_s"]
        print(f"train tokens/s at {big['items']:,} items / at 5,000 items: {share:.2f} (target >= 0.5)")
    if "S4" in results:
        s4 = results["S4"]
        print(
            f"S4 nightly: {s4['nightly_wall_s'] / 60:.1f} min (target < 30), peak {s4['nightly_peak_mb']} MB (< 4096)"
        )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="S1,S2", help=f"comma-separated, of {','.join(SIZES)} (default S1,S2)")
    p.add_argument("--quick", action="store_true", help="the tiny size only (a smoke run)")
    p.add_argument("--work", help="where the inputs and outputs go (default: a temporary folder, removed)")
    p.add_argument("--json", default="bench_out/scale.json")
    args = p.parse_args(argv)
    names = ["tiny"] if args.quick else args.sizes.split(",")
    unknown = [n for n in names if n not in SIZES]
    if unknown:
        p.error(f"unknown size(s) {unknown}; choose from {', '.join(SIZES)}")
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        root = Path(args.work or tmp).resolve()
        results = {name: measure_size(name, root) for name in names}
    growth = exponents(results)
    print_table(results, growth)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"sizes": results, "exponents": growth}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
