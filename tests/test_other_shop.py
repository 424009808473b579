"""The second benchmark shop (benchmarks.other_shop): deterministic, clean for the real ingest, and with
searches that repeat, about half of them sharing no word with the item they led to.

The checks read the written files as a user (or the ingest) would.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from benchmarks.other_shop import OtherShopConfig, write_other_shop
from jobs import cli
from shopllm import ingest, storage
from shopllm.schemas import CURATED_ITEMS, REJECTS_CATALOG, REJECTS_EVENTS

SMALL = OtherShopConfig(items=200, users=100, events=4000, days=5)
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("other_shop")
    write_other_shop(root, SMALL)
    return root


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_other_shop(a, SMALL)
    write_other_shop(b, SMALL)
    write_other_shop(c, OtherShopConfig(**{**SMALL.__dict__, "seed": SMALL.seed + 1}))
    first = snapshot(a)
    assert len(first) == 1 + SMALL.days + 1  # catalog, one file per day, manifest
    assert snapshot(b) == first
    assert snapshot(c)["catalog/catalog.jsonl.gz"] != first["catalog/catalog.jsonl.gz"]


def test_every_record_passes_the_real_ingest(shop, tmp_path):
    out, date = tmp_path / "out", SMALL.end_date
    assert (
        cli.main(
            [
                "ingest",
                "--catalog",
                str(shop / "catalog/*.jsonl.gz"),
                "--events",
                str(shop / "events/*.jsonl.gz"),
                "--out",
                str(out),
                "--date",
                date,
                "--shards",
                "2",
            ]
        )
        == 0
    )
    summary = storage.read_json(storage.summary_path(out, date, "ingest"))
    assert summary["catalog"]["read"] == summary["catalog"]["kept"] == SMALL.items
    assert summary["events"]["read"] == summary["events"]["kept"] == SMALL.events
    assert summary["catalog"]["rejected"] == {} and summary["events"]["rejected"] == {}
    for dataset in (REJECTS_CATALOG, REJECTS_EVENTS):
        assert storage.read_partition(out, dataset, date).num_rows == 0
    items = storage.read_partition(out, CURATED_ITEMS, date).to_pylist()
    langs = Counter(r["language"] for r in items)
    assert langs["zh"] > 50 and langs["en"] > 50
    for r in items:  # each product in one language: its category path is in the title's language
        assert bool(CJK.search(r["category"])) == (r["language"] == "zh"), r
        assert 2 <= len(r["attributes"]) <= 4 and r["description"]


def shares_word(query: str, text: str) -> bool:
    """A Chinese query word as a substring of the text, a Latin one as one of its words."""
    text = text.lower()
    words = set(re.findall(r"[\w+'.-]+", text))
    return any(w in text if CJK.search(w) else w in words for w in query.split())


def test_searches_repeat_and_about_half_share_no_word_with_their_target(shop):
    items = {r["item_id"]: r for r in lines(shop / "catalog/catalog.jsonl.gz")}
    by_user = defaultdict(list)
    for path in sorted((shop / "events").glob("events-*.jsonl.gz")):
        for e in lines(path):
            by_user[e["user_id"]].append((ingest.parse_ts(e["ts"]), e))
    searches = []  # (query, the item clicked right after)
    for events in by_user.values():
        events.sort(key=lambda te: te[0])
        for (_, e), (_, nxt) in zip(events, events[1:]):
            if e["event_type"] == "search":
                assert "item_id" not in e and nxt["event_type"] == "click"
                searches.append((e["query"], items[nxt["item_id"]]))
    counts = Counter(q for q, _ in searches)
    assert len(searches) > 150 and sum(1 for n in counts.values() if n >= 3) >= 20
    no_word = 0
    for q, item in searches:
        assert bool(CJK.search(q)) == bool(CJK.search(item["title"])) and (CJK.search(q) or q == q.lower())
        text = " ".join(
            [item["title"], item["category"], item["brand"], *item["attributes"], *item["attributes"].values()]
        )
        no_word += not shares_word(q, text)
    share = no_word / len(searches)
    assert 0.35 <= share <= 0.65, share
    manifest = json.loads((shop / "shop_manifest.json").read_text())
    assert abs(manifest["events"]["searches_with_no_word_of_their_target"] - share) < 0.03


def test_a_minute_clock_floors_every_event_time_so_events_tie(tmp_path):
    write_other_shop(tmp_path, OtherShopConfig(**{**SMALL.__dict__, "clock_s": 60}))
    times = [
        (r["user_id"], ingest.parse_ts(r["ts"]))  # microseconds, read as the ingest reads them
        for path in sorted((tmp_path / "events").glob("*.jsonl.gz"))
        for r in lines(path)
    ]
    assert all(us % 60_000_000 == 0 for _, us in times)
    assert len(set(times)) < len(times)  # some user's events share a minute
