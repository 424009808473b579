"""shopllm prepare: tokenizer, item vocabulary and tokens/{train,valid,test}/dt=D from curated/.

The driver's part of the stage (one process): check the curated partitions, train or load the tokenizer,
add the slot tokens, extend the append-only item vocabulary, run `pipelines.prepare.Prepare`, publish the
three splits together and write the summary. Workers get the tokenizer and the item vocabulary as paths or
URIs under --out (never a driver-local copy) and load them once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

import pyarrow.parquet as pq

from jobs.cli import add_common
from shopllm import config, storage, training_rows
from shopllm.errors import ShopllmError
from shopllm.schemas import (
    CURATED_EVENTS,
    CURATED_ITEMS,
    CURATED_SESSIONS,
    EXAMPLE_KINDS,
    MODELS_DIR,
    SPLITS,
    TOKENS,
    TOKENS_SCHEMA,
    VOCAB_DIR,
)
from shopllm.slots import SlotVocab, add_slot_tokens, slot_keys
from shopllm.tokenizer import TextTokenizer
from shopllm.vocab import TOKENIZER_FILE, ItemVocab

log = logging.getLogger(__name__)


def add_arguments(p):
    add_common(p)
    p.add_argument(
        "--retrain-tokenizer",
        action="store_true",
        default=None,
        help="train a new tokenizer even if vocab/tokenizer.json exists (older models' text ids become invalid)",
    )


def run(args, beam_args) -> int:
    cfg = config.replace(config.load(args.config).prepare, retrain_tokenizer=args.retrain_tokenizer)
    print(format_summary(run_prepare(args.out, args.date, cfg, beam_args)))
    return 0


def curated_files(out: str, date: str) -> dict[str, list[str]]:
    """The Parquet files of the three curated partitions; ShopllmError naming a missing one."""
    files = {}
    for dataset in (CURATED_ITEMS, CURATED_EVENTS, CURATED_SESSIONS):
        try:
            files[dataset] = storage.partition_files(out, dataset, date)
        except FileNotFoundError:
            path = storage.partition_dir(out, dataset, date)
            raise ShopllmError(
                f"{path} is missing or not published (no {storage.SUCCESS}); "
                f"run `shopllm ingest --out {out} --date {date}` first"
            ) from None
    for dataset in (CURATED_ITEMS, CURATED_EVENTS):  # the ones prepare reads
        check_same_schema(files[dataset])
    return files


def check_same_schema(files: Sequence[str]) -> None:
    """ShopllmError naming the first file whose columns differ from the first file's: the files of a dataset
    are read in one call, which takes the first file's schema and would fill a missing column with nulls."""
    if not files:
        return
    first = read_schema(files[0])
    for f in files[1:]:
        schema = read_schema(f)
        if not schema.equals(first):
            differ = sorted(set(map(str, schema)) ^ set(map(str, first)))
            raise ShopllmError(
                f"{f} does not have the columns of {files[0]} (differing: {', '.join(differ)}); "
                "rerun `shopllm ingest` for this date"
            )


def read_schema(uri: str):
    """The Arrow schema of one Parquet file (a local path or a URI)."""
    with storage.open_input(uri) as f:
        return pq.read_schema(f)


def tokenizer_path(out: str) -> str:
    return storage.join(out, VOCAB_DIR, TOKENIZER_FILE)


def has_models(out: str) -> bool:
    """Whether any model version folder exists under models/ (models/LATEST is a file, not a version)."""
    root = storage.join(out, MODELS_DIR)
    return any(storage.is_dir(storage.join(root, n)) for n in storage.list_names(root))


def ensure_tokenizer(out: str, item_files, event_files, cfg) -> tuple[TextTokenizer, bool]:
    """Load vocab/tokenizer.json, or train and save it when there is none or a retrain is asked for."""
    path = tokenizer_path(out)
    exists = storage.exists(path)
    if exists and not cfg.retrain_tokenizer:
        return TextTokenizer.load(path), False
    if exists or has_models(out):
        log.warning(
            "retraining the tokenizer: text token ids change, so models trained before today "
            "cannot be warm-started on these tokens (train from scratch)"
        )
    items = storage.read_columns(item_files, ["title", "description", "category", "brand", "attributes"])
    events = storage.read_columns(event_files, ["query"])
    texts = training_rows.tokenizer_texts(items, events.column("query").to_pylist() if events is not None else [])
    if not texts:
        raise ShopllmError("no curated text to train the tokenizer on (curated/items and queries are empty)")
    t0 = time.perf_counter()
    tokenizer = TextTokenizer.train(texts, vocab_size=cfg.vocab_size)
    tokenizer.save(path)
    log.info(
        "trained tokenizer: %d text tokens from %d texts in %.1fs -> %s",
        tokenizer.n_text,
        len(texts),
        time.perf_counter() - t0,
        path,
    )
    return tokenizer, True


def ensure_slots(out: str, tokenizer: TextTokenizer, item_files, cfg) -> int:
    """Append slot tokens for the catalog's common attribute keys (and brand, category) to the tokenizer and
    save it; returns how many were added (0 with prepare.describe_slots off)."""
    if not cfg.describe_slots:
        return 0
    items = storage.read_columns(item_files, ["attributes"])
    added = add_slot_tokens(tokenizer, slot_keys(items.column("attributes").to_pylist() if items is not None else []))
    if added:
        tokenizer.save(tokenizer_path(out))
        log.info("tokenizer: %d slot tokens added (%d text tokens now)", added, tokenizer.n_text)
    return added


