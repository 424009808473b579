"""`make bench`: every benchmark in turn, each printing its table and ratio against its baseline.

Usage: python -m benchmarks.run_all [--quick] [--only ingest,prepare,...]
Results land in bench_out/<name>.json; a summary table is printed at the end.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

BENCHES = ("ingest", "prepare", "train", "score", "ml100k")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--only", help="comma-separated subset of " + ",".join(BENCHES))
    args = p.parse_args(argv)
    names = args.only.split(",") if args.only else BENCHES
    failed = []
    for name in names:
        module = f"benchmarks.{name}" if name == "ml100k" else f"benchmarks.{name}_bench"
        print(f"\n===== {name} =====", flush=True)
        start = time.monotonic()
        try:
            rc = importlib.import_module(module).main(["--quick"] if args.quick else [])
        except Exception as e:  # keep going: one broken benchmark should not hide the others
            print(f"{name}: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
            rc = 1
        if rc:
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
