"""MovieLens-100k as a shop, through `shopllm nightly` with the defaults: what a data team gets with no config.

    .venv/bin/pip install --no-deps recbole==1.2.1      # the data ships inside this package
    python -m benchmarks.ml100k_nightly [--out DIR] [--config EXTRA.toml]

Each rating becomes a `purchase` at its timestamp (benchmarks.ml100k.write_raw_inputs); the nightly job
runs every stage with its defaults plus `[score] active_days` wide enough to score every user (the
ratings are from 1997-98), or with `--config` instead. The figure is the evaluate stage's user scope:
each user's last item held out by prepare (ties by file order), ranked over all items with the history
masked, as RecBole's protocol does; RecBole's GRU4Rec reaches ndcg@10 0.1021 on this split.
Writes bench_out/ml100k_nightly.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.ml100k import DATE, load_movielens, write_raw_inputs

GRU4REC_NDCG10 = 0.1021
ONLY_ACTIVE_DAYS = "[score]\nactive_days = 100000  # score every user of 1997-98\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", help="output root (default: a temporary folder)")
    p.add_argument("--config", help="config file instead of the defaults plus [score] active_days")
    p.add_argument("--json", default="bench_out/ml100k_nightly.json")
    args = p.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="ml100k-nightly-")).resolve()
    catalog, events = write_raw_inputs(load_movielens(), out / "raw")
    config = Path(args.config).resolve() if args.config else out / "only_active_days.toml"
    if not args.config:
        config.write_text(ONLY_ACTIVE_DAYS)
    start = time.monotonic()
    rc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs",
            "nightly",
            "--catalog",
            str(catalog),
            "--events",
            str(events),
            "--out",
            str(out),
            "--date",
            DATE,
            "--config",
            str(config),
        ]
    ).returncode
    if rc:
        return rc
    user = json.loads((out / f"summaries/dt={DATE}/evaluate.json").read_text())["ranking"]["user"]
    result = {
        "config": config.read_text(),
        "wall_s": round(time.monotonic() - start, 1),
        **user,
        "vs_gru4rec": round(user["ndcg@10"] / GRU4REC_NDCG10, 3),
    }
    print(
        f"ml-100k through shopllm nightly: ndcg@10 {user['ndcg@10']:.4f}, hr@10 {user['hr@10']:.4f} "
        f"({result['vs_gru4rec']}x GRU4Rec's {GRU4REC_NDCG10}) in {result['wall_s']:.0f} s"
    )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
