"""Training rows of the three kinds (history, search, describe) and their leak-free splits.

Plain functions, no Beam: `pipelines/prepare.py` wires them. Token layouts come from
`shopllm.sequences`; an item's token id is `n_text + index` in the append-only `ItemVocab`.

Splits:
- history: per user, leave-one-out in time order (ts, then arrival). The last item is the test target,
  the one before it the valid target, training sees only what came before both. Every event of a held-out
  item (consecutive repeats are one item) is kept out of every training row, search rows included.
- search: a deterministic hash of the query text, so a held-out query never appears in training.
- describe: a deterministic hash of the item id.

The pipeline works on Arrow tables, many users or items at a time: events are sorted once, users and
runs of repeated items are found with numpy, and the rows' token lists are built as flat arrays
(`Ragged`). The layouts one example at a time (`search_example`, `describe_example`, `chunk_from_end`,
`build_user_examples`) are a reference in tests/reference_rows.py; tests check that the vectorised code here
agrees with them. Every hash a split, bucket or shuffle is decided by is in `shopllm.hashing`.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shopllm import sequences
from shopllm.config import MAX_TIE_SHUFFLES
from shopllm.hashing import holdout_splits, mix64, per_distinct, stable_fractions, stable_hash64
from shopllm.schemas import TOKENS_SCHEMA
from shopllm.slots import delexicalize
from shopllm.vocab import ATTR_ID, BOS_ID, DESC_ID, EOS_ID, HIST_ID, QUERY_ID, REC_ID

ITEM_EVENT_TYPES = frozenset({"view", "click", "add_to_cart", "purchase"})
SEARCH_TARGET_TYPES = frozenset({"click", "add_to_cart", "purchase"})  # a view is not an answer to a query
NO_TARGET = -1
NULL_STRING = pa.scalar(None, pa.string())
BUCKETS = 64  # rows are ordered by (bucket of kind+subject, then content): the unit of parallel sorting

EVENT_COLUMNS = ["user_id", "ts", "arrival", "session_id", "event_type", "item_id", "query"]
# the event order: time, then arrival (file and line: unique for ingested events), then the content, so
# events that tie on all of it are interchangeable and the order never depends on how the input was read
EVENT_ORDER = ["user", "ts", "arrival", "event_type", "session_id", "item_id", "query"]
ITEM_COLUMNS = ["item_id", "title", "description", "category", "brand", "attributes", "language"]
# what the pipeline shuffles: a TOKENS_SCHEMA row plus its split and sort bucket
ROWS_SCHEMA = pa.schema([("split", pa.string()), ("bucket", pa.int32()), *TOKENS_SCHEMA])


# ---- ragged id lists, one per row, as flat numpy arrays ------------------------------------------


@dataclass
class Ragged:
    """Rows of int32 ids: all ids in one flat array, and the number of ids of each row."""

    values: np.ndarray  # int32
    lengths: np.ndarray  # int64, one per row

    @classmethod
    def from_lists(cls, lists: Sequence[Sequence[int]]) -> Ragged:
        lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
        values = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int32, count=int(lengths.sum()))
        return cls(values, lengths)

    @classmethod
    def of_rows(cls, values: np.ndarray, rows: np.ndarray, n_rows: int) -> Ragged:
        """`values[k]` belongs to row `rows[k]`; `rows` is non-decreasing."""
        return cls(values.astype(np.int32), np.bincount(rows, minlength=n_rows).astype(np.int64))

    @classmethod
    def constant(cls, value, n_rows: int) -> Ragged:
        """One id per row: `value` (an int, or an array with one id per row)."""
        return cls(np.broadcast_to(np.asarray(value, np.int32), (n_rows,)).copy(), np.ones(n_rows, np.int64))

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)

    def position_in_row(self) -> np.ndarray:
        return np.arange(len(self.values)) - np.repeat(self.offsets[:-1], self.lengths)

    def take(self, rows: np.ndarray) -> Ragged:
        """Row k of the result = row `rows[k]` of this one (rows may repeat)."""
        lengths = self.lengths[rows]
        out_start = np.repeat(np.cumsum(lengths) - lengths, lengths)
        src_start = np.repeat(self.offsets[:-1][rows], lengths)
        return Ragged(self.values[src_start + np.arange(len(out_start)) - out_start], lengths)

    def truncate(self, max_len: int) -> Ragged:
        return Ragged(self.values[self.position_in_row() < max_len], np.minimum(self.lengths, max_len))

    def to_arrow(self) -> pa.ListArray:
        return pa.ListArray.from_arrays(pa.array(self.offsets.astype(np.int32)), pa.array(self.values, pa.int32()))


def concat_ragged(*parts: Ragged) -> Ragged:
    """The rows of several Raggeds, one after the other."""
    return Ragged(
        np.concatenate([p.values for p in parts]).astype(np.int32), np.concatenate([p.lengths for p in parts])
    )


def concat_rows(n_rows: int, *parts) -> Ragged:
    """Row i = parts[0][i] + parts[1][i] + ...; a part is a Ragged, an int (the same id in every row) or
    an array (one id per row)."""
    parts = [p if isinstance(p, Ragged) else Ragged.constant(p, n_rows) for p in parts]
    lengths = sum((p.lengths for p in parts), np.zeros(n_rows, np.int64))
    out = np.empty(int(lengths.sum()), np.int32)
    row_start = np.cumsum(lengths) - lengths
    for p in parts:
        out[np.repeat(row_start, p.lengths) + p.position_in_row()] = p.values
        row_start = row_start + p.lengths
    return Ragged(out, lengths)


def ids_as_bytes(ids: pa.ListArray) -> pa.BinaryArray:
    """Each row's int32 ids as one native-endian byte string (a sort key that orders like the old packed rows)."""
    offsets = ids.offsets.to_numpy().astype(np.int64)
    values = ids.values.to_numpy()[offsets[0] : offsets[-1]]
    byte_offsets = ((offsets - offsets[0]) * 4).astype(np.int32)
    return pa.Array.from_buffers(pa.binary(), len(ids), [None, pa.py_buffer(byte_offsets), pa.py_buffer(values)])