def run_prepare(out: str, date: str, cfg, beam_args: Sequence[str] = ()) -> dict:
    """The whole stage; returns the summary also written to summaries/dt=D/prepare.json."""
    from pipelines import prepare as prepare_pipeline
    from pipelines.common import counter_values, make_pipeline, run_stage_pipeline

    t0 = time.perf_counter()
    out = os.fspath(out)
    try:
        storage.check_writable(out)
    except storage.OutputError as e:
        raise ShopllmError(str(e)) from None
    files = curated_files(out, date)
    vocab_dir = storage.join(out, VOCAB_DIR)

    tokenizer, trained = ensure_tokenizer(out, files[CURATED_ITEMS], files[CURATED_EVENTS], cfg)
    slots_added = ensure_slots(out, tokenizer, files[CURATED_ITEMS], cfg)
    items = storage.read_columns(files[CURATED_ITEMS], ["item_id"])
    vocab = ItemVocab.load_or_empty(vocab_dir)
    added = vocab.extend(i for i in (items.column("item_id").to_pylist() if items is not None else []) if i)
    vocab.save(vocab_dir)

    t_pipe = time.perf_counter()
    with storage.publishing_together(out, date, {f"{TOKENS}/{split}": TOKENS_SCHEMA for split in SPLITS}) as folders:
        staging = {split: folders[f"{TOKENS}/{split}"] for split in SPLITS}
        p = make_pipeline(beam_args)
        _ = p | "Prepare" >> prepare_pipeline.Prepare(
            files, tokenizer_path(out), vocab_dir, tokenizer.n_text, cfg, staging
        )
        result = run_stage_pipeline(p, "prepare")
        pipeline_seconds = time.perf_counter() - t_pipe
    counts = counter_values(result, prepare_pipeline.NAMESPACE)
    summary = make_summary(date, counts, tokenizer, trained, vocab, added)
    summary["tokenizer"]["slot_tokens"] = len(SlotVocab.of(tokenizer).by_name)
    summary["tokenizer"]["slot_tokens_added"] = slots_added
    summary["seconds"] = {"total": round(time.perf_counter() - t0, 3), "pipeline": round(pipeline_seconds, 3)}
    storage.write_json(storage.summary_path(out, date, "prepare"), summary)
    return summary


def make_summary(date, counts: dict[str, int], tokenizer, trained, vocab, added) -> dict:
    rows = {s: {k: counts.get(f"rows_{s}_{k}", 0) for k in EXAMPLE_KINDS} for s in SPLITS}
    return {
        "stage": "prepare",
        "date": date,
        "rows": rows,
        "rows_total": {s: sum(rows[s].values()) for s in SPLITS},
        "tokens": {s: counts.get(f"tokens_{s}", 0) for s in SPLITS},
        "shards": {s: max(1, counts.get(f"shards_{s}", 0)) for s in SPLITS},
        "text_tokens": counts.get("text_tokens", 0),  # item text and query tokens in the examples
        "users": counts.get("users", 0),
        "short_users": counts.get("short_users", 0),
        "tie_copy_rows": counts.get("tie_copy_rows", 0),  # history rows of the tie-shuffled copies
        "attribute_rows": counts.get("attribute_rows", 0),  # describe rows of attribute text alone
        "left_out": {
            "unknown_item_events": counts.get("unknown_item_events", 0),
            "unknown_items": counts.get("unknown_items", 0),
            "searches_without_target": counts.get("searches_without_target", 0),
            "search_pairs_withheld": counts.get("search_pairs_withheld", 0),
            "items_without_description": counts.get("items_without_description", 0),
        },
        "tokenizer": {"vocab_size": tokenizer.n_text, "trained": trained},
        # the Chinese items' attribute texts and descriptions, as the describe rows encode them
        "zh_tokens_per_char": round(counts.get("zh_tokens", 0) / max(1, counts.get("zh_chars", 0)), 4),
        "item_vocab": {"size": len(vocab), "added": added},
    }


def format_summary(s: dict) -> str:
    lines = [
        f"prepare {s['date']}: tokenizer {s['tokenizer']['vocab_size']} text tokens "
        f"({'trained now' if s['tokenizer']['trained'] else 'reused'}), "
        f"Chinese {s['zh_tokens_per_char']:.3f} tokens/char; "
        f"item vocab {s['item_vocab']['size']} (+{s['item_vocab']['added']} today)"
    ]
    for split in SPLITS:
        r = s["rows"][split]
        lines.append(
            f"  {split:5s} {s['rows_total'][split]:>9,} rows ({', '.join(f'{k} {r[k]:,}' for k in EXAMPLE_KINDS)}), "
            f"{s['tokens'][split]:,} tokens, {s['shards'][split]} shard(s)"
        )
    lo = s["left_out"]
    lines.append(
        f"  train rows added: {s['tie_copy_rows']:,} tie-shuffled history copies, "
        f"{s['attribute_rows']:,} attribute-only describe rows"
    )
    lines.append(
        f"  users {s['users']:,} (short, train only: {s['short_users']:,}); left out: "
        + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in lo.items())
    )
    return "\n".join(lines)
