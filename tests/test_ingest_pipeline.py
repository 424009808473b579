import csv
import datetime as dt
import gzip
import io
import json
from pathlib import Path

import apache_beam as beam
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from jobs import cli
from pipelines import ingest as P
from shopllm import ingest, schemas, storage
from shopllm.config import IngestConfig

CFG = IngestConfig(shards=4, batch_rows=3)
DATE = "2024-05-02"


def make_pipeline():
    return BeamTestPipeline(runner=FnApiRunner())  # never let Beam pick (and download) Prism


def item(item_id, **kw):
    return {"item_id": item_id, "title": f"Item {item_id}", "price": 10, "updated_at": "2024-05-01T00:00:00Z", **kw}


def event(event_id, user="u1", item_id="i1", ts="2024-05-01T10:00:00Z", **kw):
    return {"event_id": event_id, "user_id": user, "event_type": "view", "item_id": item_id, "ts": ts, **kw}


def write_jsonl(path: Path, records) -> str:
    data = b"".join(
        (r if isinstance(r, bytes) else json.dumps(r, ensure_ascii=False).encode()) + b"\n" for r in records
    )
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return str(path)


def write_csv(path: Path, records) -> str:
    fields = sorted({k for r in records for k in r})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for r in records:
        writer.writerow({k: json.dumps(v, ensure_ascii=False) if isinstance(v, dict) else v for k, v in r.items()})
    path.write_text(buf.getvalue())
    return str(path)


def chunk(source, records, file="f.jsonl", file_index=0):
    lines = [json.dumps(r).encode() if isinstance(r, dict) else r for r in records]
    return ingest.Chunk(source, file, file_index, "jsonl", list(range(1, len(lines) + 1)), lines, [None] * len(lines))


def rows_of(column):
    return lambda shard_table: shard_table[1][column].to_pylist()


# ---- each transform on tiny inputs --------------------------------------------------------------


def test_read_raw_records_chunks_every_file(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [item("i1"), item("i2"), item("i3"), item("i4")])
    b = write_jsonl(tmp_path / "b.jsonl.gz", [item("i5")])
    with make_pipeline() as p:
        chunks = p | P.ReadRawRecords("catalog", [(0, a), (1, b)], batch_rows=3)
        assert_that(
            chunks | beam.Map(lambda c: (c.file_index, c.lines)), equal_to([(0, [1, 2, 3]), (0, [4]), (1, [1])])
        )


def test_clean_catalog_keeps_newest_and_rejects():
    records = [
        item("a", title="old"),
        item("a", title="new", updated_at="2024-05-02T00:00:00Z"),
        item("b"),
        item("c", price=-5),
        b"{oops",
    ]
    with make_pipeline() as p:
        out = (
            p
            | beam.Create([chunk("catalog", records[:3]), chunk("catalog", records[3:], file_index=1)])
            | P.CleanCatalog(CFG)
        )
        assert_that(
            out["items"] | "Titles" >> beam.FlatMap(rows_of("title")), equal_to(["new", "Item b"]), label="Items"
        )
        assert_that(
            out["rejects"] | "Reasons" >> beam.FlatMap(rows_of("reason")),
            equal_to(["negative_price", "bad_json"]),
            label="Rejects",
        )


def test_clean_events_rejects_unknown_items_and_keys_by_user():
    records = [event("e1"), event("e1"), event("e2", item_id="ghost"), event("e3", user="u2"), event(None)]
    with make_pipeline() as p:
        known = p | "Known" >> beam.Create([pa.array(["i1"])])
        out = (
            p
            | beam.Create([chunk("events", records[:2]), chunk("events", records[2:], file_index=1)])
            | P.CleanEvents(CFG, known)
        )
        users = out["events"] | "Users" >> beam.FlatMap(lambda kv: [(kv[0], u) for u in kv[1]["user_id"].to_pylist()])
        shard = ingest.shard_keys(pa.array(["u1", "u2"]), CFG.shards).tolist()
        assert_that(users, equal_to([(shard[0], "u1")] * 3 + [(shard[1], "u2")]), label="Events")
        assert_that(
            out["rejects"] | "Reasons" >> beam.FlatMap(rows_of("reason")), equal_to(["unknown_item"]), label="Rejects"
        )


