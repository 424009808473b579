"""The embedded sample shop: deterministic, the sizes asked for, and the structure a model should learn.

Every check reads the written files the way a user (or the ingest) would; the only thing taken from
the generator is the complement map, which is not part of the data.
"""

from __future__ import annotations

import datetime as dt
import gzip
import html
import json
import re
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from jobs import cli
from shopllm import sample
from shopllm.sample import SampleConfig, write_sample

SMALL = SampleConfig(items=200, users=50, events=5000)
EVENT_TYPES = {"view", "click", "add_to_cart", "purchase", "search"}


def read_lines(path: Path) -> list[bytes]:
    return gzip.decompress(path.read_bytes()).splitlines()


def parse_ts(value) -> int | None:
    """UTC epoch milliseconds of the design's timestamp forms, None when unparseable."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 10**11 else value * 1000
    if isinstance(value, str):
        try:
            d = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
        if d.tzinfo is not None:
            return int(d.timestamp() * 1000)
    return None


def classify_catalog(line: bytes) -> tuple[str | None, dict | None]:
    try:
        rec = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return "invalid_utf8", None
    except ValueError:
        return "not_json", None
    price = rec.get("price")
    if "title" not in rec:
        return "missing_title", rec
    if not re.sub(r"<[^>]*>", "", html.unescape(rec["title"])).strip():
        return "empty_title_after_cleaning", rec
    if not isinstance(price, (int, float)):
        return "wrong_type_price", rec
    if price < 0:
        return "negative_price", rec
    if len(rec.get("description", "").encode()) > 1_000_000:
        return "too_long", rec
    return None, rec


def classify_event(line: bytes, item_ids: set, seen: set) -> tuple[str | None, dict | None]:
    try:
        rec = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return "invalid_utf8", None
    except ValueError:
        return "not_json", None
    if "user_id" not in rec:
        return "missing_user_id", rec
    if rec["event_type"] not in EVENT_TYPES:
        return "unknown_event_type", rec
    if parse_ts(rec["ts"]) is None:
        return "unparseable_ts", rec
    if "item_id" in rec and rec["item_id"] not in item_ids:
        return "unknown_item_id", rec
    if rec["event_id"] in seen:
        return "duplicate_event", rec
    seen.add(rec["event_id"])
    return None, rec


class Shop:
    """The written sample, parsed: newest clean catalog records, clean events, dirty counts."""

    def __init__(self, out: Path):
        self.out = out
        self.manifest = json.loads((out / sample.MANIFEST_FILE).read_text())
        self.catalog_lines = read_lines(out / sample.CATALOG_FILE)
        self.catalog_dirty = Counter()
        self.versions: dict[str, list[dict]] = defaultdict(list)
        for line in self.catalog_lines:
            kind, rec = classify_catalog(line)
            if kind:
                self.catalog_dirty[kind] += 1
            else:
                self.versions[rec["item_id"]].append(rec)
        self.items = {i: max(v, key=lambda r: parse_ts(r["updated_at"])) for i, v in self.versions.items()}
        self.event_files = sorted((out / "events").glob("events-*.jsonl.gz"))
        self.event_dirty = Counter()
        self.events, self.n_event_lines, seen = [], 0, set()
        for f in self.event_files:
            for line in read_lines(f):
                self.n_event_lines += 1
                kind, rec = classify_event(line, set(self.items), seen)
                if kind:
                    self.event_dirty[kind] += 1
                else:
                    rec["ts_ms"] = parse_ts(rec["ts"])
                    rec["file"] = f.name
                    self.events.append(rec)
        self.by_user: dict[str, list[dict]] = defaultdict(list)
        for e in sorted(self.events, key=lambda e: e["ts_ms"]):
            self.by_user[e["user_id"]].append(e)

    def top(self, item_id: str) -> str:
        return sample.top_category(self.items[item_id]["category"])

    def sub(self, item_id: str) -> str:
        return sample.sub_category(self.items[item_id]["category"])

    def words(self, item_id: str) -> str:
        """Everything a query may name: title, category, brand and attribute values."""
        r = self.items[item_id]
        text = " ".join([r["title"], r["category"], r["brand"], *r["attributes"].values()])
        return unicodedata.normalize("NFKC", text).lower()


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Shop:
    out = tmp_path_factory.mktemp("shop")
    write_sample(out, SMALL)
    return Shop(out)


def test_same_seed_gives_byte_identical_files(shop, tmp_path):
    write_sample(tmp_path, SMALL)
    files = sorted(p.relative_to(shop.out) for p in shop.out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for f in files:
        assert (shop.out / f).read_bytes() == (tmp_path / f).read_bytes(), f


def test_another_seed_gives_another_shop(shop, tmp_path):
    write_sample(tmp_path, SampleConfig(items=200, users=50, events=5000, seed=8))
    assert (tmp_path / sample.CATALOG_FILE).read_bytes() != (shop.out / sample.CATALOG_FILE).read_bytes()


def test_sizes_are_respected(shop):
    assert len([i for i in shop.items if i.startswith("P")]) == SMALL.items
    assert shop.n_event_lines == SMALL.events == shop.manifest["events"]["lines"]
    assert len(shop.by_user) == SMALL.users
    names = [f.name for f in shop.event_files]
    assert names == [f"events-{dt.date(2026, 11, 28) - dt.timedelta(days=d)}.jsonl.gz" for d in range(29, -1, -1)]
    for e in shop.events:  # each event sits in the file of its UTC day
        day = dt.datetime.fromtimestamp(e["ts_ms"] / 1000, dt.UTC).date()
        assert e["file"] == f"events-{day}.jsonl.gz"


def test_every_category_is_present_in_both_languages(shop):
    tops = Counter(shop.top(i) for i in shop.items)
    assert len(tops) == len(sample.TAXONOMY) >= 12
    assert {shop.sub(i) for i in shop.items} == {s.name[1] for s in sample.SUBS}
    zh = sum(1 for r in shop.items.values() if re.search(r"[\u4e00-\u9fff]", r["category"])) / len(shop.items)
    assert 0.45 < zh < 0.75


def test_records_have_the_contract_fields(shop):
    for r in shop.items.values():
        assert {
            "item_id",
            "title",
            "description",
            "category",
            "brand",
            "price",
            "currency",
            "attributes",
            "updated_at",
        } <= set(r)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in r["attributes"].items())
        assert parse_ts(r["updated_at"]) is not None
    for e in shop.events:
        assert ("query" in e) == (e["event_type"] == "search") and ("item_id" in e) != ("query" in e)
    forms = Counter(
        "ms"
        if isinstance(e["ts"], int) and e["ts"] >= 10**11
        else "s"
        if isinstance(e["ts"], int)
        else "Z"
        if e["ts"].endswith("Z")
        else "offset"
        for e in shop.events
    )
    assert all(forms[f] > 0.1 * len(shop.events) for f in ("ms", "s", "offset")) and forms["Z"] > 0


def test_descriptions_are_html_in_the_title_language_and_name_every_attribute(shop):
    for r in shop.items.values():
        d = r["description"]
        if len(d) > 100_000:
            continue
        assert re.search(r"<(p|ul|li|br)\b", d)
        text = unicodedata.normalize("NFKC", html.unescape(re.sub(r"<[^>]*>", " ", d)))
        for value in r["attributes"].values():
            assert unicodedata.normalize("NFKC", value) in text
        zh_title = bool(re.search(r"[\u4e00-\u9fff]", r["category"]))
        assert bool(re.search(r"[\u4e00-\u9fff]", text)) == zh_title or r["brand"] in text


def test_some_items_have_newer_versions_that_differ(shop):
    multi = {i: v for i, v in shop.versions.items() if len(v) > 1}
    assert 0.04 < len(multi) / len(shop.items) < 0.2
    for versions in multi.values():
        newest = max(versions, key=lambda r: parse_ts(r["updated_at"]))
        older = [r for r in versions if r is not newest]
        assert all((r["price"], r["title"]) != (newest["price"], newest["title"]) for r in older)


def test_users_concentrate_on_their_top_two_categories(shop):
    shares = []
    for events in shop.by_user.values():
        cats = Counter(shop.top(e["item_id"]) for e in events if "item_id" in e)
        if sum(cats.values()) >= 20:
            shares.append(sum(n for _, n in cats.most_common(2)) / sum(cats.values()))
    uniform = 2 / len(sample.TAXONOMY)
    assert len(shares) > 30
    assert sum(shares) / len(shares) > max(0.6, 4 * uniform)


def test_next_item_is_often_in_the_same_sub_category(shop):
    same = pairs = 0
    subs = Counter()
    for events in shop.by_user.values():
        items = [e["item_id"] for e in events if "item_id" in e]
        subs.update(shop.sub(i) for i in items)
        for a, b in zip(items, items[1:]):
            if a != b:
                pairs += 1
                same += shop.sub(a) == shop.sub(b)
    total = sum(subs.values())
    chance = sum((n / total) ** 2 for n in subs.values())
    assert same / pairs > max(0.4, 5 * chance)


def test_complements_are_bought_after_their_item_far_above_base_rate(shop):
    complement = sample.complement_map(SMALL)
    purchases = {u: [e["item_id"] for e in ev if e["event_type"] == "purchase"] for u, ev in shop.by_user.items()}
    buyers = Counter(i for items in purchases.values() for i in set(items))
    hits = trials = 0
    base = []
    for items in purchases.values():
        for k, item in enumerate(items):
            if item in complement:
                trials += 1
                hits += complement[item] in items[k + 1 :]
                base.append(buyers[complement[item]] / len(purchases))
    assert trials >= 30
    rate, base_rate = hits / trials, sum(base) / len(base)
    assert rate > 0.3 and rate > 3 * base_rate, (rate, base_rate)


def test_queries_name_the_items_clicked_after_them(shop):
    checked = matched = 0
    for events in shop.by_user.values():
        for k, e in enumerate(events):
            if e["event_type"] != "search":
                continue
            click = next((n for n in events[k + 1 :] if n["event_type"] == "click"), None)
            if click is None or click["ts_ms"] - e["ts_ms"] > 10 * 60_000:
                continue
            checked += 1
            words = shop.words(click["item_id"])
            matched += all(w in words for w in e["query"].lower().split())
    assert checked >= 50
    assert matched / checked > 0.98
    counts = Counter(e["query"] for e in shop.events if e["event_type"] == "search")
    assert any(n >= 3 for n in counts.values())


def test_sessions_are_minutes_long_and_hours_apart(shop):
    with_id = [e for e in shop.events if "session_id" in e]
    assert 0.35 < len(with_id) / len(shop.events) < 0.65
    crossing = 0
    for events in shop.by_user.values():
        for a, b in zip(events, events[1:]):
            gap = b["ts_ms"] - a["ts_ms"]
            if a.get("session_id") and a.get("session_id") == b.get("session_id"):
                assert gap < 10 * 60_000
                crossing += a["ts_ms"] // 86_400_000 != b["ts_ms"] // 86_400_000
            elif a.get("session_id") and b.get("session_id"):
                assert gap > 60 * 60_000
    assert crossing >= 1


def test_dirty_records_are_present_in_the_stated_share(shop):
    man = shop.manifest
    assert dict(shop.event_dirty) == {k: n for k, n in man["events"]["dirty"].items() if n}
    assert set(shop.event_dirty) == set(sample.DIRTY_EVENT_KINDS)
    share = sum(shop.event_dirty.values()) / shop.n_event_lines
    assert abs(share - SMALL.dirty_rate) < 0.002
    assert dict(shop.catalog_dirty) == {k: n for k, n in man["catalog"]["dirty"].items() if n}
    assert set(shop.catalog_dirty) == {*sample.DIRTY_CATALOG_KINDS, "too_long"}


def test_exactly_one_description_is_over_a_megabyte(shop):
    long = [line for line in shop.catalog_lines if len(line) > 1_000_000]
    assert len(long) == 1
    assert len(json.loads(long[0])["description"].encode()) > 1_048_576


def test_some_descriptions_need_cleaning(shop):
    descriptions = [r["description"] for r in shop.items.values()]
    titles = [r["title"] for r in shop.items.values()]
    assert sum(bool(re.search(r"[\w.]+@[\w-]+\.\w+", d)) for d in descriptions) >= 2
    assert sum(bool(re.search(r"\d{3}[- ]\d{4}", d)) for d in descriptions) >= 2
    assert sum(bool(re.search(r"[\x00-\x08\x0b-\x1f]", t + d)) for t, d in zip(titles, descriptions)) >= 2
    assert sum(t != unicodedata.normalize("NFKC", t) for t in titles) >= 2
    assert any("&amp;" in d for d in descriptions) and any("&nbsp;" in d for d in descriptions)


def test_zero_dirty_rate_writes_only_the_one_long_description(tmp_path):
    write_sample(tmp_path, SampleConfig(items=60, users=10, events=500, days=3, dirty_rate=0.0))
    clean = Shop(tmp_path)
    assert not clean.event_dirty and dict(clean.catalog_dirty) == {"too_long": 1}


def test_cli_writes_the_files_and_a_summary(tmp_path, capsys):
    args = [
        "sample",
        "--out",
        str(tmp_path),
        "--items",
        "60",
        "--users",
        "10",
        "--events",
        "600",
        "--days",
        "3",
        "--end-date",
        "2026-01-01",
    ]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "60 items" in out and "600 lines" in out
    assert sorted(p.name for p in (tmp_path / "events").iterdir()) == [
        "events-2025-12-30.jsonl.gz",
        "events-2025-12-31.jsonl.gz",
        "events-2026-01-01.jsonl.gz",
    ]
    assert json.loads((tmp_path / "sample_manifest.json").read_text())["catalog"]["items"] == 60


def test_cli_rejects_bad_sizes_with_one_line(tmp_path, capsys):
    assert cli.main(["sample", "--out", str(tmp_path), "--items", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("shopllm sample: error:") and "--items" in err and "\n" not in err
    assert not any(tmp_path.iterdir())


def test_popularity_is_skewed_inside_each_sub_category(shop):
    views = Counter(e["item_id"] for e in shop.events if "item_id" in e)
    per_sub = defaultdict(list)
    for item in shop.items:
        if item.startswith("P"):
            per_sub[shop.sub(item)].append(views[item])
    # the most viewed item against its uniform share (1 / items in the sub-category)
    lift = [max(n) / sum(n) * len(n) for n in per_sub.values() if len(n) >= 4 and sum(n) >= 50]
    assert len(lift) >= 10
    assert sum(lift) / len(lift) > 2
