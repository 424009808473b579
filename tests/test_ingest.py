import datetime as dt
import gzip
import json
import zlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shopllm import ingest, schemas
from shopllm.config import IngestConfig
from shopllm.hashing import source_hash_of
from shopllm.ingest import Reason, Rejected

UTC = dt.UTC
CFG = IngestConfig(max_description_chars=100)


def us(*args) -> int:
    return ingest._datetime_us(dt.datetime(*args, tzinfo=UTC))


def jsonl_chunk(source, records, file="f.jsonl", file_index=0):
    lines = [
        r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)).encode()
        for r in records
    ]
    return ingest.Chunk(source, file, file_index, "jsonl", list(range(1, len(lines) + 1)), lines, [None] * len(lines))


def item(item_id="i1", **kw):
    return {"item_id": item_id, "title": "Earbuds", "price": 10, "updated_at": "2024-05-01T00:00:00Z", **kw}


def event(event_id, user="u1", ts="2024-05-01T10:00:00Z", **kw):
    return {"event_id": event_id, "user_id": user, "event_type": "view", "item_id": "i1", "ts": ts, **kw}


# ---- timestamps -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "2024-05-01T10:00:00Z",
        "2024-05-01T18:00:00+08:00",
        "2024-05-01 10:00:00+00:00",
        1714557600,
        1714557600.0,
        "1714557600",
        1714557600000,
        "1714557600000",
        dt.datetime(2024, 5, 1, 10),
    ],
)
def test_timestamp_forms_parse_to_utc(raw):
    assert ingest.parse_ts(raw) == us(2024, 5, 1, 10)


@pytest.mark.parametrize("raw", ["2024-05-01T10:00:00", "yesterday", "", [1], True, float("nan"), 99999999999999999])
def test_bad_timestamps_are_rejected(raw):
    with pytest.raises(Rejected) as e:
        ingest.parse_ts(raw)
    assert e.value.reason == Reason.BAD_TIMESTAMP


# ---- reading chunks ---------------------------------------------------------------------------


def test_jsonl_chunks_keep_line_numbers_and_skip_blank_lines(tmp_path):
    path = tmp_path / "e.jsonl.gz"
    with gzip.open(path, "wb") as f:
        f.write(b'{"a": 1}\n\n{"a": 2}\r\n{"a": 3}')
    chunks = list(ingest.read_chunks("events", str(path), 3, batch_rows=2))
    assert [c.lines for c in chunks] == [[1, 3], [4]]
    assert chunks[0].raws == [b'{"a": 1}', b'{"a": 2}'] and chunks[0].file_index == 3


def test_csv_chunks_report_the_first_line_of_multiline_records(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('item_id,title,attributes\ni1,"two\nlines","{""color"": ""red""}"\ni2,,\n')
    (chunk,) = ingest.read_chunks("catalog", str(path), 0, batch_rows=10)
    assert chunk.lines == [2, 4]
    assert chunk.objs[0] == {"item_id": "i1", "title": "two\nlines", "attributes": '{"color": "red"}'}
    assert chunk.objs[1] == {"item_id": "i2", "title": None, "attributes": None}
    assert chunk.raws[1] == "i2,,"


def test_parquet_chunks_count_rows_from_zero(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"item_id": ["a", "b", "c"]}), path)
    chunks = list(ingest.read_chunks("catalog", str(path), 0, batch_rows=2))
    assert [c.lines for c in chunks] == [[0, 1], [2]]
    assert chunks[1].objs == [{"item_id": "c"}]


@pytest.mark.parametrize(
    "fmt, raws, objs",
    [("jsonl", [b'{"a": 1}', b"\xff{"], [None, None]), ("jsonl", [], []), ("csv", ['a,"b\nc"'], [{"a": "b\nc"}])],
)
def test_chunks_survive_pickling_between_workers(fmt, raws, objs):
    import pickle

    chunk = ingest.Chunk("events", "f", 1, fmt, list(range(1, len(raws) + 1)), raws, objs)
    assert pickle.loads(pickle.dumps(chunk)) == chunk


def test_unknown_extension_is_an_input_error():
    with pytest.raises(ingest.InputError):
        ingest.file_format("catalog.xml")


# ---- catalog ------------------------------------------------------------------------------------


