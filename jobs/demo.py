"""shopllm demo: write the embedded sample shop, run `nightly` on it on the CPU, show a few results."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from shopllm.errors import ShopllmError

# The demo's budget: the nightly defaults train ~10 minutes; the demo stays within ~4 minutes on 2 cores.
DEMO_CONFIG = """\
# shopllm demo: a shorter training than the nightly default (the cosine decays within max_steps and max_minutes)
[train]
max_steps = 900
max_minutes = 2.5
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        default="demo_out",
        help="local folder where the sample input and every output go (default: demo_out)",
    )
    p.add_argument(
        "--config",
        help="TOML or YAML config file (default: the demo's own, DEMO_CONFIG: a shorter "
        "training than the nightly's); flags override it",
    )
    p.add_argument("--force", action="store_true", help="rerun every stage even if a previous demo completed it")


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from jobs import nightly
    from shopllm.sample import SampleConfig, write_sample

    started = time.monotonic()
    out = Path(args.out)
    sample_dir = out / "input"
    cfg = SampleConfig()
    write_sample(sample_dir, cfg)
    date = str(cfg.end_date)
    config = args.config or write_demo_config(out)
    nightly_args = argparse.Namespace(
        catalog=str(sample_dir / "catalog" / "*.jsonl.gz"),
        events=str(sample_dir / "events" / "*.jsonl.gz"),
        out=str(out),
        date=date,
        config=config,
        full_retrain=False,
        force=args.force,
    )
    rc = nightly.run(nightly_args, beam_args)
    if rc:
        raise ShopllmError(f"the nightly run on the sample failed (exit {rc}); see the messages above")
    show(out, date)
    print(f"\ndemo finished in {time.monotonic() - started:.0f} s")
    return 0


def write_demo_config(out: Path) -> str:
    path = out / "demo.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(DEMO_CONFIG)
    return str(path)


def show(out: Path, date: str) -> None:
    import pandas as pd

    from shopllm import schemas, storage

    recs = storage.read_partition(out, schemas.RECOMMENDATIONS, date).to_pandas()
    items = storage.read_partition(out, schemas.CURATED_ITEMS, date).to_pandas()[["item_id", "title"]]
    descs = storage.read_partition(out, schemas.DESCRIPTIONS, date).to_pandas()
    report = out / schemas.REPORTS / f"dt={date}" / "report.html"
    print(f"\nOutputs under {out}/:")
    for ds in schemas.NIGHTLY_DATASETS:
        print(f"  {storage.partition_dir(out, ds, date)}")
    print(f"  report: {report}")
    with pd.option_context("display.width", 160, "display.max_colwidth", 60):
        first_user = recs[recs.scope == "user"].subject_id.iloc[0] if (recs.scope == "user").any() else None
        if first_user is not None:
            top = recs[(recs.scope == "user") & (recs.subject_id == first_user)].head(5).merge(items, on="item_id")
            print(f"\nTop 5 recommendations for user {first_user}:")
            print(top[["rank", "item_id", "title", "score"]].to_string(index=False))
        queries = recs[recs.scope == "query"]
        if len(queries):
            q = queries.subject_id.iloc[0]
            top = queries[queries.subject_id == q].head(5).merge(items, on="item_id")
            print(f"\nTop 5 items for the search {q!r}:")
            print(top[["rank", "item_id", "title", "score"]].to_string(index=False))
        published = descs[~descs.is_fallback]
        print(
            f"\nGenerated descriptions: {len(published):,} of {len(descs):,} items published the model's text "
            f"(the rest got the attribute fallback, is_fallback = true). A few of them:"
        )
        for lang in ("zh", "en"):
            for row in published[published.language == lang].head(2).merge(items, on="item_id").itertuples():
                print(f"- {row.title}\n    {row.description[:200]}")
