"""The prepare stage: curated/ -> tokenizer + item vocabulary -> tokens/{train,valid,test}/dt=D.

Driver side (one process): train or load the tokenizer, extend the append-only item vocabulary, run the
Beam pipeline, publish the three partitions, write the summary. Workers get the tokenizer and the item
vocabulary as file paths and load them once in `setup()`, so on a distributed runner `--out` must be a
filesystem every worker sees.

    curated/events --KeyEventsByUser--GroupByUser--BuildUserExamples--> history rows
                                                             \\--> search pairs --BatchSearches--TokenizeSearches
    curated/items  --DescribeItems--> describe rows
    all rows --WriteShards: SortBuckets -> AssignShards -> GroupShards -> WriteShard--> part-NNNNN.parquet
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Sequence

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.parquetio import ReadAllFromParquetBatched
from apache_beam.metrics import Metrics

from shopllm import examples, storage
from shopllm.errors import ShopllmError
from shopllm.examples import Event, SearchPair
from shopllm.schemas import (CURATED_EVENTS, CURATED_ITEMS, CURATED_SESSIONS, EXAMPLE_KINDS, MODELS_DIR, SPLITS,
                             TOKENS, TOKENS_SCHEMA, VOCAB_DIR)
from shopllm.tokenizer import TextTokenizer
from shopllm.vocab import TOKENIZER_FILE, ItemVocab
from pipelines.common import counter_values, make_pipeline, run_pipeline

log = logging.getLogger(__name__)

NAMESPACE = "prepare"
BUCKETS = 64  # sort buckets per split: the unit of parallel sorting before rows are cut into shards


def counter(name: str):
    return Metrics.counter(NAMESPACE, name)


def keyed_by_bucket(rows: Sequence[tuple]):
    """((split, bucket), [packed rows]) per bucket, so the shuffle moves few large elements."""
    groups: dict[tuple[str, int], list[tuple]] = {}
    for row in rows:
        key = (row[0], examples.stable_bucket(f"{row[1]}\x00{row[2]}", BUCKETS))
        groups.setdefault(key, []).append(row)
    return list(groups.items())


# ---- building examples ---------------------------------------------------------------------------

class KeyEventsByUser(beam.DoFn):
    def process(self, table):
        yield from examples.events_by_user(table).items()


class BuildUserExamples(beam.DoFn):
    """History rows (main output) and search pairs (tagged 'search') of one user."""

    def __init__(self, vocab_dir: str, n_text: int, cfg):
        self.vocab_dir, self.n_text, self.cfg = vocab_dir, n_text, cfg

    def setup(self):
        self.item_index = ItemVocab.load(self.vocab_dir).index
        self.users = counter("users")
        self.short_users = counter("short_users")
        self.unknown = counter("unknown_item_events")
        self.no_target = counter("searches_without_target")
        self.withheld = counter("search_pairs_withheld")

    def process(self, element):
        user_id, batches = element
        events = [Event(*e) for batch in batches for e in batch]
        res = examples.build_user_examples(user_id, events, self.item_index, self.n_text, self.cfg)
        self.users.inc()
        self.short_users.inc(int(res.short))
        self.unknown.inc(res.unknown_item_events)
        self.no_target.inc(res.searches_without_target)
        self.withheld.inc(res.searches_withheld)
        yield from keyed_by_bucket([examples.pack(ex) for ex in res.history])
        for pair in res.searches:
            yield beam.pvalue.TaggedOutput("search", tuple(pair))


class TokenizeSearches(beam.DoFn):
    """Encodes a batch of queries in one encode_batch call; the tokenizer is loaded once per worker."""

    def __init__(self, tokenizer_path: str):
        self.tokenizer_path = tokenizer_path

    def setup(self):
        self.tokenizer = TextTokenizer.load(self.tokenizer_path)
        self.text_tokens = counter("text_tokens")

    def process(self, batch):
        rows, n_tokens = examples.search_batch([SearchPair(*p) for p in batch], self.tokenizer)
        self.text_tokens.inc(n_tokens)
        yield from keyed_by_bucket([examples.pack(ex) for ex in rows])


class DescribeItems(beam.DoFn):
    """Describe rows of a curated/items Arrow batch (attribute text + description in one encode_batch)."""

    def __init__(self, tokenizer_path: str, vocab_dir: str, n_text: int, cfg):
        self.tokenizer_path, self.vocab_dir, self.n_text, self.cfg = tokenizer_path, vocab_dir, n_text, cfg

    def setup(self):
        self.tokenizer = TextTokenizer.load(self.tokenizer_path)
        self.item_index = ItemVocab.load(self.vocab_dir).index
        self.text_tokens = counter("text_tokens")
        self.no_desc = counter("items_without_description")
        self.unknown = counter("unknown_items")

    def process(self, table):
        res = examples.describe_batch(table, self.tokenizer, self.item_index, self.n_text, self.cfg)
        self.text_tokens.inc(res.text_tokens)
        self.no_desc.inc(res.without_description)
        self.unknown.inc(res.unknown_items)
        yield from keyed_by_bucket([examples.pack(ex) for ex in res.examples])


class BuildExamples(beam.PTransform):
    """(items Arrow batches, events Arrow batches) -> ((split, bucket), [packed rows]) of all three kinds."""

    def __init__(self, tokenizer_path: str, vocab_dir: str, n_text: int, cfg):
        super().__init__()
        self.tokenizer_path, self.vocab_dir, self.n_text, self.cfg = str(tokenizer_path), str(vocab_dir), n_text, cfg

    def expand(self, inputs):
        items, events = inputs
        per_user = (events
                    | "KeyEventsByUser" >> beam.ParDo(KeyEventsByUser())
                    | "GroupByUser" >> beam.GroupByKey()
                    | "BuildUserExamples" >> beam.ParDo(
                        BuildUserExamples(self.vocab_dir, self.n_text, self.cfg)).with_outputs("search", main="history"))
        search = (per_user.search
                  | "BatchSearches" >> beam.BatchElements(min_batch_size=256, max_batch_size=8192)
                  | "TokenizeSearches" >> beam.ParDo(TokenizeSearches(self.tokenizer_path)))
        describe = items | "DescribeItems" >> beam.ParDo(
            DescribeItems(self.tokenizer_path, self.vocab_dir, self.n_text, self.cfg))
        return (per_user.history, search, describe) | "AllExamples" >> beam.Flatten()


# ---- writing deterministic, sized shards ---------------------------------------------------------

def sort_bucket(element):
    key, chunks = element
    return key, sorted((row for chunk in chunks for row in chunk), key=examples.sort_key)


def shard_slices(element, bucket_sizes, shard_rows: int):
    """Cut a sorted bucket at the shard boundaries of its split: ((split, shard), (first row index, rows)).

    Rows of a split are numbered bucket by bucket (bucket 0 first), so every shard but the last of a split
    holds exactly `shard_rows` rows and the order does not depend on how the runner scheduled anything.
    """
    (split, bucket), rows = element
    start = sum(n for (s, b), n in bucket_sizes if s == split and b < bucket)
    i = 0
    while i < len(rows):
        g = start + i
        shard = g // shard_rows
        take = min(len(rows) - i, (shard + 1) * shard_rows - g)
        yield (split, shard), (g, rows[i:i + take])
        i += take


class WriteShard(beam.DoFn):
    def __init__(self, staging: dict[str, str]):
        self.staging = staging

    def process(self, element):
        (split, shard), slices = element
        rows = [row for _, part in sorted(slices, key=lambda s: s[0]) for row in part]
        storage.write_table(examples.rows_to_table(rows), Path(self.staging[split]), f"part-{shard:05d}.parquet")
        counter(f"tokens_{split}").inc(examples.count_tokens(rows))
        kinds: dict[str, int] = {}
        for row in rows:
            kinds[row[1]] = kinds.get(row[1], 0) + 1
        for kind, n in kinds.items():
            counter(f"rows_{split}_{kind}").inc(n)
        counter(f"shards_{split}").inc()
        yield split, shard, len(rows)


class WriteShards(beam.PTransform):
    """((split, bucket), [packed rows]) -> staging[split]/part-NNNNN.parquet, at most shard_rows rows each."""

    def __init__(self, staging: dict[str, str], shard_rows: int):
        super().__init__()
        self.staging, self.shard_rows = {k: str(v) for k, v in staging.items()}, shard_rows

    def expand(self, rows):
        buckets = rows | "GroupBuckets" >> beam.GroupByKey() | "SortBuckets" >> beam.Map(sort_bucket)
        sizes = buckets | "BucketSizes" >> beam.Map(lambda kv: (kv[0], len(kv[1])))
        return (buckets
                | "AssignShards" >> beam.FlatMap(shard_slices, beam.pvalue.AsList(sizes), self.shard_rows)
                | "GroupShards" >> beam.GroupByKey()
                | "WriteShard" >> beam.ParDo(WriteShard(self.staging)))


# ---- the stage -----------------------------------------------------------------------------------

def curated_files(out, date: str) -> dict[str, list[str]]:
    """The Parquet files of the three curated partitions; ShopllmError naming a missing one."""
    files = {}
    for dataset in (CURATED_ITEMS, CURATED_EVENTS, CURATED_SESSIONS):
        try:
            files[dataset] = storage.partition_files(out, dataset, date)
        except FileNotFoundError:
            path = storage.partition_dir(out, dataset, date)
            raise ShopllmError(f"{path} is missing or not published (no {storage.SUCCESS}); "
                               f"run `shopllm ingest --out {out} --date {date}` first") from None
    return files


def read_columns(files: Sequence[str], columns: Sequence[str]) -> pa.Table | None:
    tables = [pq.read_table(f, columns=list(columns)) for f in files]
    return pa.concat_tables(tables) if tables else None


def ensure_tokenizer(out, item_files, event_files, cfg) -> tuple[TextTokenizer, bool]:
    """Load vocab/tokenizer.json, or train and save it when there is none or a retrain is asked for."""
    path = Path(out) / VOCAB_DIR / TOKENIZER_FILE
    if path.exists() and not cfg.retrain_tokenizer:
        return TextTokenizer.load(path), False
    if path.exists() or any((Path(out) / MODELS_DIR).glob("*/")):
        log.warning("retraining the tokenizer: text token ids change, so models trained before today "
                    "cannot be warm-started on these tokens (train from scratch)")
    items = read_columns(item_files, ["title", "description", "category", "brand", "attributes"])
    events = read_columns(event_files, ["query"])
    texts = examples.tokenizer_texts(items, events.column("query").to_pylist() if events is not None else [])
    if not texts:
        raise ShopllmError("no curated text to train the tokenizer on (curated/items and queries are empty)")
    t0 = time.perf_counter()
    tokenizer = TextTokenizer.train(texts, vocab_size=cfg.vocab_size)
    tokenizer.save(path)
    log.info("trained tokenizer: %d text tokens from %d texts in %.1fs -> %s",
             tokenizer.n_text, len(texts), time.perf_counter() - t0, path)
    return tokenizer, True


def staging_dirs(out, date: str) -> dict[str, Path]:
    return {split: storage.staging_dir(out, f"{TOKENS}/{split}", date) for split in SPLITS}


def publish_splits(out, date: str, staging: dict[str, Path]) -> None:
    for split, folder in staging.items():
        if not any(folder.glob("*.parquet")):  # an empty split is still a readable, typed partition
            storage.write_table(TOKENS_SCHEMA.empty_table(), folder)
        storage.publish(folder, out, f"{TOKENS}/{split}", date)


def build_pipeline(p, files, tokenizer_path, vocab_dir, n_text, cfg, staging):
    read = lambda name, dataset, cols: (  # noqa: E731
        p | f"{name}Files" >> beam.Create(files[dataset]) | f"Read{name}" >> ReadAllFromParquetBatched(columns=cols))
    items = read("Items", CURATED_ITEMS, examples.ITEM_COLUMNS)
    events = read("Events", CURATED_EVENTS, examples.EVENT_COLUMNS)
    return ((items, events)
            | "BuildExamples" >> BuildExamples(tokenizer_path, vocab_dir, n_text, cfg)
            | "WriteShards" >> WriteShards(staging, cfg.shard_rows))


def run_prepare(out, date: str, cfg, beam_args: Sequence[str] = ()) -> dict:
    """The whole stage; returns the summary also written to summaries/dt=D/prepare.json."""
    t0 = time.perf_counter()
    examples.check_config(cfg)
    try:
        storage.check_writable(out)
    except storage.OutputError as e:
        raise ShopllmError(str(e)) from None
    files = curated_files(out, date)
    vocab_dir = Path(out) / VOCAB_DIR

    tokenizer, trained = ensure_tokenizer(out, files[CURATED_ITEMS], files[CURATED_EVENTS], cfg)
    items = read_columns(files[CURATED_ITEMS], ["item_id", "language", "title", "description"])
    vocab = ItemVocab.load_or_empty(vocab_dir)
    added = vocab.extend(i for i in (items.column("item_id").to_pylist() if items is not None else []) if i)
    vocab.save(vocab_dir)
    zh_tpc = tokenizer.tokens_per_char(examples.chinese_texts(items)) if items is not None else 0.0

    staging = staging_dirs(out, date)
    t_pipe = time.perf_counter()
    try:
        p = make_pipeline(beam_args)
        build_pipeline(p, files, vocab_dir / TOKENIZER_FILE, vocab_dir, tokenizer.n_text, cfg, staging)
        result = run_pipeline(p)
        pipeline_seconds = time.perf_counter() - t_pipe
        publish_splits(out, date, staging)
    except BaseException:
        for folder in staging.values():
            shutil.rmtree(folder, ignore_errors=True)
        raise
    counts = counter_values(result, NAMESPACE)
    summary = make_summary(date, counts, tokenizer, trained, zh_tpc, vocab, added)
    summary["seconds"] = {"total": round(time.perf_counter() - t0, 3), "pipeline": round(pipeline_seconds, 3)}
    storage.write_json(storage.summary_path(out, date, "prepare"), summary)
    return summary


def make_summary(date, counts: dict[str, int], tokenizer, trained, zh_tpc, vocab, added) -> dict:
    rows = {s: {k: counts.get(f"rows_{s}_{k}", 0) for k in EXAMPLE_KINDS} for s in SPLITS}
    return {
        "stage": "prepare",
        "date": date,
        "rows": rows,
        "rows_total": {s: sum(rows[s].values()) for s in SPLITS},
        "tokens": {s: counts.get(f"tokens_{s}", 0) for s in SPLITS},
        "shards": {s: max(1, counts.get(f"shards_{s}", 0)) for s in SPLITS},
        "text_tokens_encoded": counts.get("text_tokens", 0),
        "users": counts.get("users", 0),
        "short_users": counts.get("short_users", 0),
        "left_out": {
            "unknown_item_events": counts.get("unknown_item_events", 0),
            "unknown_items": counts.get("unknown_items", 0),
            "searches_without_target": counts.get("searches_without_target", 0),
            "search_pairs_withheld": counts.get("search_pairs_withheld", 0),
            "items_without_description": counts.get("items_without_description", 0),
        },
        "tokenizer": {"vocab_size": tokenizer.n_text, "trained": trained},
        "zh_tokens_per_char": round(zh_tpc, 4),
        "item_vocab": {"size": len(vocab), "added": added},
    }


def format_summary(s: dict) -> str:
    lines = [f"prepare {s['date']}: tokenizer {s['tokenizer']['vocab_size']} text tokens "
             f"({'trained now' if s['tokenizer']['trained'] else 'reused'}), "
             f"Chinese {s['zh_tokens_per_char']:.3f} tokens/char; "
             f"item vocab {s['item_vocab']['size']} (+{s['item_vocab']['added']} today)"]
    for split in SPLITS:
        r = s["rows"][split]
        lines.append(f"  {split:5s} {s['rows_total'][split]:>9,} rows ({', '.join(f'{k} {r[k]:,}' for k in EXAMPLE_KINDS)}), "
                     f"{s['tokens'][split]:,} tokens, {s['shards'][split]} shard(s)")
    lo = s["left_out"]
    lines.append(f"  users {s['users']:,} (short, train only: {s['short_users']:,}); left out: "
                 + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in lo.items()))
    return "\n".join(lines)
