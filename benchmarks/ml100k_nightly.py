"""MovieLens-100k as a shop, through `shopllm nightly` with the defaults: what a data team gets with no config.

    .venv/bin/pip install --no-deps recbole==1.2.1      # the data ships inside this package
    python -m benchmarks.ml100k_nightly [--out DIR] [--config EXTRA.toml]

Each rating becomes a `purchase` at its timestamp (benchmarks.ml100k.write_raw_inputs); the nightly job
runs every stage with its defaults plus `[score] active_days` wide enough to score every user (the
ratings are from 1997-98), or with `--config` instead. Two figures, both ranked over all items with the
history masked, as RecBole's protocol does (RecBole's GRU4Rec reaches ndcg@10 0.1021 on this split):

- held out (the headline, a data team's view): each user's last rating (by time, ties by file order) is
  left out of the events the nightly reads, and scored against the user recommendations it publishes
  (top-K of `scores/recommendations`, a miss when not among them). The model never sees those ratings.
- evaluate: the evaluate stage's user scope over the same run, where prepare holds out each user's last
  item of the events it was given (the second-to-last rating) and the model ranks it from the history
  before it.

Writes bench_out/ml100k_nightly.json.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.ml100k import DATE, MovieLens, load_movielens, write_raw_inputs

GRU4REC_NDCG10 = 0.1021
ONLY_ACTIVE_DAYS = "[score]\nactive_days = 100000  # score every user of 1997-98\n"
K = 10


def hold_out_last(ml: MovieLens) -> tuple[MovieLens, dict[str, str]]:
    """The ratings without each user's last one (by time, ties by file order), and user -> that item."""
    last: dict[str, tuple[int, int, str]] = {}
    for user, item, ts, row in ml.ratings:
        if user not in last or (ts, row) > last[user][:2]:
            last[user] = (ts, row, item)
    rows = {row for ts, row, _ in last.values()}
    kept = [r for r in ml.ratings if r[3] not in rows]
    return MovieLens(ml.titles, kept), {user: item for user, (_, _, item) in last.items()}


def heldout_metrics(recommendations, heldout: dict[str, str]) -> dict:
    """hr@10 / ndcg@10 of the held-out items in the published user lists (a user without a list: a miss)."""
    lists: dict[str, dict[str, int]] = {}
    for r in recommendations:
        if r["scope"] == "user":
            lists.setdefault(r["subject_id"], {})[r["item_id"]] = r["rank"]
    ranks = [lists.get(user, {}).get(item) for user, item in heldout.items()]
    hits = [rank for rank in ranks if rank is not None and rank <= K]
    return {
        "n": len(ranks),
        "users_without_a_list": sum(user not in lists for user in heldout),
        f"hr@{K}": len(hits) / len(ranks),
        f"ndcg@{K}": sum(1 / math.log2(rank + 1) for rank in hits) / len(ranks),
    }


def main(argv=None) -> int:
    from shopllm import storage
    from shopllm.schemas import RECOMMENDATIONS

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", help="output root (default: a temporary folder)")
    p.add_argument("--config", help="config file instead of the defaults plus [score] active_days")
    p.add_argument("--json", default="bench_out/ml100k_nightly.json")
    args = p.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="ml100k-nightly-")).resolve()
    shown, heldout = hold_out_last(load_movielens())
    catalog, events = write_raw_inputs(shown, out / "raw")
    config = Path(args.config).resolve() if args.config else out / "only_active_days.toml"
    if not args.config:
        config.write_text(ONLY_ACTIVE_DAYS)
    start = time.monotonic()
    command = [sys.executable, "-m", "jobs", "nightly", "--catalog", str(catalog), "--events", str(events)]
    rc = subprocess.run([*command, "--out", str(out), "--date", DATE, "--config", str(config)]).returncode
    if rc:
        return rc
    wall = round(time.monotonic() - start, 1)
    recs = storage.read_partition(str(out), RECOMMENDATIONS, DATE, columns=["scope", "subject_id", "item_id", "rank"])
    held = heldout_metrics(recs.to_pylist(), heldout)
    user = json.loads((out / f"summaries/dt={DATE}/evaluate.json").read_text())["ranking"]["user"]
    result = {
        "config": config.read_text(),
        "wall_s": wall,
        "heldout": held,
        "evaluate": user,
        "vs_gru4rec": round(held[f"ndcg@{K}"] / GRU4REC_NDCG10, 3),
    }
    print(
        f"ml-100k through shopllm nightly: held-out last rating ndcg@10 {held['ndcg@10']:.4f}, "
        f"hr@10 {held['hr@10']:.4f} ({result['vs_gru4rec']}x GRU4Rec's {GRU4REC_NDCG10}); evaluate's user "
        f"scope ndcg@10 {user['ndcg@10']:.4f}; {wall:.0f} s"
    )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