# ---- tables of rows ------------------------------------------------------------------------------


def rows_table(
    split,
    kind: str,
    subject: pa.Array,
    input_ids: Ragged,
    target_item: pa.Array | None = None,
    target_id=NO_TARGET,
    history_ids: Ragged | None = None,
    bucket: pa.Array | None = None,
) -> pa.Table:
    """A ROWS_SCHEMA table; `split` is one string or one per row, the bucket is computed from kind+subject
    unless given."""
    n = len(subject)
    columns = {
        "split": pa.repeat(split, n) if isinstance(split, str) else split,
        "bucket": sort_buckets(kind, subject) if bucket is None else bucket,
        "kind": pa.repeat(kind, n),
        "subject_id": subject,
        "input_ids": input_ids.to_arrow(),
        "target_item": pa.nulls(n, pa.string()) if target_item is None else target_item,
        "target_id": pa.array(np.broadcast_to(np.asarray(target_id, np.int32), (n,)).copy()),
        "history_ids": (history_ids or Ragged(np.zeros(0, np.int32), np.zeros(n, np.int64))).to_arrow(),
    }
    return pa.Table.from_pydict(columns, schema=ROWS_SCHEMA)


def sort_buckets(kind: str, subject: pa.Array) -> pa.Array:
    """stable_bucket(f"{kind}\\x00{subject}", BUCKETS) of every row."""
    return per_distinct(
        subject, lambda distinct: (stable_fractions([f"{kind}\x00{s}" for s in distinct]) * BUCKETS).astype(np.int32)
    ).cast(pa.int32())


def sort_rows(rows: pa.Table) -> pa.Table:
    """Rows in their total output order (bucket, kind, subject, ids, target, history), so reruns write
    identical files; rows equal in every key are identical."""
    return rows.take(sorted_order(sort_keys(rows)))


def sort_keys(rows: pa.Table) -> pa.Table:
    """The columns that order rows (see sort_rows), the id lists as byte strings."""
    return pa.table(
        {
            "bucket": rows["bucket"],
            "kind": rows["kind"],
            "subject_id": rows["subject_id"],
            "input_ids": ids_as_bytes(rows["input_ids"].combine_chunks()),
            "target_item": pc.fill_null(rows["target_item"], ""),
            "target_id": rows["target_id"],
            "history_ids": ids_as_bytes(rows["history_ids"].combine_chunks()),
        }
    )


def sorted_order(keys: pa.Table, rows: np.ndarray | None = None) -> np.ndarray:
    """The rows of `keys` (or those listed in `rows`) in sort_rows order, as row numbers of `keys`."""
    if rows is not None:
        return rows[
            pc.sort_indices(keys.take(pa.array(rows)), [(n, "ascending") for n in keys.column_names]).to_numpy()
        ]
    return pc.sort_indices(keys, [(n, "ascending") for n in keys.column_names]).to_numpy()


def tokens_table(rows: pa.Table) -> pa.Table:
    """ROWS_SCHEMA rows -> a TOKENS_SCHEMA table (the split is the partition, the bucket a sort key)."""
    return rows.select(TOKENS_SCHEMA.names).cast(TOKENS_SCHEMA).combine_chunks()


def tokens_in(rows: pa.Table) -> int:
    return int(pc.sum(pc.list_value_length(rows["input_ids"])).as_py() or 0)


# ---- history and search, many users at once ------------------------------------------------------


