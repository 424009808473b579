"""Training examples of the three kinds (history, search, describe) and their leak-free splits.

Plain functions, no Beam: `pipelines/prepare.py` wires them. Token layouts come from
`shopllm.sequences`; an item's token id is `n_text + index` in the append-only `ItemVocab`.

Splits:
- history: per user, leave-one-out in time order (ts, then arrival). The last item is the test target,
  the one before it the valid target, training sees only what came before both. Every event of a held-out
  item (consecutive repeats are one item) is kept out of every training row, search rows included.
- search: a deterministic hash of the query text, so a held-out query never appears in training.
- describe: a deterministic hash of the item id.
"""
from __future__ import annotations

import hashlib
from array import array
from dataclasses import dataclass, field
from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import pyarrow as pa

from shopllm import sequences
from shopllm.errors import ConfigError
from shopllm.schemas import TOKENS_SCHEMA

ITEM_EVENT_TYPES = frozenset({"view", "click", "add_to_cart", "purchase"})
SEARCH_TARGET_TYPES = frozenset({"click", "add_to_cart", "purchase"})  # a view is not an answer to a query
NO_TARGET = -1


class Event(NamedTuple):
    """One curated event of a user, in the compact form the pipeline shuffles."""

    ts: int  # microseconds since the epoch, UTC
    arrival: int  # tie-breaker after ts
    event_id: str
    session_id: str
    event_type: str
    item_id: str | None
    query: str | None


class Example(NamedTuple):
    """One row of tokens/<split>; ids as Python lists here (packed to bytes inside the pipeline)."""

    split: str
    kind: str
    subject_id: str
    input_ids: Sequence[int]
    target_item: str | None
    target_id: int
    history_ids: Sequence[int]


class SearchPair(NamedTuple):
    """A search and the item it led to, before the query is tokenized."""

    split: str
    query: str
    item_id: str
    item_token: int


@dataclass
class UserExamples:
    """Everything one user's events give: history rows, search pairs and the counts of what was left out."""

    history: list[Example] = field(default_factory=list)
    searches: list[SearchPair] = field(default_factory=list)
    short: bool = False  # fewer than min_history items: train only
    unknown_item_events: int = 0  # item events whose item is not in the item vocabulary
    searches_without_target: int = 0  # no click/cart/purchase followed in the session
    searches_withheld: int = 0  # train pairs whose target is a held-out history event


# ---- deterministic hashing -----------------------------------------------------------------------

