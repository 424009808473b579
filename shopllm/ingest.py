"""Ingest logic on Arrow tables: read raw records in chunks, validate and clean them, keep the newest
catalog version, drop duplicate events, build sessions. No Beam here: the pipeline and the plain
baseline script call the same functions.

Every raw record ends in exactly one place: a kept row, a counted duplicate, or a reject row with
its file, line (1-based; 0-based row for Parquet), reason code, message and raw text.

Timestamps: ISO-8601 strings must carry a zone (`Z` or `+08:00`); one without a zone is rejected
(`bad_timestamp`) rather than guessed. Numbers and numeric strings are epoch seconds, or
milliseconds when their magnitude is >= 1e11. Typed Parquet timestamps without a zone are UTC.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import math
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shopllm import schemas, storage
from shopllm.cleaning import (
    clean_attributes,
    clean_line,
    clean_query,
    clean_text,
    detect_language,
    normalize_category,
)
from shopllm.config import IngestConfig
from shopllm.errors import InputError
from shopllm.hashing import source_hash

CATALOG = "catalog"
EVENTS = "events"
SOURCES = (CATALOG, EVENTS)

ARRIVAL = "_arrival"  # items only: file index << 32 | line, the tie-breaker for equal updated_at

US_PER_S = 1_000_000
_MIN_US = int(dt.datetime(1970, 1, 1, tzinfo=dt.UTC).timestamp()) * US_PER_S
_MAX_US = int(dt.datetime(2100, 1, 1, tzinfo=dt.UTC).timestamp()) * US_PER_S
_NUMERIC = re.compile(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*")


class Reason:
    MISSING_FIELD = "missing_field"
    BAD_TYPE = "bad_type"
    BAD_TIMESTAMP = "bad_timestamp"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    INVALID_UTF8 = "invalid_utf8"
    BAD_JSON = "bad_json"
    NEGATIVE_PRICE = "negative_price"
    TOO_LONG = "too_long"
    EMPTY_TITLE = "empty_title"
    UNKNOWN_ITEM = "unknown_item"

    ALL = (
        "missing_field",
        "bad_type",
        "bad_timestamp",
        "unknown_event_type",
        "invalid_utf8",
        "bad_json",
        "negative_price",
        "too_long",
        "empty_title",
        "unknown_item",
    )


class Rejected(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


# ---- files and chunks ---------------------------------------------------------------------------

FORMATS = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def file_format(path: str) -> str:
    """'jsonl' | 'csv' | 'parquet' from the extension (a trailing .gz is looked through)."""
    name = path.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for ext, fmt in FORMATS.items():
        if name.endswith(ext):
            return fmt
    raise InputError(
        f"cannot tell the format of {path}: expected .jsonl/.json/.ndjson, .csv or .parquet, optionally .gz"
    )


def open_file(path: str) -> IO[bytes]:
    """The raw bytes of a local file or an object (s3://, gs://) through the storage layer, buffered (the
    readers iterate lines; pyarrow's own files do not)."""
    return io.BufferedReader(storage.open_input(path), buffer_size=1 << 20)


@dataclass
class Chunk:
    """Up to `batch_rows` raw records of one file: the element that flows through the pipeline."""

    source: str
    file: str
    file_index: int
    fmt: str
    lines: list[int] = field(default_factory=list)  # 1-based line, or 0-based Parquet row
    raws: list = field(default_factory=list)  # jsonl: bytes; csv: str; parquet: None (rebuilt for rejects)
    objs: list = field(default_factory=list)  # csv/parquet: the record as a dict; jsonl: None (parsed later)

    def __len__(self) -> int:
        return len(self.lines)

    def __getstate__(self):
        # shipped between workers: JSON lines hold no newline byte, so one zstd blob is exact and ~4x smaller
        state = dict(self.__dict__)
        if self.fmt == "jsonl":
            blob = b"\n".join(self.raws)
            state["raws"] = (len(blob), pa.compress(blob, codec="zstd", asbytes=True))
            state["objs"] = len(self.objs)
        return state

    def __setstate__(self, state):
        if state["fmt"] == "jsonl":
            size, blob = state["raws"]
            data = pa.decompress(blob, size, codec="zstd", asbytes=True) if size else b""
            state["raws"] = data.split(b"\n") if state["lines"] else []
            state["objs"] = [None] * state["objs"]
        self.__dict__.update(state)


def read_chunks(
    source: str, path: str, file_index: int, batch_rows: int, opener: Callable[[str], IO[bytes]] = open_file
) -> Iterator[Chunk]:
    """Split one input file into chunks of raw records, keeping line (or row) numbers."""
    fmt = file_format(path)
    with opener(path) as raw:
        # zlib through GzipFile: Beam's own decompressing reader is not iterable and reads lines in Python
        f = gzip.GzipFile(fileobj=raw, mode="rb") if path.lower().endswith(".gz") else raw
        if fmt == "jsonl":
            yield from _jsonl_chunks(source, path, file_index, batch_rows, f)
        elif fmt == "csv":
            yield from _csv_chunks(source, path, file_index, batch_rows, f)
        else:
            yield from _parquet_chunks(source, path, file_index, batch_rows, f)


def _jsonl_chunks(source, path, file_index, batch_rows, f) -> Iterator[Chunk]:
    chunk = Chunk(source, path, file_index, "jsonl")
    for line_no, line in enumerate(f, 1):
        line = line.rstrip(b"\r\n")
        if not line.strip():
            continue  # a blank line is not a record
        chunk.lines.append(line_no)
        chunk.raws.append(line)
        chunk.objs.append(None)
        if len(chunk) >= batch_rows:
            yield chunk
            chunk = Chunk(source, path, file_index, "jsonl")
    if len(chunk):
        yield chunk


def _csv_chunks(source, path, file_index, batch_rows, f) -> Iterator[Chunk]:
    text = io.TextIOWrapper(f, encoding="utf-8", errors="surrogateescape", newline="")
    consumed: list[str] = []  # the physical lines of the record being parsed (a quoted field may span lines)

    def lines():
        for line in text:
            consumed.append(line)
            yield line

    reader = csv.reader(lines())
    header = next(reader, None)
    if header is None:
        return
    header = [h.strip().lstrip("\ufeff") for h in header]
    consumed.clear()
    chunk = Chunk(source, path, file_index, "csv")
    line_no = 2
    for row in reader:
        raw = "".join(consumed).rstrip("\r\n")
        start, line_no = line_no, line_no + len(consumed)
        consumed.clear()
        if not row or not any(cell.strip() for cell in row):
            continue
        chunk.lines.append(start)
        chunk.raws.append(raw)
        chunk.objs.append(dict(zip(header, (cell if cell != "" else None for cell in row))))
        if len(chunk) >= batch_rows:
            yield chunk
            chunk = Chunk(source, path, file_index, "csv")
    if len(chunk):
        yield chunk


def _parquet_chunks(source, path, file_index, batch_rows, f) -> Iterator[Chunk]:
    if not f.seekable():
        f = io.BytesIO(f.read())
    row = 0
    for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_rows):
        n = batch.num_rows
        yield Chunk(source, path, file_index, "parquet", list(range(row, row + n)), [None] * n, batch.to_pylist())
        row += n


