"""`make bench`: every benchmark in turn, each printing its table and ratio against its baseline.

Usage: python -m benchmarks.run_all [--quick] [--only ingest,prepare,...]
Results land in bench_out/<name>.json; a summary table is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCHES = ("ingest", "prepare", "train", "score", "describe", "query", "ml100k", "scale")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--only", help="comma-separated subset of " + ",".join(BENCHES))
    args = p.parse_args(argv)
    names = args.only.split(",") if args.only else BENCHES
    root = str(Path(__file__).resolve().parents[1])  # `benchmarks` is not installed: found from the checkout
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    failed = []
    for name in names:
        module = f"benchmarks.{name}" if name in ("ml100k", "scale") else f"benchmarks.{name}_bench"
        print(f"\n===== {name} =====", flush=True)
        start = time.monotonic()
        # its own process: what one benchmark leaves behind (Beam's objects, torch's threads, caches) must
        # not slow the next (the KV-cache ratio read 3.3x after the others in one process, 8.5x alone)
        rc = subprocess.run([sys.executable, "-m", module, *(["--quick"] if args.quick else [])], env=env).returncode
        if rc:
            print(f"{name}: FAILED (exit status {rc})", file=sys.stderr)
            failed.append(name)
        print(f"({name} took {time.monotonic() - start:.0f} s)")
    print("\n===== summary (bench_out/*.json) =====")
    for path in sorted(Path("bench_out").glob("*.json")):
        print(f"{path.stem}: {json.dumps(json.loads(path.read_text()), ensure_ascii=False)[:400]}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