def test_catalog_record_is_cleaned():
    raw = item(
        title="<b>无线耳机</b> 🎧",
        description="<p>好&amp;便宜</p><ul><li>蓝牙</li></ul>",
        category="数码 / 耳机",
        brand=" Sony ",
        currency="cny",
        attributes={"颜色 ": "<i>黑色</i>", "n": 2},
        price="199.5",
        updated_at=1714521600000,
    )
    items, rejects = ingest.clean_catalog_chunk(jsonl_chunk("catalog", [raw]), CFG)
    assert rejects.num_rows == 0
    row = items.drop_columns([ingest.ARRIVAL]).to_pylist()[0]
    assert row == {
        "item_id": "i1",
        "title": "无线耳机 🎧",
        "description": "好&便宜\n蓝牙",
        "category": "数码 > 耳机",
        "brand": "Sony",
        "price": 199.5,
        "currency": "CNY",
        "attributes": [("n", "2"), ("颜色", "黑色")],
        "language": "zh",
        "updated_at": dt.datetime(2024, 5, 1, tzinfo=UTC),
        "source_hash": row["source_hash"],
    }
    assert len(row["source_hash"]) == 16
    assert source_hash_of({**row, "source_hash": None}) == row["source_hash"]  # one algorithm for both


@pytest.mark.parametrize(
    "record, reason",
    [
        (b'{"item_id": "i\xff", "title": "x"}', Reason.INVALID_UTF8),
        ("{not json", Reason.BAD_JSON),
        ("[1, 2]", Reason.BAD_TYPE),
        ({"title": "x"}, Reason.MISSING_FIELD),
        (item(title=None), Reason.MISSING_FIELD),
        (item(title=["x"]), Reason.BAD_TYPE),
        (item(price="ten"), Reason.BAD_TYPE),
        (item(attributes="red"), Reason.BAD_TYPE),
        (item(attributes={"c": {"nested": 1}}), Reason.BAD_TYPE),
        (item(updated_at="2024-05-01 10:00"), Reason.BAD_TIMESTAMP),
        (item(price=-0.01), Reason.NEGATIVE_PRICE),
        (item(description="x" * 101), Reason.TOO_LONG),
        (item(title=" <br/> &nbsp; "), Reason.EMPTY_TITLE),
    ],
)
def test_catalog_rejects(record, reason):
    items, rejects = ingest.clean_catalog_chunk(jsonl_chunk("catalog", [item("ok"), record]), CFG)
    assert items["item_id"].to_pylist() == ["ok"]
    (rej,) = rejects.to_pylist()
    assert (rej["source"], rej["file"], rej["line"], rej["reason"]) == ("catalog", "f.jsonl", 2, reason)
    assert rej["message"] and rej["raw"]


def test_invalid_utf8_raw_is_kept_with_escapes():
    _, rejects = ingest.clean_catalog_chunk(jsonl_chunk("catalog", [b'{"title": "\xff"}']), CFG)
    assert rejects["raw"].to_pylist() == ['{"title": "\\xff"}']


def test_newest_version_wins_then_latest_arrival():
    chunk = jsonl_chunk(
        "catalog",
        [
            item("a", title="old", updated_at="2024-05-01T00:00:00Z"),
            item("a", title="new", updated_at="2024-05-01T09:00:00+08:00"),  # 01:00 UTC: newer
            item("a", title="older", updated_at="2024-04-01T00:00:00Z"),
            item("b", title="first", updated_at=None),
            item("b", title="second", updated_at=None),
        ],
    )
    items, _ = ingest.clean_catalog_chunk(chunk, CFG)
    kept, superseded = ingest.keep_newest_versions(items)
    assert kept.column_names == schemas.ITEMS.names
    assert list(zip(kept["item_id"].to_pylist(), kept["title"].to_pylist())) == [("a", "new"), ("b", "second")]
    assert superseded == 3


# ---- events -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record, reason",
    [
        ({"event_id": "x", "event_type": "view", "item_id": "i1", "ts": 1714521600}, Reason.MISSING_FIELD),
        (event("x", event_type="teleport"), Reason.UNKNOWN_EVENT_TYPE),
        (event("x", event_type=None), Reason.MISSING_FIELD),
        (event("x", item_id=None), Reason.MISSING_FIELD),
        (event("x", event_type="search", query=" \x00 \t "), Reason.MISSING_FIELD),
        (event("x", user_id=["u"]), Reason.BAD_TYPE),
        (event("x", ts="2024-05-01T10:00:00"), Reason.BAD_TIMESTAMP),
        (event("x", item_id="ghost"), Reason.UNKNOWN_ITEM),
        ("nope", Reason.BAD_JSON),
    ],
)
def test_event_rejects(record, reason):
    events, rejects = ingest.clean_events_chunk(jsonl_chunk("events", [event("ok"), record]), pa.array(["i1"]))
    assert events["event_id"].to_pylist() == ["ok"]
    assert rejects.select(["line", "reason"]).to_pylist() == [{"line": 2, "reason": reason}]