@dataclass
class ItemTokens:
    """Item ids -> token ids through the item vocabulary (token = n_text + index)."""

    items: pa.Array  # the vocabulary's item ids in index order
    n_text: int

    @classmethod
    def from_index(cls, item_index: Mapping[str, int], n_text: int) -> ItemTokens:
        items = sorted(item_index, key=item_index.__getitem__)
        if [item_index[i] for i in items] != list(range(len(items))):
            raise ValueError("item index must number the items 0..n-1")
        return cls(pa.array(items, pa.string()), n_text)

    def tokens(self, item_ids) -> np.ndarray:
        """Token id of each item id; -1 where it is null or not in the vocabulary."""
        if isinstance(item_ids, pa.ChunkedArray):
            item_ids = item_ids.combine_chunks()
        if pa.types.is_dictionary(item_ids.type):  # each distinct id looked up once
            return by_dictionary(item_ids, self.tokens(item_ids.dictionary), -1)
        index = pc.fill_null(pc.index_in(item_ids, value_set=self.items), -1).to_numpy()
        return np.where(index >= 0, index + self.n_text, -1)


@dataclass
class ShardExamples:
    """History rows and search pairs of the users of a shard, and the counts of what was left out."""

    history: pa.Table  # ROWS_SCHEMA
    searches: pa.Table  # split, query, item_id, item_token (in time order)
    users: int
    short_users: int  # fewer than min_history items: train only
    unknown_item_events: int
    searches_without_target: int
    searches_withheld: int
    tie_copy_rows: int = 0  # training rows of the tie-shuffled copies (prepare.tie_shuffles)


def sorted_events(table: pa.Table) -> pa.Table:
    """The events in EVENT_ORDER (per user: ts, arrival, then content), nulls filled, plus `user`: a code
    per user. String columns may come plain or dictionary-encoded; `event_type` comes back dictionary-encoded
    (a few distinct values, which `is_in` tests once each)."""
    users = pc.dictionary_encode(pc.fill_null(table["user_id"], "").combine_chunks())
    events = pa.table(
        {
            "user": users.indices,
            "user_id": pc.fill_null(table["user_id"], ""),
            "ts": table["ts"].cast(pa.int64()),
            "arrival": pc.fill_null(table["arrival"], 0),
            "session_id": pc.fill_null(table["session_id"], ""),
            "event_type": table["event_type"],
            "item_id": table["item_id"],
            "query": table["query"],
        }
    )
    if not in_event_order(events):  # curated files are in order already
        keys = pa.table({c: plain_strings(events[c]) for c in EVENT_ORDER})  # (no sorting by a dictionary)
        events = events.take(pc.sort_indices(keys, [(c, "ascending") for c in EVENT_ORDER]))
    events = events.unify_dictionaries().combine_chunks()
    return events.set_column(
        events.schema.get_field_index("event_type"), "event_type", pc.dictionary_encode(events["event_type"])
    )


def plain_strings(column):
    """A dictionary-encoded column decoded; any other column as it is."""
    return column.cast(column.type.value_type) if pa.types.is_dictionary(column.type) else column


def in_event_order(events: pa.Table) -> bool:
    """Whether every user's events are together and strictly increasing by (ts, arrival): then no later key
    of EVENT_ORDER can reorder anything. Curated files are written so (sorted by user, ts, arrival)."""
    if events["ts"].null_count:
        return False
    user, ts, arrival = (events[c].to_numpy() for c in ("user", "ts", "arrival"))
    same_user = user[1:] == user[:-1]
    later = (ts[1:] > ts[:-1]) | ((ts[1:] == ts[:-1]) & (arrival[1:] > arrival[:-1]))
    return bool(np.all(user[1:] >= user[:-1]) and np.all(later | ~same_user))


def is_in(column, values) -> np.ndarray:
    """Per entry of a string column (plain or dictionary-encoded): whether it is one of `values` (null: no)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        return by_dictionary(column, is_in(column.dictionary, values), False)
    return pc.fill_null(pc.is_in(column, value_set=pa.array(sorted(values))), False).to_numpy(zero_copy_only=False)


def by_dictionary(column: pa.DictionaryArray, per_entry: np.ndarray, null) -> np.ndarray:
    """Per row of a dictionary-encoded column, the value `per_entry` gives its dictionary entry; `null` for a
    null row."""
    values = np.append(per_entry, null)  # the last slot answers for nulls
    return values[pc.fill_null(column.indices.cast(pa.int64()), len(column.dictionary)).to_numpy()]


@dataclass
class Runs:
    """A shard's known item events with consecutive repeats (per user) collapsed into runs."""

    event: np.ndarray  # first event of each run (index into the sorted events)
    user: np.ndarray  # user code of each run (non-decreasing)
    token: np.ndarray  # item token of each run
    pos: np.ndarray  # position of the run in its user's history
    n_of_user: np.ndarray  # number of runs of each user (indexed by user code)
    run_of_event: np.ndarray  # run of each event, -1 for events that are not known item events

    @property
    def n(self) -> np.ndarray:
        """Number of runs of the run's user, per run."""
        return self.n_of_user[self.user]


