"""Prepare throughput: text tokens per second of the prepare pipeline beside a plain encode_batch script.

Input: the embedded sample shop (`shopllm.sample`), ingested with `shopllm ingest` into curated/.
Both sides read the same curated Parquet and encode the same kinds of text (attribute text and
description of every item, the search queries) with the same tokenizer:

- baseline: a plain script, pyarrow read (one `read_table` per dataset) + `TextTokenizer.encode_batch` over
  all the texts at once;
- prepare: the Beam pipeline of `shopllm prepare` with the tokenizer already trained (a second night),
  which also groups events by user, builds the three kinds of example, sorts and writes sized shards.

Both run with the objects that exist before them frozen out of the garbage collector (`gc_frozen`, as
`run_pipeline` does): this process holds Beam's ~130k objects, which a plain script's full collections would
not walk (~65 ms a run here).

ratio = prepare text tokens/s / baseline tokens/s (target >= 0.8). The two sides run alternately
`--repeat` times after the first night and the medians are compared, so a busy shared machine skews both
alike. Also printed: the first night with tokenizer training, output tokens/s (every token written, item
tokens included), Chinese tokens/char.

    python -m benchmarks.prepare_bench [--quick | --size full|big ...] [--repeat N] [--work DIR]

By default it measures the sample x3 (`full`: 6k items, 300k events; a night's step takes ~0.4 s, so Beam's
fixed cost per night, ~0.1 s, weighs heavily) and then x12 (`big`: 24k items, 1.2M events), and reports a
ratio for each. `--work DIR` keeps each size's sample and curated partitions in DIR/<size> for the next run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq

from pipelines.common import gc_frozen
from shopllm import storage
from shopllm.config import PrepareConfig
from shopllm.sample import SampleConfig, write_sample
from shopllm.schemas import CURATED_EVENTS, CURATED_ITEMS, VOCAB_DIR
from shopllm.sequences import attribute_text
from shopllm.tokenizer import TextTokenizer
from shopllm.vocab import TOKENIZER_FILE

SIZES = {  # items, users, event lines
    "quick": SampleConfig(items=400, users=300, events=20_000, days=7),
    "full": SampleConfig(items=6_000, users=3_000, events=300_000, days=30),
    "big": SampleConfig(items=24_000, users=12_000, events=1_200_000, days=30),
}


def make_curated(work: Path, sample: SampleConfig) -> tuple[Path, str]:
    from jobs.cli import main as cli

    raw, out = work / "raw", work / "out"
    if storage.is_published(storage.partition_dir(out, CURATED_EVENTS, sample.end_date)):
        return out, sample.end_date  # made by an earlier run with --work
    write_sample(raw, sample)
    rc = cli(
        [
            "ingest",
            "--catalog",
            str(raw / "catalog" / "*"),
            "--events",
            str(raw / "events" / "*"),
            "--out",
            str(out),
            "--date",
            sample.end_date,
        ]
    )
    if rc:
        raise RuntimeError(f"shopllm ingest failed with exit code {rc}")
    return out, sample.end_date


def baseline(out: Path, date: str, tokenizer_path: Path) -> dict:
    """Plain script: read the curated tables with pyarrow, encode every text in one encode_batch call."""
    t0 = time.perf_counter()
    items = pq.read_table(
        storage.partition_files(out, CURATED_ITEMS, date),
        columns=["title", "description", "category", "brand", "attributes"],
        partitioning=None,
    )
    events = pq.read_table(storage.partition_files(out, CURATED_EVENTS, date), columns=["query"], partitioning=None)
    tokenizer = TextTokenizer.load(tokenizer_path)
    t_read = time.perf_counter()
    cols = [items.column(c).to_pylist() for c in ("title", "category", "brand", "attributes", "description")]
    texts = [attribute_text(t or "", c, b, a or []) for t, c, b, a, _ in zip(*cols)]
    texts += [d for d in cols[4] if d]
    texts += [q for q in events.column("query").to_pylist() if q]
    t_texts = time.perf_counter()
    tokens = sum(len(ids) for ids in tokenizer.encode_batch(texts))
    t_end = time.perf_counter()
    return {
        "texts": len(texts),
        "tokens": tokens,
        "read_s": t_read - t0,
        "encode_s": t_end - t_texts,
        "total_s": t_end - t0,
        "tokens_per_s": tokens / (t_end - t0),
        "encode_only_tokens_per_s": tokens / (t_end - t_texts),
    }


def median_by(runs: list[dict], key) -> dict:
    return sorted(runs, key=key)[len(runs) // 2]


def run_prepare_timed(out: Path, date: str, cfg: PrepareConfig) -> dict:
    from jobs.prepare import run_prepare

    t0 = time.perf_counter()
    summary = run_prepare(out, date, cfg)
    summary["wall_s"] = time.perf_counter() - t0
    return summary


DEFAULT_SIZES = ("full", "big")  # the sample x3, where Beam's fixed cost per night is a large share, and x12
DEFAULT_REPEATS = {"quick": 3, "full": 7, "big": 3}


def measure(size: str, work: Path, repeat: int) -> dict:
    """Both sides on one sample size: the first night (tokenizer training), then `repeat` alternating runs."""
    sample = SIZES[size]
    t0 = time.perf_counter()
    out, date = make_curated(work, sample)
    setup_s = time.perf_counter() - t0
    cfg = PrepareConfig()
    first = run_prepare_timed(out, date, replace(cfg, retrain_tokenizer=True))  # trains the tokenizer
    bases, nights = [], []
    for _ in range(max(1, repeat)):  # later nights: the tokenizer is reused
        with gc_frozen():  # as the pipeline runs (see module docstring)
            bases.append(baseline(out, date, out / VOCAB_DIR / TOKENIZER_FILE))
        nights.append(run_prepare_timed(out, date, cfg))
    base = median_by(bases, lambda b: b["total_s"])
    second = median_by(nights, lambda s: s["seconds"]["pipeline"])
    pipe_s = second["seconds"]["pipeline"]
    text_tps = second["text_tokens"] / pipe_s
    out_tokens = sum(second["tokens"].values())
    return {
        "size": size,
        "sample": {"items": sample.items, "users": sample.users, "events": sample.events},
        "machine": f"{os.cpu_count()}-core CPU",
        "setup_s (sample+ingest)": round(setup_s, 2),
        "curated": "reused from --work" if setup_s < 1 else "written and ingested by this run",
        "baseline": {k: round(v, 4) if isinstance(v, float) else v for k, v in base.items()},
        "prepare": {
            "pipeline_s": pipe_s,
            "stage_s": round(second["wall_s"], 3),
            "first_night_stage_s": round(first["wall_s"], 3),
            "text_tokens": second["text_tokens"],
            "text_tokens_per_s": round(text_tps),
            "output_tokens": out_tokens,
            "output_tokens_per_s": round(out_tokens / pipe_s),
            "rows": second["rows_total"],
        },
        "ratio_vs_baseline": round(text_tps / base["tokens_per_s"], 3),
        "target_ratio": 0.8,
        "repeats": len(nights),
        "all_runs_s": {
            "baseline": [round(b["total_s"], 3) for b in bases],
            "prepare_pipeline": [s["seconds"]["pipeline"] for s in nights],
        },
        "zh_tokens_per_char": second["zh_tokens_per_char"],
        "tokenizer_vocab": second["tokenizer"]["vocab_size"],
    }


def report(r: dict) -> None:
    base, prep, sample = r["baseline"], r["prepare"], r["sample"]
    print(
        f"prepare benchmark ({r['size']}: {sample['items']} items, {sample['users']} users, {sample['events']} "
        f"event lines; {r['machine']}; medians of {r['repeats']} alternating runs)"
    )
    print(f"{'':34s}{'seconds':>10s}{'text tokens':>14s}{'tokens/s':>12s}")
    print(
        f"{'baseline: read + encode_batch':34s}{base['total_s']:>10.2f}"
        f"{base['tokens']:>14,}{base['tokens_per_s']:>12,.0f}"
    )
    print(
        f"{'baseline: encode_batch only':34s}{base['encode_s']:>10.2f}{base['tokens']:>14,}"
        f"{base['encode_only_tokens_per_s']:>12,.0f}"
    )
    print(
        f"{'prepare pipeline (tokenizer reused)':34s}{prep['pipeline_s']:>10.2f}{prep['text_tokens']:>14,}"
        f"{prep['text_tokens_per_s']:>12,.0f}"
    )
    print(f"{'prepare stage, first night (trains)':34s}{prep['first_night_stage_s']:>10.2f}")
    print(
        f"prepare output: {prep['output_tokens']:,} tokens written ({prep['output_tokens_per_s']:,}/s), "
        f"rows {prep['rows']}"
    )
    print(f"all runs (s): baseline {r['all_runs_s']['baseline']}, pipeline {r['all_runs_s']['prepare_pipeline']}")
    print(
        f"ratio prepare/baseline: {r['ratio_vs_baseline']:.3f} (target >= 0.8); "
        f"Chinese tokens/char: {r['zh_tokens_per_char']:.3f}\n"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a small sample (smoke run)")
    p.add_argument(
        "--size",
        choices=sorted(SIZES),
        action="append",
        help="sample size, repeatable (default: full then big, or quick with --quick)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        help=f"alternate baseline and prepare this many times (default per size: {DEFAULT_REPEATS})",
    )
    p.add_argument(
        "--work",
        help="working folder (one sub-folder per size), kept and reused by later runs "
        "(default: a temporary one, removed afterwards)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    logging.getLogger("jobs.prepare").setLevel(logging.ERROR)  # the first night retrains on purpose
    sizes = args.size or (["quick"] if args.quick else list(DEFAULT_SIZES))
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="prepare_bench-"))
    results = {}
    try:
        for size in sizes:
            results[size] = measure(size, work / size, args.repeat or DEFAULT_REPEATS[size])
            report(results[size])
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    Path("bench_out").mkdir(exist_ok=True)
    Path("bench_out/prepare.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
