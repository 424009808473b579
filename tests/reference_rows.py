"""The per-row reference of `shopllm.training_rows`: the row layouts and the per-user rules one example at a
time, as Python values. Only tests use it: they check that the vectorised, many-users-at-once code of the
pipeline gives the same rows.

- `Example`, `SearchPair`, `UserExamples`, `Event`: rows, search pairs, a user's results and events as Python
  values; `table_examples` reads a ROWS_SCHEMA table back as Examples.
- `search_example`, `describe_example`, `attribute_example`, `chunk_from_end`: the layouts of one row.
- `build_user_examples`: `shard_examples` on one user's events; `describe_table_rows`: the describe rows of an
  items table, its texts encoded in one call.
- `pack_ids`: an id list as packed int32 bytes, the order earlier versions sorted rows by.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import pyarrow as pa

from shopllm import sequences
from shopllm.hashing import holdout_split
from shopllm.training_rows import (
    NO_TARGET,
    DescribeBatch,
    ItemTokens,
    describe_rows,
    describe_texts,
    shard_examples,
)

# ---- rows and events as Python values ------------------------------------------------------------


class Event(NamedTuple):
    """One curated event of a user (the per-user view used by `build_user_examples`)."""

    ts: int  # microseconds since the epoch, UTC
    arrival: int  # tie-breaker after ts
    session_id: str
    event_type: str
    item_id: str | None
    query: str | None


EVENT_FIELD_TYPES = [
    ("ts", pa.int64()),
    ("arrival", pa.int64()),
    ("session_id", pa.string()),
    ("event_type", pa.string()),
    ("item_id", pa.string()),
    ("query", pa.string()),
]


class Example(NamedTuple):
    """One row of tokens/<split> as Python values."""

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


def table_examples(rows: pa.Table) -> list[Example]:
    return [Example(**r) for r in rows.select(list(Example._fields)).to_pylist()]


# ---- the layouts, one example at a time ----------------------------------------------------------


def chunk_from_end(items: Sequence[int], window: int) -> list[list[int]]:
    """Consecutive chunks of `window` items; the oldest chunk is the short one, so the recent ones are full."""
    chunks = []
    end = len(items)
    while end > 0:
        chunks.append(list(items[max(0, end - window) : end]))
        end -= window
    return chunks[::-1]


def search_example(pair: SearchPair, query_ids: Sequence[int]) -> Example:
    if pair.split == "train":
        return Example(
            "train", "search", pair.query, sequences.search_sequence(query_ids, pair.item_token), None, NO_TARGET, []
        )
    return Example(
        pair.split, "search", pair.query, sequences.search_prompt(query_ids), pair.item_id, pair.item_token, []
    )


def describe_example(item_id: str, item_token: int, attr_ids: Sequence[int], desc_ids: Sequence[int], cfg) -> Example:
    """The full describe sequence. Valid/test rows name the item in target_item but keep target_id -1:
    they are scored by perplexity, and readers treat a target_id >= 0 as a ranking prompt."""
    split = holdout_split(item_id, cfg.describe_holdout)
    seq = sequences.describe_sequence(item_token, attr_ids, desc_ids, cfg.max_describe_tokens)
    return Example(split, "describe", item_id, seq, None if split == "train" else item_id, NO_TARGET, [])


def attribute_example(item_id: str, item_token: int, attr_ids: Sequence[int], cfg) -> Example:
    """An item without a description: a training row of its attribute text alone."""
    return Example(
        "train",
        "describe",
        item_id,
        sequences.attribute_sequence(item_token, attr_ids, cfg.max_describe_tokens),
        None,
        NO_TARGET,
        [],
    )


# ---- the pipeline's code on one user or one items table -----------------------------------------


def events_table(user_id: str, events: Sequence[Event]) -> pa.Table:
    columns = {name: pa.array([getattr(e, name) for e in events], type_) for name, type_ in EVENT_FIELD_TYPES}
    return pa.table({"user_id": pa.repeat(user_id, len(events)), **columns})


def build_user_examples(
    user_id: str, events: Iterable[Event], item_index: Mapping[str, int], n_text: int, cfg
) -> UserExamples:
    """History rows and search pairs of one user: `shard_examples` on that user's events alone.
    `item_index` maps item_id -> index in the ItemVocab. Rows come valid, test, then train in time order."""
    res = shard_examples(events_table(user_id, list(events)), ItemTokens.from_index(item_index, n_text), cfg)
    return UserExamples(
        table_examples(res.history),
        [SearchPair(**p) for p in res.searches.to_pylist()],
        res.short_users == 1,
        res.unknown_item_events,
        res.searches_without_target,
        res.searches_withheld,
    )


def describe_table_rows(table: pa.Table, tokenizer, item_tokens: ItemTokens, cfg, slots=None) -> DescribeBatch:
    """Describe rows of a curated/items table, all its texts encoded in one encode_batch call: prepare's
    describe_texts and describe_rows without the helper thread prepare encodes on."""
    texts = describe_texts(table, item_tokens, cfg, slots)
    return describe_rows(texts, tokenizer.encode_batch(texts.texts) if texts.texts else [], cfg)


# ---- packed ids (the sort order of earlier versions) --------------------------------------------


def pack_ids(ids: Sequence[int]) -> bytes:
    return array("i", ids).tobytes()