def item_runs(events: pa.Table, tokens: np.ndarray) -> tuple[Runs, int]:
    """The runs of the known item events, and the number of item events whose item is unknown."""
    user = events["user"].to_numpy()
    is_item = is_in(events["event_type"], ITEM_EVENT_TYPES)
    kept = np.flatnonzero(is_item & (tokens >= 0))
    starts = np.ones(len(kept), bool)
    starts[1:] = (user[kept][1:] != user[kept][:-1]) | (tokens[kept][1:] != tokens[kept][:-1])
    run_of_event = np.full(len(user), -1)
    run_of_event[kept] = np.cumsum(starts) - 1
    first = kept[starts]
    n_users = int(user.max()) + 1 if len(user) else 0  # codes are 0..n_users-1
    n_of_user = np.bincount(user[first], minlength=n_users)
    first_run = np.cumsum(n_of_user) - n_of_user
    pos = np.arange(len(first)) - first_run[user[first]]
    runs = Runs(first, user[first], tokens[first], pos, n_of_user, run_of_event)
    return runs, int((is_item & (tokens < 0)).sum())


def train_history_rows(events: pa.Table, runs: Runs, n_train: np.ndarray, window: int, eos: bool = True) -> pa.Table:
    """history_sequence rows (without the `<eos>` when not `eos`): each user's first n_train runs cut into
    chunks of `window` from the end."""
    train = runs.pos < n_train[runs.user]
    user, pos = runs.user[train], runs.pos[train]
    chunk = (n_train[user] - 1 - pos) // window  # counted from the most recent end
    new_row = np.ones(len(user), bool)
    new_row[1:] = (user[1:] != user[:-1]) | (chunk[1:] != chunk[:-1])
    row = np.cumsum(new_row) - 1
    n_rows = int(new_row.sum())
    items = Ragged.of_rows(runs.token[train], row, n_rows)
    subject = events["user_id"].take(runs.event[train][new_row])
    end = [EOS_ID] if eos else []
    return rows_table("train", "history", subject, concat_rows(n_rows, BOS_ID, HIST_ID, items, *end))


def tie_shuffled(events: pa.Table, runs: Runs, n_train: np.ndarray, copies: int) -> list[tuple[Runs, np.ndarray]]:
    """`copies` versions (runs, n_train) of the runs of the users with a same-timestamp tie among their
    training runs, each such tie in a random order. Events in the same second have no known order (the
    arrival order that breaks the tie is often not the order they happened in), so each copy is another
    order the user could have taken. A run's time is that of its first event. The order of a copy depends
    only on the user, the copy and the positions, so it does not depend on how users are sharded; held-out
    runs stay where they are, and a repeat that a new order puts next to itself is collapsed, as repeats
    are in the original."""
    train = runs.pos < n_train[runs.user]
    ts = events["ts"].to_numpy()[runs.event]
    tie = np.zeros(len(ts), bool)
    tie[1:] = (runs.user[1:] == runs.user[:-1]) & (ts[1:] == ts[:-1]) & train[1:] & train[:-1]
    if not copies or not tie.any():
        return []
    tied_users = np.unique(runs.user[tie])
    user_codes = events["user"].to_numpy()
    first_event = np.searchsorted(user_codes, tied_users)  # events are sorted by user code
    seed = np.zeros(len(runs.n_of_user), np.uint64)
    seed[tied_users] = [stable_hash64(u) for u in events["user_id"].take(pa.array(first_event)).to_pylist()]
    keep = np.isin(runs.user, tied_users)
    runs = Runs(runs.event[keep], runs.user[keep], runs.token[keep], runs.pos[keep], runs.n_of_user, runs.run_of_event)
    train, ts, pos = train[keep], ts[keep], runs.pos.astype(np.uint64)
    shuffled = []
    for copy in range(1, copies + 1):
        noise = mix64(seed[runs.user] ^ mix64(pos * np.uint64(MAX_TIE_SHUFFLES + 1) + np.uint64(copy)))
        order = np.lexsort((np.where(train, noise, pos), ts, ~train, runs.user))  # only train ties move
        shuffled.append(collapse_repeated_runs(dataclasses.replace(runs, token=runs.token[order]), train, n_train))
    return shuffled


def collapse_repeated_runs(runs: Runs, train: np.ndarray, n_train: np.ndarray) -> tuple[Runs, np.ndarray]:
    """(runs without a training run that repeats the one before it, n_train less what was dropped)."""
    repeat = np.zeros(len(runs.token), bool)
    repeat[1:] = (runs.user[1:] == runs.user[:-1]) & (runs.token[1:] == runs.token[:-1]) & train[1:] & train[:-1]
    if not repeat.any():
        return runs, n_train
    keep = ~repeat
    user = runs.user[keep]
    n_of_user = np.bincount(user, minlength=len(runs.n_of_user))
    pos = np.arange(len(user)) - (np.cumsum(n_of_user) - n_of_user)[user]
    dropped = np.bincount(runs.user[repeat], minlength=len(runs.n_of_user))
    return Runs(runs.event[keep], user, runs.token[keep], pos, n_of_user, runs.run_of_event), n_train - dropped