def test_build_sessions_drops_duplicates_and_splits_on_the_gap():
    t0 = dt.datetime(2024, 5, 1, 23, 50, tzinfo=dt.UTC)
    plan = [("a", "u1", 0), ("b", "u1", 20), ("b", "u1", 20), ("c", "u1", 60), ("d", "u2", 5)]
    rows = [
        {
            "event_id": e,
            "user_id": u,
            "session_id": None,
            "event_type": "view",
            "item_id": "i1",
            "query": None,
            "ts": t0 + dt.timedelta(minutes=m),
            "arrival": i,
        }
        for i, (e, u, m) in enumerate(plan)
    ]
    table = pa.Table.from_pylist(rows, schema=schemas.EVENTS)
    first = int(t0.timestamp())
    with make_pipeline() as p:
        out = p | beam.Create([(0, table.slice(0, 2)), (0, table.slice(2))]) | P.BuildSessions(gap_minutes=30)
        assert_that(
            out["sessions"]
            | "S" >> beam.FlatMap(lambda kv: [(s["session_id"], s["n_events"]) for s in kv[1].to_pylist()]),
            equal_to([(f"u1:{first}", 2), (f"u1:{first + 3600}", 1), (f"u2:{first + 300}", 1)]),
            label="Sessions",
        )
        assert_that(
            out["events"]
            | "E" >> beam.FlatMap(lambda kv: list(zip(kv[1]["event_id"].to_pylist(), kv[1]["session_id"].to_pylist()))),
            equal_to(
                [("a", f"u1:{first}"), ("b", f"u1:{first}"), ("c", f"u1:{first + 3600}"), ("d", f"u2:{first + 300}")]
            ),
            label="Events",
        )


def test_collect_rejects_and_write_dataset(tmp_path):
    def rejects(lines):
        r = ingest.RejectRows()
        for line in lines:
            r.add("events", "f", line, "bad_json", "m", "raw")
        return r.table()

    with make_pipeline() as p:
        merged = p | beam.Create([(1, rejects([9, 5])), (1, rejects([7])), (2, rejects([2]))]) | P.CollectRejects()
        assert_that(
            merged | "Lines" >> beam.Map(lambda kv: (kv[0], kv[1]["line"].to_pylist())),
            equal_to([(1, [5, 7, 9]), (2, [2])]),
            label="Merged",
        )
        written = merged | P.WriteDataset(str(tmp_path), schemas.REJECTS)
        assert_that(
            written | "Names" >> beam.Map(lambda path: Path(path).name),
            equal_to(["part-00001.parquet", "part-00002.parquet"]),
            label="Written",
        )
    assert pq.read_table(tmp_path / "part-00001.parquet")["line"].to_pylist() == [5, 7, 9]


# ---- the whole command on a feed with every kind of bad record ----------------------------------


def dirty_feed(root: Path) -> tuple[str, str, dict]:
    """Catalog and events in JSONL(.gz), CSV and Parquet with every kind of bad record; returns the expected counts."""
    (root / "catalog").mkdir(parents=True)
    (root / "events").mkdir()
    write_jsonl(
        root / "catalog" / "a.jsonl.gz",
        [
            item("i1", title="<b>无线耳机</b> 🎧", description="<p>call 138-0013-8000</p>"),
            item("i1", title="newer", updated_at="2024-05-01T12:00:00Z"),  # supersedes the line above
            b'{"item_id": "i9", "title": "caf\xe9"}',  # invalid_utf8
            b"{not json",  # bad_json
            {"title": "no id"},  # missing_field
            item("i9", title=42),  # bad_type
            item("i9", updated_at="next tuesday"),  # bad_timestamp
            item("i9", price=-1),  # negative_price
            item("i9", description="<p>" + "x" * 1_000_000 + "</p>"),  # too_long
            item("i9", title="<br/> &nbsp;"),  # empty_title
        ],
    )
    write_csv(
        root / "catalog" / "b.csv",
        [item("i2", attributes={"颜色": "黑色"}, category="数码/耳机"), item("i3", price="abc")],
    )  # bad_type
    pq.write_table(
        pa.table({"item_id": ["i4", "i5"], "title": ["Case", None], "price": [5.0, 1.0]}),
        root / "catalog" / "c.parquet",
    )

    write_jsonl(
        root / "events" / "a.jsonl.gz",
        [
            event("e1"),
            event("e1"),  # a duplicate
            event("e2", event_type="teleport"),  # unknown_event_type
            event("e3", item_id="i5"),  # unknown_item (its catalog row was rejected)
            event("e4", ts="2024-05-01 10:00"),  # bad_timestamp (no zone)
            b'{"user_id": "\xff"}',
            b"nope",
            {"event_id": "e5", "event_type": "view", "ts": 1},  # invalid_utf8, bad_json, missing_field
            event("e6", user=["u"]),  # bad_type
            event(None, event_type="search", item_id=None, query="Wireless EARBUDS", ts=1714557600000),
        ],
    )
    write_csv(
        root / "events" / "b.csv", [event("e7", user="u2", item_id="i2", session_id="s9"), event("e8", ts="soon")]
    )
    pq.write_table(
        pa.table(
            {
                "event_id": ["e9", "e1"],
                "user_id": ["u3", "u1"],
                "event_type": ["purchase", "view"],
                "item_id": ["i4", "i1"],
                "ts": [1714557600, 1714557600],
            }
        ),
        root / "events" / "c.parquet",
    )
    expected = {
        "catalog": {
            "read": 14,
            "kept": 3,
            "deduplicated": 1,
            "rejected": {
                "invalid_utf8": 1,
                "bad_json": 1,
                "missing_field": 2,
                "bad_type": 2,
                "bad_timestamp": 1,
                "negative_price": 1,
                "too_long": 1,
                "empty_title": 1,
            },
        },
        "events": {
            "read": 14,
            "kept": 4,
            "deduplicated": 2,
            "rejected": {
                "unknown_event_type": 1,
                "unknown_item": 1,
                "bad_timestamp": 2,
                "invalid_utf8": 1,
                "bad_json": 1,
                "missing_field": 1,
                "bad_type": 1,
            },
        },
    }
    return str(root / "catalog" / "*"), str(root / "events" / "*"), expected