# ---- decoding one raw record ----------------------------------------------------------------------


def _raw_text(chunk: Chunk, i: int) -> str:
    raw = chunk.raws[i]
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "backslashreplace")
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return json.dumps(chunk.objs[i], ensure_ascii=False, default=str)


def _record(chunk: Chunk, i: int) -> dict:
    """The record as a dict, or Rejected(bad_json / invalid_utf8 / bad_type)."""
    if chunk.fmt == "jsonl":
        try:
            text = chunk.raws[i].decode("utf-8")
        except UnicodeDecodeError as e:
            raise Rejected(Reason.INVALID_UTF8, f"invalid UTF-8 at byte {e.start}") from None
        try:
            obj = json.loads(text)
        except ValueError as e:
            raise Rejected(Reason.BAD_JSON, f"not JSON: {e}") from None
        if not isinstance(obj, dict):
            raise Rejected(Reason.BAD_TYPE, f"expected a JSON object, got {type(obj).__name__}")
        return obj
    obj = chunk.objs[i]
    if chunk.fmt == "csv" and _has_surrogate(chunk.raws[i]):
        raise Rejected(Reason.INVALID_UTF8, "invalid UTF-8 in the CSV row")
    return obj


def _has_surrogate(s: str) -> bool:
    try:
        s.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _id(obj: dict, name: str, required: bool) -> str | None:
    v = obj.get(name)
    if isinstance(v, str):
        v = v.strip()
        if _has_surrogate(v):
            raise Rejected(Reason.INVALID_UTF8, f"{name} is not valid UTF-8")
    elif isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    elif v is not None:
        raise Rejected(Reason.BAD_TYPE, f"{name} must be a string, got {type(v).__name__}")
    if not v:
        if required:
            raise Rejected(Reason.MISSING_FIELD, f"{name} is missing")
        return None
    return v