def new_rows(original: pa.Table, copies: Sequence[pa.Table]) -> pa.Table:
    """The rows of `copies` equal to no row of `original` and no earlier copy row (same subject and ids)."""
    if not copies:  # the usual night (tie_shuffles = 0): nothing to compare
        return original.slice(0, 0)
    every = pa.concat_tables([original, *copies])
    keys = pa.table(
        {
            "subject": every["subject_id"],
            "ids": ids_as_bytes(every["input_ids"].combine_chunks()),
            "row": np.arange(every.num_rows),
        }
    )
    first = keys.group_by(["subject", "ids"], use_threads=False).aggregate([("row", "min")])["row_min"].to_numpy()
    return every.take(pa.array(np.sort(first[first >= original.num_rows])))


def first_occurrences(runs: Runs) -> np.ndarray:
    """True for the first run of each (user, item)."""
    first = np.zeros(len(runs.token), bool)
    if len(runs.token):
        key = runs.user.astype(np.int64) * (int(runs.token.max()) + 1) + runs.token
        first[np.unique(key, return_index=True)[1]] = True
    return first


def held_out_history_rows(
    split: str, back: int, events: pa.Table, runs: Runs, long_users: np.ndarray, first: np.ndarray, window: int
) -> pa.Table:
    """valid (back=2) or test (back=1) rows of the long users: the prompt of the last `window` items before
    the target, and every distinct item before it (masked when ranking; `first`: first_occurrences(runs))."""
    row_of_user = np.full(len(runs.n_of_user), -1)
    row_of_user[long_users] = np.arange(len(long_users))
    cut = runs.n - back  # position of the target run
    before = (row_of_user[runs.user] >= 0) & (runs.pos < cut)
    in_window = before & (runs.pos >= cut - window)
    in_history = before & first
    n_rows = len(long_users)
    prompt = Ragged.of_rows(runs.token[in_window], row_of_user[runs.user[in_window]], n_rows)
    history = Ragged.of_rows(runs.token[in_history], row_of_user[runs.user[in_history]], n_rows)
    first_run = np.cumsum(runs.n_of_user) - runs.n_of_user
    target = first_run[long_users] + runs.n_of_user[long_users] - back
    target_event = pa.array(runs.event[target])
    return rows_table(
        split,
        "history",
        events["user_id"].take(target_event),
        concat_rows(n_rows, BOS_ID, HIST_ID, prompt),
        events["item_id"].take(target_event),
        runs.token[target],
        history,
    )


def search_answers(events: pa.Table) -> tuple[np.ndarray, np.ndarray, int]:
    """(search events, the events answering them, searches without an answer). The answer is the first
    click/cart/purchase after the search in its session, before any later search there (that click answers
    the later query)."""
    search, target = is_in(events["event_type"], {"search"}), is_in(events["event_type"], SEARCH_TARGET_TYPES)
    relevant = np.flatnonzero(search | target)  # views and others are skipped
    user = events["user"].to_numpy()[relevant]
    session = pc.dictionary_encode(events["session_id"].take(pa.array(relevant)).combine_chunks()).indices.to_numpy()
    by_session = np.lexsort((relevant, session, user))  # by user, session, time
    order, user, session = relevant[by_session], user[by_session], session[by_session]
    is_search = search[order]
    has_query = pc.fill_null(pc.not_equal(events["query"].take(pa.array(order)), ""), False).to_numpy(
        zero_copy_only=False
    )
    is_target = target[order]
    answered = np.zeros(len(order), bool)
    answered[:-1] = (user[1:] == user[:-1]) & (session[1:] == session[:-1]) & is_target[1:]
    source = is_search & has_query
    hits = np.flatnonzero(source & answered)
    return order[hits], order[hits + 1], int(source.sum()) - len(hits)


def search_pairs(
    events: pa.Table, tokens: np.ndarray, held_out: np.ndarray, holdout: float
) -> tuple[pa.Table, int, int]:
    """(search pairs, searches without target, train pairs withheld because their answer is held out)."""
    source, answer, without_target = search_answers(events)
    known = tokens[answer] >= 0  # an unknown answer item is already counted as an unknown item event
    source, answer = source[known], answer[known]
    query = events["query"].take(pa.array(source))
    split = holdout_splits(query, holdout)
    withheld = pc.equal(split, "train").to_numpy(zero_copy_only=False) & held_out[answer]
    keep = np.argsort(source[~withheld], kind="stable")  # time order
    pairs = pa.table(
        {
            "split": split.filter(pa.array(~withheld)),
            "query": query.filter(pa.array(~withheld)),
            "item_id": plain_strings(events["item_id"].take(pa.array(answer[~withheld]))),
            "item_token": pa.array(tokens[answer[~withheld]], pa.int32()),
        }
    )
    return pairs.take(pa.array(keep)), without_target, int(withheld.sum())


