"""Ingest throughput: the Beam pipeline vs a plain one-process pyarrow script, same files, same run.

Both sides call the same `shopllm.ingest` functions (read chunks, clean + validate, newest version,
duplicate events, sessions) and write the same Parquet; the ratio measures what the pipeline's
chunking, shuffles and runner cost (or win, with workers) over doing it in one process.

    python -m benchmarks.ingest_bench            # 300,000 catalog rows + 1,000,000 events
    python -m benchmarks.ingest_bench --quick    # 20,000 + 60,000

Input: gzipped JSON Lines written by `shopllm.sample` when it exists, else by the synthetic writer
below (bilingual titles, HTML descriptions with entities and PII, ~1% dirty records). It is cached
under bench_out/ingest_input/ by size.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from pipelines.common import gc_frozen
from shopllm import ingest, schemas, storage
from shopllm.config import IngestConfig

OUT = Path("bench_out")

# ---- synthetic input ----------------------------------------------------------------------------

CATEGORIES = [
    ("数码", "耳机"),
    ("数码", "手机壳"),
    ("Electronics", "Headphones"),
    ("Home", "Kitchen"),
    ("家居", "厨具"),
    ("服饰", "T恤"),
    ("Apparel", "Shoes"),
    ("美妆", "口红"),
    ("Sports", "Yoga"),
    ("食品", "咖啡"),
    ("Books", "Fiction"),
    ("母婴", "奶瓶"),
]
BRANDS = [
    "Sony",
    "Anker",
    "小米",
    "华为",
    "Nike",
    "Uniqlo",
    "无印良品",
    "Philips",
    "Lego",
    "三只松鼠",
    "Apple",
    "Decathlon",
]
EN_WORDS = [
    "wireless",
    "portable",
    "premium",
    "lightweight",
    "waterproof",
    "classic",
    "smart",
    "compact",
    "organic",
    "soft",
]
ZH_WORDS = ["无线", "便携", "高端", "轻薄", "防水", "经典", "智能", "小巧", "有机", "柔软"]
PRODUCTS_EN = [
    "earbuds",
    "case",
    "headphones",
    "pan",
    "t-shirt",
    "sneakers",
    "lipstick",
    "yoga mat",
    "coffee beans",
    "novel",
]
PRODUCTS_ZH = ["耳机", "手机壳", "头戴耳机", "炒锅", "T恤", "跑鞋", "口红", "瑜伽垫", "咖啡豆", "小说"]
TYPES = ["view"] * 60 + ["click"] * 20 + ["add_to_cart"] * 8 + ["purchase"] * 4 + ["search"] * 8


def _catalog_record(rng: random.Random, i: int) -> dict:
    c = rng.randrange(len(CATEGORIES))
    zh = rng.random() < 0.5
    words = ZH_WORDS if zh else EN_WORDS
    product = (PRODUCTS_ZH if zh else PRODUCTS_EN)[c % 10]
    brand = rng.choice(BRANDS)
    title = f"{brand} {rng.choice(words)}{'' if zh else ' '}{product} {rng.randint(1, 99)}"
    paras = "".join(f"<p>{' '.join(rng.choices(words, k=12))} &amp; {product}</p>" for _ in range(rng.randint(1, 3)))
    bullets = "".join(f"<li>{rng.choice(words)} {rng.randint(1, 500)}g</li>" for _ in range(rng.randint(2, 4)))
    contact = (
        " 客服电话 400-820-8820" if rng.random() < 0.05 else (" mail sales@example.com" if rng.random() < 0.05 else "")
    )
    return {
        "item_id": f"item{i:07d}",
        "title": title,
        "description": f"{paras}<ul>{bullets}</ul>{contact}",
        "category": " > ".join(CATEGORIES[c]) if rng.random() < 0.8 else "/".join(CATEGORIES[c]),
        "brand": brand,
        "price": round(rng.uniform(5, 3000), 2),
        "currency": "CNY",
        "attributes": {"color": rng.choice(["red", "黑色", "white"]), "size": rng.choice(["S", "M", "L", "均码"])},
        "updated_at": f"2024-05-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00+08:00",
    }


def _dirty(rng: random.Random, record: dict, source: str) -> str | bytes:
    kind = rng.randrange(5)
    if kind == 0:
        return b'{"item_id": "bad\xff"}'  # invalid UTF-8
    if kind == 1:
        return "{not json"
    if kind == 2:
        return json.dumps({k: v for k, v in record.items() if k not in ("item_id", "user_id")}, ensure_ascii=False)
    if kind == 3 and source == "catalog":
        return json.dumps({**record, "price": -1}, ensure_ascii=False)
    return json.dumps({**record, ("updated_at" if source == "catalog" else "ts"): "yesterday"}, ensure_ascii=False)


def _write_lines(path: Path, lines) -> None:
    with gzip.open(path, "wb", compresslevel=1) as f:
        for line in lines:
            f.write((line if isinstance(line, bytes) else line.encode("utf-8")) + b"\n")


def write_synthetic(folder: Path, n_catalog: int, n_events: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    (folder / "catalog").mkdir(parents=True)
    (folder / "events").mkdir(parents=True)
    n_items = int(n_catalog * 0.9)  # ~10% of rows are older versions of an item

    def catalog_lines(lo, hi):
        for i in range(lo, hi):
            record = _catalog_record(rng, i if i < n_items else rng.randrange(n_items))
            yield _dirty(rng, record, "catalog") if rng.random() < 0.01 else json.dumps(record, ensure_ascii=False)

    def event_lines(lo, hi):
        n_users = max(n_events // 50, 10)
        previous = None
        for i in range(lo, hi):
            if previous is not None and rng.random() < 0.01:  # the same event sent twice
                yield previous
                continue
            user = rng.randrange(n_users)
            etype = rng.choice(TYPES)
            ts = 1714521600 + (user * 7919 + i * 3) % (30 * 86400)
            record = {
                "event_id": f"ev{i}",
                "user_id": f"u{user}",
                "event_type": etype,
                "ts": ts * 1000 if i % 2 else "2024-05-01T00:00:00Z" if i % 1000 == 0 else ts,
            }
            if rng.random() < 0.7:
                record["session_id"] = f"s{user}-{ts // 3600}"
            if etype == "search":
                record["query"] = f"{rng.choice(EN_WORDS + ZH_WORDS)} {rng.choice(PRODUCTS_EN + PRODUCTS_ZH)}"
            else:  # a few events name items that are not in the catalog
                record["item_id"] = f"item{rng.randrange(n_items + n_items // 200):07d}"
            previous = _dirty(rng, record, "events") if rng.random() < 0.01 else json.dumps(record, ensure_ascii=False)
            yield previous

    for part, (lo, hi) in enumerate(_splits(n_catalog, 4)):
        _write_lines(folder / "catalog" / f"catalog-{part}.jsonl.gz", catalog_lines(lo, hi))
    for part, (lo, hi) in enumerate(_splits(n_events, 8)):
        _write_lines(folder / "events" / f"events-{part}.jsonl.gz", event_lines(lo, hi))


def _splits(n: int, parts: int):
    step = -(-n // parts)
    return [(lo, min(lo + step, n)) for lo in range(0, n, step)]


SAMPLE_MAX_ROWS = 500_000  # shopllm.sample takes many minutes beyond this; the synthetic writer is linear


def _write_sample(folder: Path, n_catalog: int, n_events: int) -> bool:
    """The embedded sample shop at this size; False when it is missing or fails (then we write our own)."""
    try:
        from shopllm import sample

        sample.write_sample(
            folder, sample.SampleConfig(items=n_catalog, users=max(n_events // 100, 10), events=n_events)
        )
        return True
    except Exception as e:
        print(f"shopllm.sample unavailable ({type(e).__name__}: {e}); using the synthetic writer")
        shutil.rmtree(folder, ignore_errors=True)
        return False


def prepare_input(n_catalog: int, n_events: int, generator: str = "auto") -> tuple[str, str, str]:
    """(catalog glob, events glob, generator name), writing the input once per size and generator."""
    if generator == "auto":
        generator = "sample" if n_catalog + n_events <= SAMPLE_MAX_ROWS else "synthetic"
    folder = OUT / "ingest_input" / f"{generator}-{n_catalog}-{n_events}"
    if not (folder / "done").exists():
        shutil.rmtree(folder, ignore_errors=True)
        if generator == "sample" and _write_sample(folder, n_catalog, n_events):
            used = "shopllm.sample"
        else:
            write_synthetic(folder, n_catalog, n_events)
            used = "synthetic"
        (folder / "done").write_text(used)
    return str(folder / "catalog" / "*"), str(folder / "events" / "*"), (folder / "done").read_text()


# ---- the two ways of running it ---------------------------------------------------------------


def run_baseline(catalog_files: list[str], event_files: list[str], out: Path, cfg: IngestConfig) -> dict:
    """The plain script: every file in one process, whole tables, the same shopllm.ingest functions."""
    items, rejects_c = [], []
    read_c = read_e = 0
    for index, path in enumerate(catalog_files):
        for chunk in ingest.read_chunks(ingest.CATALOG, path, index, cfg.batch_rows):
            kept, rejected = ingest.clean_catalog_chunk(chunk, cfg)
            items.append(kept)
            rejects_c.append(rejected)
            read_c += len(chunk)
    items, superseded = ingest.keep_newest_versions(ingest.concat(items, ingest.ITEMS_WITH_ARRIVAL))
    known = items["item_id"].combine_chunks()
    events, rejects_e = [], []
    for index, path in enumerate(event_files):
        for chunk in ingest.read_chunks(ingest.EVENTS, path, index, cfg.batch_rows):
            kept, rejected = ingest.clean_events_chunk(chunk, known)
            events.append(kept)
            rejects_e.append(rejected)
            read_e += len(chunk)
    events, duplicates = ingest.drop_duplicate_events(ingest.concat(events, schemas.EVENTS))
    events = ingest.assign_sessions(events, cfg.session_gap_minutes)
    sessions = ingest.sessions_of(events)
    out.mkdir(parents=True, exist_ok=True)
    for name, table in [
        ("items", items),
        ("events", events),
        ("sessions", sessions),
        ("rejects_catalog", ingest.sort_rejects(ingest.concat(rejects_c, schemas.REJECTS))),
        ("rejects_events", ingest.sort_rejects(ingest.concat(rejects_e, schemas.REJECTS))),
    ]:
        storage.write_table(table, out, f"{name}.parquet")
    return {
        "catalog_read": read_c,
        "events_read": read_e,
        "items": items.num_rows,
        "events": events.num_rows,
        "sessions": sessions.num_rows,
        "superseded": superseded,
        "duplicates": duplicates,
    }


def run_beam(
    catalog_files: list[str], event_files: list[str], out: Path, cfg: IngestConfig, beam_args: list[str]
) -> dict:
    from jobs.ingest import run_ingest

    summary = run_ingest(catalog_files, event_files, str(out), "2024-06-01", cfg, beam_args)
    return {
        "catalog_read": summary["catalog"]["read"],
        "events_read": summary["events"]["read"],
        "items": summary["catalog"]["kept"],
        "events": summary["events"]["kept"],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="20,000 catalog rows + 60,000 events")
    p.add_argument("--catalog-rows", type=int)
    p.add_argument("--event-rows", type=int)
    p.add_argument(
        "--generator",
        choices=("auto", "sample", "synthetic"),
        default="auto",
        help=f"input writer; auto = shopllm.sample up to {SAMPLE_MAX_ROWS:,} rows, else synthetic",
    )
    p.add_argument("--workers", type=int, default=2, help="direct_num_workers for the multi-process pipeline run")
    args = p.parse_args(argv)
    n_catalog = args.catalog_rows or (20_000 if args.quick else 300_000)
    n_events = args.event_rows or (60_000 if args.quick else 1_000_000)
    from apache_beam.io.filesystems import FileSystems

    t = time.perf_counter()
    catalog_glob, events_glob, generator = prepare_input(n_catalog, n_events, args.generator)
    catalog_files = sorted(m.path for m in FileSystems.match([catalog_glob])[0].metadata_list)
    event_files = sorted(m.path for m in FileSystems.match([events_glob])[0].metadata_list)
    print(
        f"input: {n_catalog:,} catalog rows + {n_events:,} events ({generator}, gzipped JSONL), ready in "
        f"{time.perf_counter() - t:.0f} s; {os.cpu_count()} CPUs"
    )
    cfg = IngestConfig()
    runs = [
        ("baseline: one-process pyarrow script", None),
        ("beam: in-process runner", []),
        (
            f"beam: {args.workers} worker processes",
            [f"--direct_num_workers={args.workers}", "--direct_running_mode=multi_processing"],
        ),
    ]
    results = []
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        for i, (name, beam_args) in enumerate(runs):
            out = Path(tmp) / f"run{i}"
            t = time.perf_counter()
            if beam_args is None:
                with gc_frozen():  # as run_pipeline runs the Beam runs
                    counts = run_baseline(catalog_files, event_files, out, cfg)
            else:
                counts = run_beam(catalog_files, event_files, out, cfg, beam_args)
            seconds = time.perf_counter() - t
            rows = counts["catalog_read"] + counts["events_read"]
            results.append(
                {
                    "name": name,
                    "seconds": round(seconds, 2),
                    "rows": rows,
                    "rows_per_s": round(rows / seconds),
                    "items": counts["items"],
                    "events": counts["events"],
                }
            )
    base = results[0]["rows_per_s"]
    print(f"{'run':<40} {'rows':>10} {'seconds':>8} {'rows/s':>9} {'vs baseline':>11}")
    for r in results:
        r["ratio"] = round(r["rows_per_s"] / base, 3)
        print(f"{r['name']:<40} {r['rows']:>10,} {r['seconds']:>8.1f} {r['rows_per_s']:>9,} {r['ratio']:>10.2f}x")
    if len({(r["items"], r["events"]) for r in results}) != 1:
        print("WARNING: the runs kept different row counts:", [(r["items"], r["events"]) for r in results])
    OUT.mkdir(exist_ok=True)
    report = {
        "catalog_rows": n_catalog,
        "event_rows": n_events,
        "generator": generator,
        "cpus": os.cpu_count(),
        "runs": results,
        "ratio_in_process": results[1]["ratio"],
        "ratio_workers": results[2]["ratio"],
    }
    (OUT / "ingest.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