def stable_fraction(key: str) -> float:
    """A number in [0, 1) from `key`, the same on every machine and run (unlike Python's hash())."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def holdout_split(key: str, holdout: float) -> str:
    """'valid' or 'test' for a `holdout` share of keys (half each), else 'train'."""
    f = stable_fraction(key)
    if f < holdout / 2:
        return "valid"
    if f < holdout:
        return "test"
    return "train"


def stable_bucket(key: str, n: int) -> int:
    return int(stable_fraction(key) * n)


def check_config(cfg) -> None:
    """Reject PrepareConfig values that would give wrong or empty output."""
    if cfg.history_window < 1:
        raise ConfigError(f"prepare.history_window must be >= 1, got {cfg.history_window}")
    if cfg.shard_rows < 1:
        raise ConfigError(f"prepare.shard_rows must be >= 1, got {cfg.shard_rows}")
    for name in ("describe_holdout", "search_holdout"):
        value = getattr(cfg, name)
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"prepare.{name} must be in [0, 1), got {value}")
    if cfg.max_describe_tokens < 8:
        raise ConfigError(f"prepare.max_describe_tokens must be >= 8, got {cfg.max_describe_tokens}")
    if cfg.vocab_size < 300:
        raise ConfigError(f"prepare.vocab_size must be >= 300 (256 bytes + special tokens), got {cfg.vocab_size}")


# ---- history and search, per user ----------------------------------------------------------------

def collapse_repeats(events: Sequence[Event], positions: Sequence[int]) -> list[tuple[str, list[int]]]:
    """Runs of the same item among the item events at `positions`: [(item_id, [event positions])]."""
    runs: list[tuple[str, list[int]]] = []
    for pos in positions:
        item = events[pos].item_id
        if runs and runs[-1][0] == item:
            runs[-1][1].append(pos)
        else:
            runs.append((item, [pos]))
    return runs


def chunk_from_end(items: Sequence[int], window: int) -> list[list[int]]:
    """Consecutive chunks of `window` items; the oldest chunk is the short one, so the recent ones are full."""
    chunks = []
    end = len(items)
    while end > 0:
        chunks.append(list(items[max(0, end - window):end]))
        end -= window
    return chunks[::-1]


def unique_in_order(ids: Iterable[int]) -> list[int]:
    return list(dict.fromkeys(ids))


def held_out_row(split: str, user_id: str, before: Sequence[int], item_id: str, token: int,
                 window: int) -> Example:
    return Example(split, "history", user_id, sequences.history_prompt(before[-window:]), item_id, token,
                   unique_in_order(before))


def next_target(events: Sequence[Event], start: int) -> int | None:
    """Position of the first click/cart/purchase after the search at `start` in its session, before any
    later search there (that click answers the later query); None if there is none."""
    session = events[start].session_id
    for pos in range(start + 1, len(events)):
        e = events[pos]
        if e.session_id != session:
            continue
        if e.event_type == "search":
            return None
        if e.event_type in SEARCH_TARGET_TYPES:
            return pos
    return None


def build_user_examples(user_id: str, events: Iterable[Event], item_index: Mapping[str, int], n_text: int,
                        cfg) -> UserExamples:
    """History rows and search pairs of one user. `item_index` maps item_id -> index in the ItemVocab."""
    events = sorted(events, key=lambda e: (e.ts, e.arrival, e.event_id or ""))
    out = UserExamples()
    positions = []
    for pos, e in enumerate(events):
        if e.event_type in ITEM_EVENT_TYPES:
            if e.item_id in item_index:
                positions.append(pos)
            else:
                out.unknown_item_events += 1
    runs = collapse_repeats(events, positions)
    tokens = [n_text + item_index[item] for item, _ in runs]

    held_out: set[int] = set()
    if len(runs) < max(cfg.min_history, 2):
        out.short = True
        train_tokens = tokens
    else:
        train_tokens = tokens[:-2]
        (valid_item, valid_pos), (test_item, test_pos) = runs[-2], runs[-1]
        held_out.update(valid_pos)
        held_out.update(test_pos)
        out.history.append(held_out_row("valid", user_id, tokens[:-2], valid_item, tokens[-2], cfg.history_window))
        out.history.append(held_out_row("test", user_id, tokens[:-1], test_item, tokens[-1], cfg.history_window))
    for chunk in chunk_from_end(train_tokens, cfg.history_window):
        out.history.append(Example("train", "history", user_id, sequences.history_sequence(chunk), None, NO_TARGET, []))

    for pos, e in enumerate(events):
        if e.event_type != "search" or not e.query:
            continue
        target = next_target(events, pos)
        if target is None:
            out.searches_without_target += 1
            continue
        item = events[target].item_id
        if item not in item_index:
            continue  # already counted as an unknown item event
        split = holdout_split(e.query, cfg.search_holdout)
        if split == "train" and target in held_out:
            out.searches_withheld += 1
            continue
        out.searches.append(SearchPair(split, e.query, item, n_text + item_index[item]))
    return out


def search_example(pair: SearchPair, query_ids: Sequence[int]) -> Example:
    if pair.split == "train":
        return Example("train", "search", pair.query, sequences.search_sequence(query_ids, pair.item_token),
                       None, NO_TARGET, [])
    return Example(pair.split, "search", pair.query, sequences.search_prompt(query_ids), pair.item_id,
                   pair.item_token, [])


# ---- describe, per item --------------------------------------------------------------------------

def describe_example(item_id: str, item_token: int, attr_ids: Sequence[int], desc_ids: Sequence[int],
                     cfg) -> Example:
    """The full describe sequence. Valid/test rows name the item in target_item but keep target_id -1:
    they are scored by perplexity, and readers treat a target_id >= 0 as a ranking prompt."""
    split = holdout_split(item_id, cfg.describe_holdout)
    seq = sequences.describe_sequence(item_token, attr_ids, desc_ids, cfg.max_describe_tokens)
    return Example(split, "describe", item_id, seq, None if split == "train" else item_id, NO_TARGET, [])


# ---- tokenizer training text ---------------------------------------------------------------------

def tokenizer_texts(items: pa.Table, queries: Iterable[str | None]) -> list[str]:
    """Every curated text the model reads: item fields, attribute keys/values, attribute_text, queries."""
    texts: list[str] = []
    cols = {name: items.column(name).to_pylist() for name in ("title", "description", "category", "brand", "attributes")}
    for title, desc, category, brand, attrs in zip(*cols.values()):
        attrs = attrs or []
        texts.extend(t for t in (title, desc, category, brand) if t)
        texts.extend(s for pair in attrs for s in pair if s)
        texts.append(sequences.attribute_text(title or "", category, brand, attrs))
    texts.extend(q for q in queries if q)
    return texts


def chinese_texts(items: pa.Table) -> list[str]:
    """Title and description of the items whose language is 'zh'."""
    texts = []
    for lang, title, desc in zip(*(items.column(c).to_pylist() for c in ("language", "title", "description"))):
        if lang == "zh":
            texts.extend(t for t in (title, desc) if t)
    return texts


# ---- packed rows (what the pipeline shuffles) and the Arrow table ---------------------------------

def pack_ids(ids: Sequence[int]) -> bytes:
    return array("i", ids).tobytes()


def unpack_ids(data: bytes) -> list[int]:
    return array("i", data).tolist() if data else []


def pack(ex: Example) -> tuple:
    return (ex.split, ex.kind, ex.subject_id, pack_ids(ex.input_ids), ex.target_item, ex.target_id,
            pack_ids(ex.history_ids))


def unpack(row: tuple) -> Example:
    split, kind, subject, ids, target_item, target_id, hist = row
    return Example(split, kind, subject, unpack_ids(ids), target_item, target_id, unpack_ids(hist))


def sort_key(row: tuple) -> tuple:
    """Total order of packed rows (identical rows are interchangeable), so reruns write identical files."""
    _, kind, subject, ids, target_item, target_id, hist = row
    return (kind, subject, ids, target_item or "", target_id, hist)


def _list_array(blobs: Sequence[bytes]) -> pa.Array:
    lengths = np.fromiter((len(b) // 4 for b in blobs), dtype=np.int32, count=len(blobs))
    offsets = np.zeros(len(blobs) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = np.frombuffer(b"".join(blobs), dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=pa.int32()))


def rows_to_table(rows: Sequence[tuple]) -> pa.Table:
    """Packed rows -> a TOKENS_SCHEMA table (the split column is dropped: it is the partition)."""
    cols = list(zip(*rows)) if rows else [()] * 7
    return pa.Table.from_arrays([
        pa.array(cols[1], pa.string()),
        pa.array(cols[2], pa.string()),
        _list_array(cols[3]),
        pa.array(cols[4], pa.string()),
        pa.array(cols[5], pa.int32()),
        _list_array(cols[6]),
    ], schema=TOKENS_SCHEMA)


def count_tokens(rows: Iterable[tuple]) -> int:
    return sum(len(r[3]) // 4 for r in rows)


# ---- Arrow batches -> examples (one call per batch, so the tokenizer sees many texts at once) -----

EVENT_COLUMNS = ["user_id", "ts", "arrival", "event_id", "session_id", "event_type", "item_id", "query"]
ITEM_COLUMNS = ["item_id", "title", "description", "category", "brand", "attributes"]


def events_by_user(table: pa.Table) -> dict[str, list[tuple]]:
    """The events of a curated/events batch as Event tuples, grouped by user."""
    ts = table.column("ts").cast(pa.int64()).to_pylist()
    cols = [table.column(c).to_pylist() for c in EVENT_COLUMNS[2:]]
    users: dict[str, list[tuple]] = {}
    for user, t, arrival, event_id, session, etype, item, query in zip(table.column("user_id").to_pylist(), ts, *cols):
        users.setdefault(user, []).append((t, arrival or 0, event_id or "", session or "", etype, item, query))
    return users


@dataclass
class DescribeBatch:
    examples: list[Example]
    without_description: int  # nothing to learn to generate: not a describe example
    unknown_items: int
    text_tokens: int  # tokens the tokenizer produced for this batch


def describe_batch(table: pa.Table, tokenizer, item_index: Mapping[str, int], n_text: int, cfg) -> DescribeBatch:
    """Describe examples of a curated/items batch: attribute text and description encoded in one call."""
    cols = [table.column(c).to_pylist() for c in ITEM_COLUMNS]
    kept, attr_texts, descs = [], [], []
    no_desc = unknown = 0
    for item_id, title, desc, category, brand, attrs in zip(*cols):
        if item_id not in item_index:
            unknown += 1
        elif not desc:
            no_desc += 1
        else:
            kept.append(item_id)
            attr_texts.append(sequences.attribute_text(title or "", category, brand, attrs or []))
            descs.append(desc)
    encoded = tokenizer.encode_batch(attr_texts + descs) if kept else []
    n = len(kept)
    examples = [describe_example(item_id, n_text + item_index[item_id], encoded[i], encoded[n + i], cfg)
                for i, item_id in enumerate(kept)]
    return DescribeBatch(examples, no_desc, unknown, sum(len(ids) for ids in encoded))


def search_batch(pairs: Sequence[SearchPair], tokenizer) -> tuple[list[Example], int]:
    """Search examples of many pairs, queries encoded in one call; also the number of text tokens."""
    encoded = tokenizer.encode_batch([p.query for p in pairs]) if pairs else []
    return [search_example(p, ids) for p, ids in zip(pairs, encoded)], sum(len(ids) for ids in encoded)