def run_cli(*args) -> int:
    return cli.main(["ingest", *args])


def test_every_kind_of_bad_record_is_accounted_for(tmp_path, capsys):
    catalog, events, expected = dirty_feed(tmp_path / "in")
    out = tmp_path / "out"
    assert run_cli("--catalog", catalog, "--events", events, "--out", str(out), "--date", DATE, "--shards", "4") == 0
    summary = storage.read_json(storage.summary_path(out, DATE, "ingest"))
    for source, want in expected.items():
        got = summary[source]
        assert {k: got[k] for k in want} == want
        assert got["read"] == got["kept"] + got["deduplicated"] + sum(got["rejected"].values())
    printed = capsys.readouterr().out
    assert "catalog" in printed and "events" in printed and "too_long=1" in printed

    # every published partition is readable by pandas and agrees with the summary
    frames = {ds: pd.read_parquet(storage.partition_dir(out, ds, DATE)) for ds in P.DATASETS}
    assert all(storage.is_published(storage.partition_dir(out, ds, DATE)) for ds in P.DATASETS)
    assert sorted(frames["curated/items"]["item_id"]) == ["i1", "i2", "i4"]
    assert len(frames["curated/events"]) == 4 and len(frames["rejects/events"]) == 8
    assert frames["rejects/catalog"]["reason"].value_counts().to_dict() == expected["catalog"]["rejected"]
    assert frames["rejects/events"]["reason"].value_counts().to_dict() == expected["events"]["rejected"]
    assert set(frames["rejects/events"]["file"].map(lambda f: Path(f).name)) == {"a.jsonl.gz", "b.csv"}
    search = frames["curated/events"].query("event_type == 'search'").iloc[0]
    assert search["query"] == "wireless earbuds" and search["session_id"] == "u1:1714557600"
    assert frames["curated/sessions"]["n_events"].sum() == 4

    by_id = {
        r["item_id"]: r for r in storage.read_partition(out, schemas.CURATED_ITEMS, DATE, schemas.ITEMS).to_pylist()
    }
    assert by_id["i1"]["title"] == "newer"
    assert by_id["i2"]["category"] == "数码 > 耳机" and by_id["i2"]["attributes"] == [("颜色", "黑色")]
    assert by_id["i4"]["language"] == "en" and by_id["i4"]["updated_at"] is None


def test_rerun_replaces_the_partition_with_identical_parquet(tmp_path):
    catalog, events, _ = dirty_feed(tmp_path / "in")
    out = tmp_path / "out"

    def snapshot():
        return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("*/*/dt=*/*.parquet"))}

    assert run_cli("--catalog", catalog, "--events", events, "--out", str(out), "--date", DATE) == 0
    first = snapshot()
    assert run_cli("--catalog", catalog, "--events", events, "--out", str(out), "--date", DATE) == 0
    assert snapshot() == first
    assert not list(out.glob(f"**/{storage.STAGING_PREFIX}*"))


@pytest.mark.parametrize("problem", ["missing", "empty_glob", "bad_extension", "unwritable", "truncated_gzip"])
def test_bad_input_or_output_stops_with_one_line_and_publishes_nothing(tmp_path, capsys, problem):
    catalog, events, _ = dirty_feed(tmp_path / "in")
    out = tmp_path / "out"
    if problem == "missing":
        catalog = str(tmp_path / "nowhere" / "catalog.jsonl")
    elif problem == "empty_glob":
        events = str(tmp_path / "in" / "events" / "*.nothing")
    elif problem == "bad_extension":
        (tmp_path / "in" / "catalog" / "d.xml").write_text("<x/>")
    elif problem == "unwritable":
        out.write_text("a file, not a folder")
    else:  # fails inside the pipeline, after the inputs were checked
        whole = gzip.compress(b"\n".join(json.dumps(event(f"x{i}")).encode() for i in range(2000)))
        (tmp_path / "in" / "events" / "z.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    assert run_cli("--catalog", catalog, "--events", events, "--out", str(out), "--date", DATE) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("shopllm ingest: error:") and "\n" not in err
    assert not list(tmp_path.glob("out/**/_SUCCESS")) and not list(tmp_path.glob("out/**/*.parquet"))
    assert not list(tmp_path.glob(f"out/**/{storage.STAGING_PREFIX}*"))