def test_event_fields_are_normalised():
    records = [
        event(7, user_id=42, event_type=" View "),
        event("s", event_type="search", item_id="i1", query="Wireless  EARBUDS", ts=1714557600123),
    ]
    events, rejects = ingest.clean_events_chunk(jsonl_chunk("events", records, file_index=2), pa.array(["i1"]))
    assert rejects.num_rows == 0
    rows = events.to_pylist()
    assert rows[0]["event_id"] == "7" and rows[0]["user_id"] == "42" and rows[0]["event_type"] == "view"
    assert rows[1]["item_id"] is None and rows[1]["query"] == "wireless earbuds"
    assert rows[1]["ts"] == dt.datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=UTC)
    assert rows[1]["arrival"] == (2 << 32) | 2


def test_duplicate_event_ids_keep_the_first_arrival():
    records = [event("a", item_id="i1"), event("b"), event("a", item_id="i2"), event(None), event(None)]
    events, _ = ingest.clean_events_chunk(jsonl_chunk("events", records), None)
    kept, dropped = ingest.drop_duplicate_events(events)
    assert dropped == 1
    assert sorted(zip(kept["event_id"].to_pylist(), kept["arrival"].to_pylist()), key=str) == sorted(
        [("a", 1), ("b", 2), (None, 4), (None, 5)], key=str
    )


def _events_table(rows):
    return pa.Table.from_pylist(
        [
            {"event_id": None, "session_id": None, "event_type": "view", "item_id": "i1", "query": None, **r}
            for r in rows
        ],
        schema=schemas.EVENTS,
    )


def test_sessions_split_after_a_30_minute_gap_and_span_midnight():
    t0 = dt.datetime(2024, 5, 1, 23, 40, tzinfo=UTC)
    minutes = [0, 30, 55, 85, 116]  # gaps: 30 (same), 25 (same, past midnight), 30 (same), 31 (new)
    rows = [{"user_id": "u1", "ts": t0 + dt.timedelta(minutes=m), "arrival": i} for i, m in enumerate(minutes)]
    rows.append({"user_id": "u2", "ts": t0, "arrival": 9})
    events = ingest.assign_sessions(_events_table(rows), gap_minutes=30)
    first = int(t0.timestamp())
    later = first + 116 * 60
    assert events["session_id"].to_pylist() == [f"u1:{first}"] * 4 + [f"u1:{later}", f"u2:{first}"]
    sessions = ingest.sessions_of(events)
    assert sessions.select(["session_id", "n_events"]).to_pylist() == [
        {"session_id": f"u1:{first}", "n_events": 4},
        {"session_id": f"u1:{later}", "n_events": 1},
        {"session_id": f"u2:{first}", "n_events": 1},
    ]
    assert sessions["start_ts"][0].as_py() == t0 and sessions["end_ts"][0].as_py() == t0 + dt.timedelta(minutes=85)


def test_given_session_ids_group_events_in_time_then_arrival_order():
    t = dt.datetime(2024, 5, 1, 10, tzinfo=UTC)
    rows = [
        {"user_id": "u1", "session_id": "s1", "ts": t + dt.timedelta(hours=5), "arrival": 0, "event_type": "purchase"},
        {
            "user_id": "u1",
            "session_id": "s1",
            "ts": t,
            "arrival": 2,
            "event_type": "search",
            "item_id": None,
            "query": "q",
        },
        {"user_id": "u1", "session_id": "s1", "ts": t, "arrival": 1, "event_type": "click"},
        {"user_id": "u1", "ts": t + dt.timedelta(hours=1), "arrival": 3},
    ]
    events = ingest.assign_sessions(_events_table(rows), gap_minutes=30)
    assert events["session_id"].to_pylist() == ["s1", "s1", f"u1:{int(t.timestamp()) + 3600}", "s1"]
    s1 = [s for s in ingest.sessions_of(events).to_pylist() if s["session_id"] == "s1"][0]
    assert s1["event_types"] == ["click", "search", "purchase"]
    assert s1["item_ids"] == ["i1", None, "i1"] and s1["queries"] == [None, "q", None]
    assert s1["n_events"] == 3


# ---- sharding -----------------------------------------------------------------------------------


def test_shards_are_stable_across_processes():
    keys = ingest.shard_keys(pa.array(["u1", None, "u2", "u1"]), 16, fallback=ingest.np.array([0, 5, 0, 0]))
    assert keys.tolist() == [zlib.crc32(b"u1") % 16, 5, zlib.crc32(b"u2") % 16, zlib.crc32(b"u1") % 16]
    table = pa.table({"k": ["u1", "x", "u2", "u1"]})
    pieces = ingest.split_by_shard(table, keys)
    assert sum(p.num_rows for _, p in pieces) == 4 and [s for s, _ in pieces] == sorted({int(k) for k in keys})