def _text(obj: dict, name: str, required: bool = False) -> str | None:
    v = obj.get(name)
    if v is None or v == "":
        if required:
            raise Rejected(Reason.MISSING_FIELD, f"{name} is missing")
        return None
    if not isinstance(v, str):
        raise Rejected(Reason.BAD_TYPE, f"{name} must be a string, got {type(v).__name__}")
    return v


def parse_price(v) -> float | None:
    if v is None or v == "":
        return None
    if isinstance(v, str) and _NUMERIC.fullmatch(v):
        v = float(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise Rejected(Reason.BAD_TYPE, f"price must be a number, got {v!r:.40}")
    if v < 0:
        raise Rejected(Reason.NEGATIVE_PRICE, f"price {v} is negative")
    return float(v)


def parse_ts(v) -> int:
    """Microseconds since the epoch (UTC) from ISO-8601 with zone, epoch s/ms, or a datetime."""
    if isinstance(v, str) and _NUMERIC.fullmatch(v):
        v = float(v)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if not math.isfinite(v):
            raise Rejected(Reason.BAD_TIMESTAMP, f"timestamp {v} is not finite")
        us = int(round(v * (1_000 if abs(v) >= 1e11 else US_PER_S)))
    elif isinstance(v, str):
        try:
            d = dt.datetime.fromisoformat(v.strip())
        except ValueError:
            raise Rejected(Reason.BAD_TIMESTAMP, f"cannot parse timestamp {v!r:.60}") from None
        if d.tzinfo is None:
            raise Rejected(Reason.BAD_TIMESTAMP, f"timestamp {v!r:.60} has no time zone")
        us = _datetime_us(d)
    elif isinstance(v, dt.datetime):
        us = _datetime_us(v if v.tzinfo else v.replace(tzinfo=dt.UTC))
    else:
        raise Rejected(Reason.BAD_TIMESTAMP, f"timestamp must be a string or number, got {type(v).__name__}")
    if not _MIN_US <= us < _MAX_US:
        raise Rejected(Reason.BAD_TIMESTAMP, f"timestamp {v!r:.60} is outside 1970..2100")
    return us


def _datetime_us(d: dt.datetime) -> int:
    delta = d - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * US_PER_S + delta.microseconds


def _attributes(v) -> dict:
    if v is None or v == "":
        return {}
    if isinstance(v, str):  # CSV carries the object as a JSON string
        try:
            v = json.loads(v)
        except ValueError:
            raise Rejected(Reason.BAD_TYPE, "attributes is not a JSON object") from None
    if isinstance(v, list) and all(isinstance(p, (tuple, list)) and len(p) == 2 for p in v):
        v = dict(v)  # a Parquet map column reads as (key, value) pairs
    if not isinstance(v, dict):
        raise Rejected(Reason.BAD_TYPE, f"attributes must be an object, got {type(v).__name__}")
    out = {}
    for key, value in v.items():
        if value is None:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(key, str) or not isinstance(value, str):
            raise Rejected(Reason.BAD_TYPE, f"attribute {key!r:.30} must map to a string, got {type(value).__name__}")
        out[key] = value
    return out


# ---- reject rows --------------------------------------------------------------------------------


class RejectRows:
    """Column lists for a REJECTS table, filled one reject at a time."""

    def __init__(self):
        self.cols = {name: [] for name in schemas.REJECTS.names}

    def add(self, source: str, file: str, line: int, reason: str, message: str, raw: str) -> None:
        for name, value in zip(schemas.REJECTS.names, (source, file, line, reason, message, raw)):
            self.cols[name].append(value)

    def table(self) -> pa.Table:
        return pa.table(self.cols, schema=schemas.REJECTS)


def count_reasons(rejects: pa.Table) -> dict[str, int]:
    if rejects.num_rows == 0:
        return {}
    counts = pc.value_counts(rejects["reason"]).to_pylist()
    return {c["values"]: c["counts"] for c in counts}


def arrival(file_index: int, line: int) -> int:
    return (file_index << 32) | line


# ---- catalog ------------------------------------------------------------------------------------

ITEMS_WITH_ARRIVAL = schemas.ITEMS.append(pa.field(ARRIVAL, pa.int64()))


def _catalog_row(obj: dict, cfg: IngestConfig) -> tuple:
    item_id = _id(obj, "item_id", required=True)
    title_raw = _text(obj, "title", required=True)
    description_raw = _text(obj, "description")
    category_raw, brand_raw, currency_raw = _text(obj, "category"), _text(obj, "brand"), _text(obj, "currency")
    attributes_raw = _attributes(obj.get("attributes"))
    if description_raw and len(description_raw) > cfg.max_description_chars:
        raise Rejected(
            Reason.TOO_LONG, f"description has {len(description_raw)} characters (max {cfg.max_description_chars})"
        )
    price = parse_price(obj.get("price"))
    updated = obj.get("updated_at")
    updated_us = None if updated is None or updated == "" else parse_ts(updated)
    title = clean_line(title_raw)
    if not title:
        raise Rejected(Reason.EMPTY_TITLE, "title is empty after cleaning")
    description = clean_text(description_raw) or None
    category = normalize_category(category_raw) or None
    brand = clean_line(brand_raw) or None
    currency = clean_line(currency_raw).upper() or None
    attributes = clean_attributes(attributes_raw)
    return (
        item_id,
        title,
        description,
        category,
        brand,
        price,
        currency,
        attributes,
        detect_language(title),
        updated_us,
        source_hash(title, description, category, brand, attributes, price),
    )


def clean_catalog_chunk(chunk: Chunk, cfg: IngestConfig) -> tuple[pa.Table, pa.Table]:
    """Parse, validate and clean a chunk of catalog records -> (items + _arrival, rejects)."""
    rows, arrivals, rejects = [], [], RejectRows()
    for i, line in enumerate(chunk.lines):
        try:
            rows.append(_catalog_row(_record(chunk, i), cfg))
            arrivals.append(arrival(chunk.file_index, line))
        except Rejected as r:
            rejects.add(CATALOG, chunk.file, line, r.reason, r.message, _raw_text(chunk, i))
    columns = list(zip(*rows)) if rows else [[] for _ in schemas.ITEMS.names]
    arrays = [pa.array(col, type=f.type) for col, f in zip(columns, schemas.ITEMS)]
    arrays.append(pa.array(arrivals, pa.int64()))
    return pa.Table.from_arrays(arrays, schema=ITEMS_WITH_ARRIVAL), rejects.table()


def keep_newest_versions(items: pa.Table) -> tuple[pa.Table, int]:
    """One row per item_id: the newest updated_at (null is oldest), then the latest arrival.

    Takes items with `_arrival`; returns ITEMS rows sorted by item_id and how many older versions were dropped.
    """
    if items.num_rows == 0:
        return items.drop_columns([ARRIVAL]), 0
    items = items.sort_by([("item_id", "ascending"), ("updated_at", "descending"), (ARRIVAL, "descending")])
    first = _group_starts(items["item_id"])
    kept = items.filter(pa.array(first)).drop_columns([ARRIVAL])
    return kept, items.num_rows - kept.num_rows


def _group_starts(*columns) -> np.ndarray:
    """True where a row starts a new run of equal keys (the table is sorted by these columns)."""
    n = len(columns[0])
    starts = np.zeros(n, dtype=bool)
    if n:
        starts[0] = True
    for col in columns:
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if n > 1:
            differs = pc.not_equal(col.slice(1), col.slice(0, n - 1))
            differs = pc.fill_null(differs, True) if differs.null_count else differs
            starts[1:] |= differs.to_numpy(zero_copy_only=False)
    return starts


# ---- events -------------------------------------------------------------------------------------

_EVENT_TYPES = frozenset(schemas.EVENT_TYPES)


def _event_row(obj: dict) -> tuple:
    event_id = _id(obj, "event_id", required=False)
    user_id = _id(obj, "user_id", required=True)
    session_id = _id(obj, "session_id", required=False)
    event_type = obj.get("event_type")
    if event_type is None or event_type == "":
        raise Rejected(Reason.MISSING_FIELD, "event_type is missing")
    if not isinstance(event_type, str):
        raise Rejected(Reason.BAD_TYPE, f"event_type must be a string, got {type(event_type).__name__}")
    event_type = event_type.strip().lower()
    if event_type not in _EVENT_TYPES:
        raise Rejected(Reason.UNKNOWN_EVENT_TYPE, f"unknown event_type {event_type!r:.40}")
    ts_raw = obj.get("ts")
    if ts_raw is None or ts_raw == "":
        raise Rejected(Reason.MISSING_FIELD, "ts is missing")
    if event_type == "search":
        query = clean_query(_text(obj, "query", required=True))
        if not query:
            raise Rejected(Reason.MISSING_FIELD, "query is empty after cleaning")
        item_id = None
    else:
        item_id = _id(obj, "item_id", required=True)
        query = None
    return event_id, user_id, session_id, event_type, item_id, query, parse_ts(ts_raw)


def clean_events_chunk(chunk: Chunk, known_item_ids: pa.Array | None = None) -> tuple[pa.Table, pa.Table]:
    """Parse and validate a chunk of events -> (EVENTS rows, rejects).

    With `known_item_ids` (the kept catalog ids), events for other items are rejected as unknown_item.
    """
    rows, arrivals, kept_index, rejects = [], [], [], RejectRows()
    for i, line in enumerate(chunk.lines):
        try:
            rows.append(_event_row(_record(chunk, i)))
            arrivals.append(arrival(chunk.file_index, line))
            kept_index.append(i)
        except Rejected as r:
            rejects.add(EVENTS, chunk.file, line, r.reason, r.message, _raw_text(chunk, i))
    columns = list(zip(*rows)) if rows else [[] for _ in range(7)]
    arrays = [pa.array(col, type=f.type) for col, f in zip(columns, schemas.EVENTS)]
    arrays.append(pa.array(arrivals, pa.int64()))
    events = pa.Table.from_arrays(arrays, schema=schemas.EVENTS)
    if known_item_ids is not None and events.num_rows:
        item_ids = events["item_id"]
        unknown = pc.and_(pc.invert(pc.is_in(item_ids, value_set=known_item_ids)), pc.is_valid(item_ids))
        for row in np.flatnonzero(unknown.to_numpy(zero_copy_only=False)).tolist():
            i = kept_index[row]
            rejects.add(
                EVENTS,
                chunk.file,
                chunk.lines[i],
                Reason.UNKNOWN_ITEM,
                f"item {rows[row][4]!r:.60} is not in the catalog",
                _raw_text(chunk, i),
            )
        events = events.filter(pc.invert(unknown))
    return events, rejects.table()


def drop_duplicate_events(events: pa.Table) -> tuple[pa.Table, int]:
    """Keep the first arrival of each (user_id, event_id); events without an event_id are all kept.

    A duplicate is the same event sent twice, so it carries the same user: keying by user as well
    lets the pipeline drop duplicates inside its per-user shards without another shuffle.
    """
    if events.num_rows == 0 or events["event_id"].null_count == events.num_rows:
        return events, 0
    events = events.sort_by([("user_id", "ascending"), ("event_id", "ascending"), ("arrival", "ascending")])
    keep = _group_starts(events["user_id"], events["event_id"]) | pc.is_null(events["event_id"]).to_numpy(
        zero_copy_only=False
    )
    kept = events.filter(pa.array(keep))
    return kept, events.num_rows - kept.num_rows


def assign_sessions(events: pa.Table, gap_minutes: int) -> pa.Table:
    """Fill missing session_ids: a user's events without one split where the gap exceeds `gap_minutes`.

    The derived id is f"{user_id}:{epoch seconds of the session's first event}". Returns the events
    sorted by (user_id, ts, arrival).
    """
    events = events.sort_by([("user_id", "ascending"), ("ts", "ascending"), ("arrival", "ascending")])
    session = events["session_id"]
    if session.null_count == 0:
        return events
    missing = np.flatnonzero(pc.is_null(session).to_numpy(zero_copy_only=False))
    users = events["user_id"].take(missing).combine_chunks()
    ts = events["ts"].take(missing).combine_chunks().cast(pa.int64()).to_numpy()
    new = _group_starts(users)
    new[1:] |= np.diff(ts) > gap_minutes * 60 * US_PER_S
    starts = np.flatnonzero(new)
    start_users = users.take(pa.array(starts)).to_pylist()
    names = np.array([f"{u}:{t // US_PER_S}" for u, t in zip(start_users, ts[starts].tolist())], dtype=object)
    filled = session.to_numpy(zero_copy_only=False).astype(object)
    filled[missing] = names[np.cumsum(new) - 1]
    return events.set_column(events.schema.get_field_index("session_id"), "session_id", pa.array(filled, pa.string()))


def sessions_of(events: pa.Table) -> pa.Table:
    """One SESSIONS row per (user_id, session_id), lists in (ts, arrival) order; sorted by user, start, id."""
    if events.num_rows == 0:
        return schemas.SESSIONS.empty_table()
    events = events.sort_by(
        [("user_id", "ascending"), ("session_id", "ascending"), ("ts", "ascending"), ("arrival", "ascending")]
    )
    starts = np.flatnonzero(_group_starts(events["user_id"], events["session_id"]))
    offsets = pa.array(np.append(starts, events.num_rows).astype(np.int32))
    ends = pa.array(np.append(starts[1:], events.num_rows) - 1)
    first = pa.array(starts)

    def lists(name):
        return pa.ListArray.from_arrays(offsets, events[name].combine_chunks())

    sessions = pa.table(
        {
            "session_id": events["session_id"].take(first),
            "user_id": events["user_id"].take(first),
            "start_ts": events["ts"].take(first),
            "end_ts": events["ts"].take(ends),
            "n_events": pa.array(np.diff(np.append(starts, events.num_rows)).astype(np.int32)),
            "event_types": lists("event_type"),
            "item_ids": lists("item_id"),
            "queries": lists("query"),
        },
        schema=schemas.SESSIONS,
    )
    return sessions.sort_by([("user_id", "ascending"), ("start_ts", "ascending"), ("session_id", "ascending")])


# ---- sharding -----------------------------------------------------------------------------------


def shard_keys(column, shards: int, fallback: np.ndarray | None = None) -> np.ndarray:
    """A stable shard (crc32 of the value % shards) per row; null values take `fallback` (or 0).

    Python's hash() is salted per process, so it cannot place keys on separate workers consistently.
    """
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    encoded = column.dictionary_encode()
    per_value = np.array(
        [zlib.crc32(v.encode("utf-8")) % shards for v in encoded.dictionary.to_pylist()] or [0], dtype=np.int64
    )
    indices = encoded.indices
    out = per_value[pc.fill_null(indices, 0).to_numpy(zero_copy_only=False).astype(np.int64)]
    if indices.null_count:
        nulls = pc.is_null(indices).to_numpy(zero_copy_only=False)
        out[nulls] = 0 if fallback is None else fallback[nulls] % shards
    return out


def split_by_shard(table: pa.Table, keys: np.ndarray) -> list[tuple[int, pa.Table]]:
    """[(shard, rows of that shard)] for the shards present, in shard order."""
    if table.num_rows == 0:
        return []
    order = np.argsort(keys, kind="stable")
    table = table.take(pa.array(order))
    sorted_keys = keys[order]
    bounds = np.flatnonzero(np.diff(sorted_keys)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(keys)]])
    return [(int(sorted_keys[s]), table.slice(s, e - s)) for s, e in zip(starts, ends)]


def sort_rejects(rejects: pa.Table) -> pa.Table:
    return rejects.sort_by([("file", "ascending"), ("line", "ascending")])


def concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    tables = [t for t in tables if t.num_rows]
    return pa.concat_tables(tables).combine_chunks() if tables else schema.empty_table()
