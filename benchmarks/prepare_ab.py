"""A/B of two code versions of the prepare stage on one machine: which one is faster, beyond the noise.

    git worktree add /tmp/before HEAD~1
    python -m benchmarks.prepare_ab --rounds 20 before=/tmp/before after=.

Each version runs in its own long-lived process (PYTHONPATH=its tree) on its own copy of one curated night
(a `prepare_bench` sample, x3 by default, made once under --work; each version runs its own baseline).
The processes take turns, in a random order each
round, each running the plain baseline and one prepare night. Printed per version, as medians over the
rounds: the baseline, the pipeline's wall time, the whole stage's wall time ("step") and its process CPU
time. Two
processes of the same version differ by ~10 ms on the 2-core machine: smaller differences are noise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

WORKER = "worker"


def worker(out: Path, date: str) -> None:
    """Answer each line on stdin with one timed baseline + prepare night, as a JSON line."""
    import pipelines.prepare as prepare

    try:  # the stage's run moved from pipelines/ to jobs/; an older tree still has it in pipelines
        from jobs.prepare import run_prepare
    except ImportError:
        run_prepare = prepare.run_prepare
    from benchmarks.prepare_bench import baseline
    from pipelines.common import gc_frozen
    from shopllm.config import PrepareConfig

    run_prepare(out, date, PrepareConfig())  # warm-up
    print("ready", flush=True)
    for _ in sys.stdin:
        with gc_frozen():
            base = baseline(out, date, out / "vocab" / "tokenizer.json")
        cpu = time.process_time()
        summary = run_prepare(out, date, PrepareConfig())
        cpu = time.process_time() - cpu
        print(
            json.dumps(
                {
                    "baseline": base["total_s"],
                    "pipeline": summary["seconds"]["pipeline"],
                    "step": summary["seconds"]["total"],
                    "step_cpu": cpu,
                }
            ),
            flush=True,
        )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("versions", nargs="*", help="name=path of a source tree (two or more)")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--size", default="full", help="prepare_bench sample size (default: full, the sample x3)")
    p.add_argument("--work", default="/tmp/prepare_ab", help="the curated night and each version's copy of it")
    p.add_argument(f"--{WORKER}", nargs=2, metavar=("OUT", "DATE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(Path(args.worker[0]), args.worker[1])
        return 0
    if len(args.versions) < 2:
        p.error("give at least two name=path versions")
    from benchmarks.prepare_bench import SIZES, make_curated

    work = Path(args.work)
    night, date = make_curated(work / f"night-{args.size}", SIZES[args.size])
    procs = {}
    for name, tree in (v.split("=", 1) for v in args.versions):
        copy = work / name
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(night, copy, ignore=shutil.ignore_patterns("tokens", "summaries", "_staging-*"))
        env = dict(os.environ, PYTHONPATH=str(Path(tree).resolve()))
        # this file runs the worker, so a version from before it existed can be measured too
        procs[name] = subprocess.Popen(
            [sys.executable, __file__, f"--{WORKER}", str(copy), date],
            cwd=Path(tree).resolve(),
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
    for name, proc in procs.items():
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"version {name} did not start (run it alone to see why)")
    runs = {name: [] for name in procs}
    order = random.Random(0)
    for _ in range(args.rounds):
        names = list(procs)
        order.shuffle(names)
        for name in names:
            procs[name].stdin.write("run\n")
            procs[name].stdin.flush()
            runs[name].append(json.loads(procs[name].stdout.readline()))
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()
    print(
        f"{'version':12s}{'baseline':>10s}{'pipeline':>10s}{'step':>8s}{'step CPU':>10s}  (medians of {args.rounds}, s)"
    )
    for name, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(f"{name:12s}{med['baseline']:>10.3f}{med['pipeline']:>10.3f}{med['step']:>8.3f}{med['step_cpu']:>10.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