def shard_examples(table: pa.Table, item_tokens: ItemTokens, cfg) -> ShardExamples:
    """History rows and search pairs of every user in a curated/events table (all of each user's events)."""
    events = sorted_events(table)
    tokens = item_tokens.tokens(events["item_id"])
    runs, unknown = item_runs(events, tokens)
    long_user = runs.n_of_user >= max(cfg.min_history, 2)
    long_users = np.flatnonzero(long_user)
    n_train = np.where(long_user, runs.n_of_user - 2, runs.n_of_user)
    first = first_occurrences(runs)
    train = train_history_rows(events, runs, n_train, cfg.history_window, cfg.history_eos)
    copies = new_rows(
        train,
        [
            train_history_rows(events, c, n, cfg.history_window, cfg.history_eos)
            for c, n in tie_shuffled(events, runs, n_train, cfg.tie_shuffles)
        ],
    )
    history = pa.concat_tables(
        [
            held_out_history_rows("valid", 2, events, runs, long_users, first, cfg.history_window),
            held_out_history_rows("test", 1, events, runs, long_users, first, cfg.history_window),
            train,
            copies,
        ]
    )
    held_run = long_user[runs.user] & (runs.pos >= runs.n - 2)
    held_out = (runs.run_of_event >= 0) & held_run[runs.run_of_event]
    pairs, without_target, withheld = search_pairs(events, tokens, held_out, cfg.search_holdout)
    return ShardExamples(
        history,
        pairs,
        len(runs.n_of_user),
        len(runs.n_of_user) - len(long_users),
        unknown,
        without_target,
        withheld,
        copies.num_rows,
    )


def search_rows(pairs: pa.Table, tokenizer, pool_busy: bool = False) -> tuple[pa.Table, int]:
    """Search rows of many pairs; also the query tokens in them. Queries repeat (popular searches), so each
    distinct query is encoded once, all in one encode_batch call, or one by one on this thread when the
    tokenizer's thread pool is busy with another encode (a second encode_batch would wait for it)."""
    n = pairs.num_rows
    query = Ragged.from_lists([])
    if n:
        queries = pc.dictionary_encode(pairs["query"].combine_chunks())
        texts = queries.dictionary.to_pylist()
        ids = [tokenizer.encode(t) for t in texts] if pool_busy else tokenizer.encode_batch(texts)
        query = Ragged.from_lists(ids).take(queries.indices.to_numpy())
    train = pc.equal(pairs["split"], "train").to_numpy(zero_copy_only=False)
    item_token = pairs["item_token"].to_numpy()
    answer = Ragged(
        np.stack([item_token[train], np.full(train.sum(), EOS_ID)], axis=1).ravel().astype(np.int32),
        np.where(train, 2, 0),
    )  # train rows go on to the item and <eos>; held-out rows are prompts
    rows = rows_table(
        pairs["split"],
        "search",
        pairs["query"],
        concat_rows(n, BOS_ID, QUERY_ID, query, REC_ID, answer),
        pc.if_else(pa.array(train), NULL_STRING, pairs["item_id"]),
        np.where(train, NO_TARGET, item_token),
    )
    return rows, len(query.values)


# ---- describe, many items at once ----------------------------------------------------------------


@dataclass
class DescribeBatch:
    rows: pa.Table  # ROWS_SCHEMA
    without_description: int  # items without a description that got no row (attribute rows off or no text)
    unknown_items: int
    text_tokens: int  # tokens the tokenizer produced for this batch
    attribute_rows: int = 0  # attribute-only training rows (items without a description)
    zh_chars: int = 0  # characters of the texts of the Chinese items (language 'zh') in this batch
    zh_tokens: int = 0  # and their tokens


def attribute_text_column(items: pa.Table) -> pa.Array:
    """`sequences.attribute_text` of every row of a curated/items table, computed column-wise (the per-row
    version builds a Python list of pairs per item: 4x slower, and it is the start of the describe work)."""
    attrs = items["attributes"].combine_chunks()
    pairs = pa.ListArray.from_arrays(
        attrs.offsets, pa.StructArray.from_arrays([attrs.keys, attrs.items], ["k", "v"]), mask=attrs.is_null()
    )
    flat = pc.list_flatten(pairs)  # skips what a null entry's offsets span, so the parents are counted alike
    item = np.repeat(np.arange(len(pairs)), pc.fill_null(pc.list_value_length(pairs), 0).to_numpy())
    kv = pa.table({"item": item, "k": nonempty(flat.field("k")), "v": nonempty(flat.field("v"))})
    kv = kv.filter(pc.and_(pc.is_valid(kv["k"]), pc.is_valid(kv["v"])))
    kv = kv.take(pc.sort_indices(kv, [("item", "ascending"), ("k", "ascending"), ("v", "ascending")]))
    per_item = np.bincount(kv["item"].to_numpy(), minlength=items.num_rows)
    text = pc.binary_join_element_wise(kv["k"], kv["v"], ": ").combine_chunks()
    joined = pc.binary_join(pa.ListArray.from_arrays(offsets_of(per_item), text), "; ")
    return join_present(
        [nonempty(items[c]) for c in ("title", "category", "brand")] + [nonempty(joined)], sequences.ATTR_SEPARATOR
    )


