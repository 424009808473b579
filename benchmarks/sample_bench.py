"""`shopllm sample` grows linearly in items and in events: times at a small and a 10x size, as ratios.

    python -m benchmarks.sample_bench [--quick]

Times `shopllm.sample.build_catalog` at 2k and 20k items and `write_sample` (catalog + events, gzip
files under a temporary folder) at 2k and 20k items (100k events), then at 100k and 1M events
(10k users, 2k items); --quick uses a tenth of each. Linear work gives a ratio near 10 (fixed costs
pull it lower); the old quadratic complement assignment gave ~100 for the catalog. A check, not a
timed test: it prints, asserts nothing. Writes bench_out/sample.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from shopllm.sample import SampleConfig, build_catalog, write_sample


def seconds(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def write_seconds(cfg: SampleConfig) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        return seconds(lambda: write_sample(tmp, cfg))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="a tenth of each size")
    args = p.parse_args(argv)
    s = 10 if args.quick else 1
    rows = {}
    small, big = SampleConfig(items=2000 // s), SampleConfig(items=20_000 // s)
    rows["catalog_items"] = (
        small.items,
        big.items,
        seconds(lambda: build_catalog(small)),
        seconds(lambda: build_catalog(big)),
    )
    rows["write_items"] = (small.items, big.items, write_seconds(small), write_seconds(big))
    few, many = (SampleConfig(items=2000, users=10_000, events=n // s) for n in (100_000, 1_000_000))
    rows["write_events"] = (few.events, many.events, write_seconds(few), write_seconds(many))
    print(f"{'what':<14} {'small':>9} {'large':>9} {'t_small':>8} {'t_large':>8} {'ratio':>6}")
    for name, (a, b, ta, tb) in rows.items():
        print(f"{name:<14} {a:>9,} {b:>9,} {ta:>7.2f}s {tb:>7.2f}s {tb / ta:>6.1f}")
    out = Path("bench_out")
    out.mkdir(exist_ok=True)
    result = {k: {"small": a, "large": b, "seconds": [ta, tb], "ratio": tb / ta} for k, (a, b, ta, tb) in rows.items()}
    (out / "sample.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