def nonempty(strings) -> pa.Array:
    """The strings with empty ones made null."""
    strings = strings.combine_chunks() if isinstance(strings, pa.ChunkedArray) else strings
    return pc.if_else(pc.equal(pc.fill_null(strings, ""), ""), pa.scalar(None, strings.type), strings)


def offsets_of(lengths: np.ndarray) -> pa.Array:
    return pa.array(np.concatenate([[0], np.cumsum(lengths)]), pa.int32())


def join_present(columns: Sequence[pa.Array], separator: str) -> pa.Array:
    """Per row, the non-null strings of `columns` joined by `separator` ("" when there are none).
    (binary_join_element_wise's null_handling='skip' drops rows where every input is null.)"""
    n = len(columns[0])
    stacked = pa.concat_arrays(columns)  # column j, row i at j * n + i
    row_major = np.arange(len(columns) * n).reshape(len(columns), n).T.ravel()
    present = pc.is_valid(stacked).to_numpy(zero_copy_only=False)[row_major]
    values = stacked.take(pa.array(row_major[present]))
    return pc.binary_join(
        pa.ListArray.from_arrays(offsets_of(present.reshape(n, len(columns)).sum(axis=1)), values), separator
    )


@dataclass
class DescribeTexts:
    """The texts of a curated/items table's describe rows, in the order encode_batch gets them: the attribute
    texts of the items with a description, their descriptions, then the attribute texts of the bare items
    (no description; cfg.attribute_rows and some attribute text)."""

    items: pa.Table  # items with a description
    bare_items: pa.Table
    tokens: np.ndarray  # item token of every row of the table, -1 for unknown items
    full: np.ndarray  # per row of the table: in `items`
    bare: np.ndarray  # per row of the table: in `bare_items`
    without_description: int  # known items without a description that get no row
    texts: list[str]
    holdout: float  # describe_holdout
    # with slot tokens: each description as plain pieces (encoded, in `texts`) and slot ids (shopllm.slots)
    pieces: list[list[str | int]] | None = None

    @property
    def n_description_texts(self) -> int:
        """How many of `texts` are description text (whole descriptions, or their pieces between slots)."""
        if self.pieces is None:
            return self.items.num_rows
        return sum(isinstance(p, str) for ps in self.pieces for p in ps)

    def description_ids(self, encoded: Sequence[Sequence[int]]) -> list[Sequence[int]]:
        """The token ids of each description from the encoded description texts (slots put back in place)."""
        if self.pieces is None:
            return list(encoded)
        out, k = [], 0
        for ps in self.pieces:
            ids: list[int] = []
            for p in ps:
                if isinstance(p, str):
                    ids.extend(encoded[k])
                    k += 1
                else:
                    ids.append(p)
            out.append(ids)
        return out

    @functools.cached_property
    def split(self) -> pa.Array:
        """Of each of `items`, by item hash."""
        return holdout_splits(self.items["item_id"], self.holdout)

    @functools.cached_property
    def buckets(self) -> tuple[pa.Array, pa.Array]:
        """The sort buckets of the describe rows of `items` and of `bare_items`."""
        return sort_buckets("describe", self.items["item_id"]), sort_buckets("describe", self.bare_items["item_id"])

    def hash_items(self) -> None:
        """Compute the items' split and sort-bucket hashes now. The encode does not need them, so a caller
        that encodes on another thread hashes them while it runs (~1 us an item) rather than before."""
        _ = self.split, self.buckets


def describe_texts(table: pa.Table, item_tokens: ItemTokens, cfg, slots=None) -> DescribeTexts:
    """The texts to encode for the describe rows of a curated/items table. With `slots` (a SlotVocab with
    tokens), each item's own values, brand and category name in its description become slot tokens."""
    tokens = item_tokens.tokens(table["item_id"])
    has_desc = pc.fill_null(pc.not_equal(table["description"], ""), False).to_numpy(zero_copy_only=False)
    attr = attribute_text_column(table)
    has_attr = pc.not_equal(attr, "").to_numpy(zero_copy_only=False)
    full, bare = (tokens >= 0) & has_desc, (tokens >= 0) & ~has_desc & has_attr & cfg.attribute_rows
    items, bare_items = table.filter(pa.array(full)), table.filter(pa.array(bare))
    descriptions = items["description"].to_pylist()
    pieces = None
    if slots and cfg.describe_slots:
        pieces = [
            delexicalize(d, slots.facts(b, c, a or (), t), slots.name_id)
            for d, b, c, a, t in zip(
                descriptions,
                items["brand"].to_pylist(),
                items["category"].to_pylist(),
                items["attributes"].to_pylist(),
                items["title"].to_pylist(),
            )
        ]
        descriptions = [p for ps in pieces for p in ps if isinstance(p, str)]
    texts = attr.filter(pa.array(full)).to_pylist() + descriptions + attr.filter(pa.array(bare)).to_pylist()
    return DescribeTexts(
        items,
        bare_items,
        tokens,
        full,
        bare,
        int(((tokens >= 0) & ~has_desc).sum()) - bare_items.num_rows,
        texts,
        cfg.describe_holdout,
        pieces,
    )


def describe_rows(texts: DescribeTexts, encoded: Sequence[Sequence[int]], cfg) -> DescribeBatch:
    """Describe rows of a curated/items table from its `describe_texts` and their token ids: the full layout
    for items with a description (held out by item hash), the attribute text alone for those without one
    (training only, when cfg.attribute_rows and there is attribute text), and with cfg.catalog_search_rows a
    training search row from each item's attribute text to the item."""
    items, bare_items, tokens = texts.items, texts.bare_items, texts.tokens
    n, n_bare = items.num_rows, bare_items.num_rows
    end = n + texts.n_description_texts
    attrs, descs = Ragged.from_lists(encoded[:n]), Ragged.from_lists(texts.description_ids(encoded[n:end]))
    bare_attrs = Ragged.from_lists(encoded[end:])
    seq = concat_rows(n, BOS_ID, tokens[texts.full], ATTR_ID, attrs, DESC_ID, descs, EOS_ID).truncate(
        cfg.max_describe_tokens
    )
    split = texts.split
    held = pc.not_equal(split, "train")
    buckets, bare_buckets = texts.buckets
    rows = [
        rows_table(
            split, "describe", items["item_id"], seq, pc.if_else(held, items["item_id"], NULL_STRING), bucket=buckets
        )
    ]
    if n_bare:
        bare_seq = concat_rows(n_bare, BOS_ID, tokens[texts.bare], ATTR_ID, bare_attrs).truncate(
            cfg.max_describe_tokens
        )
        rows.append(rows_table("train", "describe", bare_items["item_id"], bare_seq, bucket=bare_buckets))
    if cfg.catalog_search_rows:
        rows.append(
            catalog_search_rows(
                texts.texts[:n] + texts.texts[end:],
                concat_ragged(attrs, bare_attrs),
                np.concatenate([tokens[texts.full], tokens[texts.bare]]),
                cfg,
            )
        )
    zh = chinese_rows(texts)
    row_texts = texts.texts[:n] + items["description"].to_pylist() + texts.texts[end:]
    zh_chars = sum(len(t) for t, is_zh in zip(row_texts, zh) if is_zh)
    zh_tokens = int(np.concatenate([attrs.lengths, descs.lengths, bare_attrs.lengths])[zh].sum())
    return DescribeBatch(
        pa.concat_tables(rows),
        texts.without_description,
        int((tokens < 0).sum()),
        sum(len(r.values) for r in (attrs, descs, bare_attrs)),
        n_bare,
        zh_chars,
        zh_tokens,
    )


def chinese_rows(texts: DescribeTexts) -> np.ndarray:
    """Per describe text (attribute texts, whole descriptions, bare attribute texts): whether it belongs to an
    item whose language is 'zh'."""

    def is_zh(items: pa.Table) -> np.ndarray:
        return pc.fill_null(pc.equal(items["language"], "zh"), False).to_numpy(zero_copy_only=False)

    full = is_zh(texts.items)
    return np.concatenate([full, full, is_zh(texts.bare_items)]).astype(bool)


def catalog_search_rows(texts: Sequence[str], ids: Ragged, item_tokens: np.ndarray, cfg) -> pa.Table:
    """`<bos> <query> attribute text <rec> item <eos>` per item (training only): a search for words of an
    item that nobody has searched for yet can still find it."""
    text = ids.truncate(cfg.max_describe_tokens - 5)  # the row stays within max_describe_tokens
    seq = concat_rows(len(texts), BOS_ID, QUERY_ID, text, REC_ID, item_tokens, EOS_ID)
    return rows_table("train", "search", pa.array(texts, pa.string()), seq)


# ---- tokenizer training text ---------------------------------------------------------------------


def tokenizer_texts(items: pa.Table, queries: Iterable[str | None]) -> list[str]:
    """Every curated text the model reads: item fields, attribute keys/values, attribute_text, queries."""
    texts: list[str] = []
    cols = {
        name: items.column(name).to_pylist() for name in ("title", "description", "category", "brand", "attributes")
    }
    for title, desc, category, brand, attrs in zip(*cols.values()):
        attrs = attrs or []
        texts.extend(t for t in (title, desc, category, brand) if t)
        texts.extend(s for pair in attrs for s in pair if s)
        texts.append(sequences.attribute_text(title or "", category, brand, attrs))
    texts.extend(q for q in queries if q)
    return texts
