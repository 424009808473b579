"""The prepare pipeline: the example-building transform on tiny inputs, and `shopllm prepare` end to end."""

import datetime as dt
import random
from collections import Counter
from pathlib import Path

import apache_beam as beam
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected by pytest
from apache_beam.testing.util import assert_that, equal_to

from jobs.cli import main
from pipelines.prepare import BuildExamples, Fanout
from shopllm import hashing, storage, training_rows
from shopllm.config import PrepareConfig
from shopllm.schemas import CURATED_EVENTS, CURATED_ITEMS, CURATED_SESSIONS, EVENTS, ITEMS, SESSIONS, TOKENS
from shopllm.sequences import (
    attribute_sequence,
    attribute_text,
    describe_sequence,
    history_prompt,
    history_sequence,
    search_prompt,
)
from shopllm.slots import BRAND_SLOT, CATEGORY_SLOT, NAME_SLOT, SlotVocab, delexicalize
from shopllm.tokenizer import TextTokenizer
from shopllm.vocab import EOS_ID, ItemVocab
from tests import reference_rows
from tests.reference_rows import Example

DATE = "2024-05-01"
T0 = dt.datetime(2024, 5, 1, 8, tzinfo=dt.UTC)


# ---- tiny curated partitions ---------------------------------------------------------------------


def item(item_id, title, description="", category="数码 > 耳机", brand="Acme", attributes=None, language="zh"):
    return {
        "item_id": item_id,
        "title": title,
        "description": description,
        "category": category,
        "brand": brand,
        "price": 9.9,
        "currency": "CNY",
        "attributes": list((attributes or {}).items()),
        "language": language,
        "updated_at": T0,
        "source_hash": "h",
    }


def event(n, user, session, etype, item_id=None, query=None, minutes=None):
    return {
        "event_id": f"e{n}",
        "user_id": user,
        "session_id": session,
        "event_type": etype,
        "item_id": item_id,
        "query": query,
        "ts": T0 + dt.timedelta(minutes=n if minutes is None else minutes),
        "arrival": n,
    }


def sessions_of(events):
    by_session = {}
    for e in sorted(events, key=lambda e: (e["ts"], e["arrival"])):
        by_session.setdefault(e["session_id"], []).append(e)
    return [
        {
            "session_id": s,
            "user_id": evs[0]["user_id"],
            "start_ts": evs[0]["ts"],
            "end_ts": evs[-1]["ts"],
            "n_events": len(evs),
            "event_types": [e["event_type"] for e in evs],
            "item_ids": [e["item_id"] for e in evs],
            "queries": [e["query"] for e in evs],
        }
        for s, evs in by_session.items()
    ]


def write_curated(out, date, items, events):
    for dataset, schema, rows in (
        (CURATED_ITEMS, ITEMS, items),
        (CURATED_EVENTS, EVENTS, events),
        (CURATED_SESSIONS, SESSIONS, sessions_of(events)),
    ):
        with storage.publishing(out, dataset, date) as tmp:
            storage.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)


ZH_WORDS = ["无线", "蓝牙", "耳机", "降噪", "保温杯", "不锈钢", "键盘", "机械", "鼠标", "静音", "手机壳", "充电器"]
EN_WORDS = ["wireless", "earbuds", "noise", "bottle", "steel", "keyboard", "mouse", "silent", "case", "charger"]


def realistic_shop(n_items=60, n_users=40, seed=7):
    """Items in Chinese and English; users with several sessions of views, searches, clicks and purchases."""
    rng = random.Random(seed)
    items = []
    for k in range(n_items):
        zh = k % 2 == 0
        words = rng.sample(ZH_WORDS if zh else EN_WORDS, 3)
        title = ("" if zh else " ").join(words)
        desc = "".join(rng.choices(ZH_WORDS, k=12)) if zh else " ".join(rng.choices(EN_WORDS, k=12))
        items.append(
            item(
                f"sku-{k:03d}",
                title,
                desc if k % 7 else "",
                language="zh" if zh else "en",
                attributes={"颜色": rng.choice(["黑色", "白色"]), "size": rng.choice(["S", "M", "L"])},
            )
        )
    events, n = [], 0
    for u in range(n_users):
        for s in range(rng.randint(1, 3)):
            session = f"u{u}-s{s}"
            base = u * 1000 + s * 100
            for _ in range(rng.randint(1, 8)):
                n += 1
                if rng.random() < 0.25:
                    events.append(
                        event(
                            n,
                            f"u{u}",
                            session,
                            "search",
                            query=" ".join(rng.sample(ZH_WORDS, 2)),
                            minutes=base + n // 2 % 90,
                        )
                    )  # pairs of events share a minute
                else:
                    etype = rng.choice(["view", "view", "click", "add_to_cart", "purchase"])
                    events.append(
                        event(
                            n,
                            f"u{u}",
                            session,
                            etype,
                            item_id=f"sku-{rng.randrange(n_items):03d}",
                            minutes=base + n // 2 % 90,
                        )
                    )  # pairs of events share a minute
    return items, events


def read_split(out, split, date=DATE):
    return storage.read_partition(out, f"{TOKENS}/{split}", date)


def prepare(out, *extra, config=None):
    args = ["prepare", "--out", str(out), "--date", DATE, *extra]
    if config:
        path = Path(out).parent / "prepare.toml"
        path.write_text("[prepare]\n" + "\n".join(f"{k} = {v}" for k, v in config.items()))
        args += ["--config", str(path)]
    return main(args)


# ---- the example-building transform --------------------------------------------------------------


@pytest.mark.parametrize("spread", [Fanout(), Fanout(user_shards=1, sort_groups=1)])
def test_build_examples_transform_on_tiny_input(tmp_path, spread):
    items = [
        item("a", "蓝牙耳机", "音质好"),
        item("b", "保温杯", "不锈钢"),
        item("c", "键盘", ""),
        item("d", "Mouse", "silent", language="en"),
    ]
    events = [
        event(1, "u1", "s1", "view", "a"),
        event(2, "u1", "s1", "search", query="杯子"),
        event(3, "u1", "s1", "click", "b"),
        event(4, "u1", "s1", "purchase", "c"),
        event(5, "u2", "s2", "view", "d"),
    ]
    tokenizer = TextTokenizer.train(["蓝牙耳机 音质好", "保温杯 不锈钢", "杯子 Mouse silent"] * 5, vocab_size=400)
    tokenizer_path = tokenizer.save(tmp_path / "tokenizer.json")
    vocab = ItemVocab([])
    vocab.extend(["a", "b", "c", "d"])
    vocab.save(tmp_path)
    cfg = PrepareConfig(search_holdout=0.0, describe_holdout=0.0, history_eos=True, catalog_search_rows=False)
    n = tokenizer.n_text
    a, b, c, d = (n + i for i in range(4))

    def describe(token, it):
        attrs = tokenizer.encode(attribute_text(it["title"], it["category"], it["brand"], it["attributes"]))
        return Example(
            "train",
            "describe",
            it["item_id"],
            describe_sequence(token, attrs, tokenizer.encode(it["description"]), cfg.max_describe_tokens),
            None,
            -1,
            [],
        )

    expected = [
        # u1: a, b, c -> valid b, test c; the search "杯子" led to b, a held-out event, so it is not trained on
        Example("valid", "history", "u1", history_prompt([a]), "b", b, [a]),
        Example("test", "history", "u1", history_prompt([a, b]), "c", c, [a, b]),
        Example("train", "history", "u1", history_sequence([a]), None, -1, []),
        Example("train", "history", "u2", history_sequence([d]), None, -1, []),  # short user
        describe(a, items[0]),
        describe(b, items[1]),
        describe(d, items[3]),
        Example(
            "train",
            "describe",
            "c",
            attribute_sequence(
                c,
                tokenizer.encode(
                    attribute_text(items[2]["title"], items[2]["category"], items[2]["brand"], items[2]["attributes"])
                ),
                cfg.max_describe_tokens,
            ),
            None,
            -1,
            [],
        ),  # c has no description: its attribute text alone
    ]
    with BeamTestPipeline(runner=FnApiRunner()) as p:
        tables = p | beam.Create(
            [
                ("items", pa.Table.from_pylist(items, schema=ITEMS)),
                ("events", pa.Table.from_pylist(events, schema=EVENTS)),
            ]
        )
        rows = (
            tables
            | BuildExamples(str(tokenizer_path), str(tmp_path), n, cfg, spread)
            | beam.FlatMap(lambda kv: reference_rows.table_examples(kv[1]))
        )
        assert_that(rows, equal_to(expected))


def test_search_holdout_transform_gives_prompt_rows(tmp_path):
    items = [item("a", "耳机", "好"), item("b", "杯", "好")]
    events = [event(1, "u1", "s1", "search", query="耳机"), event(2, "u1", "s1", "click", "a")]
    tokenizer = TextTokenizer.train(["耳机 杯 好"] * 5, vocab_size=300)
    tokenizer.save(tmp_path / "tokenizer.json")
    vocab = ItemVocab(["a", "b"])
    vocab.save(tmp_path)
    cfg = PrepareConfig(search_holdout=0.999999, describe_holdout=0.0, history_eos=True, catalog_search_rows=False)
    a = tokenizer.n_text
    split = hashing.holdout_split("耳机", cfg.search_holdout)
    with BeamTestPipeline(runner=FnApiRunner()) as p:
        rows = (
            p
            | beam.Create(
                [
                    ("items", pa.Table.from_pylist(items, schema=ITEMS)),
                    ("events", pa.Table.from_pylist(events, schema=EVENTS)),
                ]
            )
            | BuildExamples(str(tmp_path / "tokenizer.json"), str(tmp_path), a, cfg)
            | beam.FlatMap(lambda kv: reference_rows.table_examples(kv[1]))
            | beam.Filter(lambda ex: ex.kind == "search")
        )
        assert_that(
            rows, equal_to([Example(split, "search", "耳机", search_prompt(tokenizer.encode("耳机")), "a", a, [])])
        )


# ---- shopllm prepare end to end ------------------------------------------------------------------


@pytest.fixture(scope="module")
def night_one(tmp_path_factory):
    out = tmp_path_factory.mktemp("shop") / "out"
    items, events = realistic_shop()
    write_curated(out, DATE, items, events)
    config = {
        "shard_rows": 25,
        "vocab_size": 600,
        "search_holdout": 0.3,
        "describe_holdout": 0.2,
        "tie_shuffles": 2,
        "history_eos": "true",
        "catalog_search_rows": "false",
    }
    assert prepare(out, config=config) == 0
    return out, items, events, config


@pytest.fixture(scope="module")
def night_plain(tmp_path_factory):
    """The same shop without tie-shuffled copies and without <eos> after training histories."""
    out = tmp_path_factory.mktemp("shop") / "out"
    items, events = realistic_shop()
    write_curated(out, DATE, items, events)
    config = {
        "shard_rows": 25,
        "vocab_size": 600,
        "search_holdout": 0.3,
        "describe_holdout": 0.2,
        "tie_shuffles": 0,
        "history_eos": "false",
        "catalog_search_rows": "false",
    }
    assert prepare(out, config=config) == 0
    return out, items, events, config


def test_prepare_writes_three_published_splits_readable_by_pandas(night_one):
    out, items, events, _ = night_one
    frames = {s: pd.read_parquet(storage.partition_dir(out, f"{TOKENS}/{s}", DATE)) for s in ("train", "valid", "test")}
    assert set(frames["train"]["kind"]) == {"history", "search", "describe"}
    assert set(frames["test"]["kind"]) >= {"history", "describe"}
    summary = storage.read_json(storage.summary_path(out, DATE, "prepare"))
    for split, frame in frames.items():
        assert len(frame) == summary["rows_total"][split]
        assert frame["input_ids"].map(len).sum() == summary["tokens"][split]
        for kind, n in summary["rows"][split].items():
            assert (frame["kind"] == kind).sum() == n
    assert summary["tokenizer"]["trained"] is True
    assert summary["item_vocab"] == {"size": len(items), "added": len(items)}
    # counted from the describe rows (built on a helper thread) and the search rows
    assert summary["attribute_rows"] == sum(not i["description"] for i in items) > 0
    assert summary["left_out"]["items_without_description"] == 0  # each has an attribute row instead
    tokenizer = TextTokenizer.load(out / "vocab" / "tokenizer.json")
    described = [i for i in items if i["description"]]
    searched = pd.concat(frames.values()).query("kind == 'search'")["subject_id"]
    attr_tokens = {
        i["item_id"]: len(tokenizer.encode(attribute_text(i["title"], i["category"], i["brand"], i["attributes"])))
        for i in items
    }
    desc_tokens = {i["item_id"]: len(description_ids(tokenizer, i)) for i in described}
    assert summary["text_tokens"] == (
        sum(attr_tokens.values()) + sum(desc_tokens.values()) + sum(len(tokenizer.encode(q)) for q in searched)
    )
    assert summary["tie_copy_rows"] > 0  # histories with same-minute events have copies
    zh = [i for i in items if i["language"] == "zh"]
    zh_chars = sum(
        len(attribute_text(i["title"], i["category"], i["brand"], i["attributes"])) + len(i["description"]) for i in zh
    )
    assert summary["zh_tokens_per_char"] == round(
        sum(attr_tokens[i["item_id"]] + desc_tokens.get(i["item_id"], 0) for i in zh) / zh_chars, 4
    )
    assert 0 < summary["zh_tokens_per_char"] < 1.0


def description_ids(tokenizer, item) -> list[int]:
    """The describe target of an item as prepare builds it: its own facts as slot tokens."""
    slots = SlotVocab.of(tokenizer)
    facts = slots.facts(item["brand"], item["category"], sorted(item["attributes"]), item["title"])
    return [
        i
        for p in delexicalize(item["description"], facts, slots.name_id)
        for i in (tokenizer.encode(p) if isinstance(p, str) else [p])
    ]


def test_describe_targets_hold_the_items_facts_as_slot_tokens(night_one):
    out, items, _, _ = night_one
    tokenizer = TextTokenizer.load(out / "vocab" / "tokenizer.json")
    slots = SlotVocab.of(tokenizer)
    assert {BRAND_SLOT, CATEGORY_SLOT, NAME_SLOT} <= set(slots.by_name)
    rows = pd.concat(
        pd.read_parquet(storage.partition_dir(out, f"{TOKENS}/{s}", DATE)) for s in ("train", "valid", "test")
    )
    rows = rows[rows.kind == "describe"]
    by_id = {i["item_id"]: i for i in items}
    seen_slots = 0
    for subject, ids in zip(rows.subject_id, rows.input_ids):
        ids = list(ids)
        if training_rows.DESC_ID not in ids:
            continue  # an attribute-only row
        target = ids[ids.index(training_rows.DESC_ID) + 1 :]
        assert (
            target[: len(description_ids(tokenizer, by_id[subject]))]
            == description_ids(tokenizer, by_id[subject])[: len(target)]
        )
        text = tokenizer.decode(target)  # slot tokens decode to nothing
        assert "耳机" not in text  # the category name ("数码 > 耳机") only as its slot
        seen_slots += target.count(slots.by_name[CATEGORY_SLOT])
    assert seen_slots > 0


def test_shards_hold_at_most_shard_rows_and_rerun_writes_identical_files(night_one, tmp_path):
    out, items, events, config = night_one
    files = storage.partition_files(out, f"{TOKENS}/train", DATE)
    sizes = [pq.ParquetFile(f).metadata.num_rows for f in files]
    assert len(files) > 1 and max(sizes) <= config["shard_rows"]
    assert all(n == config["shard_rows"] for n in sizes[:-1])
    first = {Path(f).name: Path(f).read_bytes() for f in files}
    rerun = tmp_path / "out"
    write_curated(rerun, DATE, items, events)
    (rerun / "vocab").mkdir()
    for name in ("tokenizer.json", "item_vocab.json"):
        (rerun / "vocab" / name).write_bytes((out / "vocab" / name).read_bytes())
    assert prepare(rerun, "--direct_num_workers=1", config=config) == 0
    again = {Path(f).name: Path(f).read_bytes() for f in storage.partition_files(rerun, f"{TOKENS}/train", DATE)}
    assert again == first


@pytest.mark.parametrize("no_files", [False, True])
def test_a_night_without_events_writes_describe_rows_and_empty_history(night_one, tmp_path, no_files):
    """A quiet day: curated/events holds no rows (or no file at all). The items still get describe rows;
    nothing else is written, and every split is a readable partition."""
    out, items, _, config = night_one
    quiet = tmp_path / "out"
    write_curated(quiet, DATE, items, [])
    if no_files:
        for f in storage.partition_files(quiet, CURATED_EVENTS, DATE):
            storage.delete(f)
    (quiet / "vocab").mkdir()
    for name in ("tokenizer.json", "item_vocab.json"):
        (quiet / "vocab" / name).write_bytes((out / "vocab" / name).read_bytes())
    assert prepare(quiet, config=config) == 0
    summary = storage.read_json(storage.summary_path(quiet, DATE, "prepare"))
    assert summary["users"] == 0 and summary["rows"]["train"]["history"] == 0
    assert sum(summary["rows"][s]["describe"] for s in summary["rows"]) == len(items)
    for split in ("train", "valid", "test"):
        assert set(read_split(quiet, split)["kind"].to_pylist()) <= {"describe"}


@pytest.mark.parametrize("beam_args", [[], ["--direct_num_workers=2"]])
def test_spreading_the_work_writes_the_same_files(night_one, tmp_path, monkeypatch, beam_args):
    """night_one ran on one worker, each dataset in one file. Here a user's events are spread over several
    files and the items are cut into several slices (encoded one after another while the events are
    grouped), on one worker or on two, the work spread over user shards and sort groups and a user's events
    gathered from several reads: the same bytes."""
    out, items, events, config = night_one
    rerun = tmp_path / "out"
    for dataset, schema, rows, parts in (
        (CURATED_ITEMS, ITEMS, items, 2),
        (CURATED_EVENTS, EVENTS, events, 3),
        (CURATED_SESSIONS, SESSIONS, sessions_of(events), 1),
    ):
        with storage.publishing(rerun, dataset, DATE) as tmp:
            for i in range(parts):  # rows dealt round-robin: a user's events land in several files
                storage.write_table(pa.Table.from_pylist(rows[i::parts], schema=schema), tmp, f"part-{i:05d}.parquet")
    (rerun / "vocab").mkdir()
    for name in ("tokenizer.json", "item_vocab.json"):
        (rerun / "vocab" / name).write_bytes((out / "vocab" / name).read_bytes())
    monkeypatch.setattr("pipelines.prepare.READ_FILES", 1)
    monkeypatch.setattr("pipelines.prepare.ITEM_SLICE_ROWS", 7)
    assert prepare(rerun, *beam_args, config=config) == 0
    for split in ("train", "valid", "test"):
        first = [Path(f).read_bytes() for f in storage.partition_files(out, f"{TOKENS}/{split}", DATE)]
        again = [Path(f).read_bytes() for f in storage.partition_files(rerun, f"{TOKENS}/{split}", DATE)]
        assert again == first, split


@pytest.mark.parametrize("night", ["night_plain", "night_one"])
def test_split_is_leak_free(night, request):
    """Recomputed independently from the events: no valid/test target event feeds any training row."""
    out, items, events, config = request.getfixturevalue(night)
    vocab = ItemVocab.load(out / "vocab")
    n_text = TextTokenizer.load(out / "vocab" / "tokenizer.json").n_text
    item_of = lambda token: vocab.item_of(token, n_text)  # noqa: E731
    train, valid, test = (read_split(out, s).to_pylist() for s in ("train", "valid", "test"))
    trained = {}  # user -> the items of each of the user's training history rows
    for row in train:
        if row["kind"] == "history":
            assert (row["input_ids"][-1] == EOS_ID) == (config.get("history_eos") != "false")
            trained.setdefault(row["subject_id"], []).append(
                Counter(item_of(t) for t in row["input_ids"][2:] if t != EOS_ID)
            )
    targets = {
        (split, r["subject_id"]): r["target_item"]
        for split, rows in (("valid", valid), ("test", test))
        for r in rows
        if r["kind"] == "history"
    }

    held_events = set()
    for user in {e["user_id"] for e in events}:
        runs = ordered_item_runs(events, user)
        if len(runs) < 3:
            assert ("valid", user) not in targets  # short user: train only
            continue
        assert targets[("valid", user)] == runs[-2][0] and targets[("test", user)] == runs[-1][0]
        held_events.update(runs[-2][1] + runs[-1][1])
        train_runs = Counter(item_id for item_id, _ in runs[:-2])
        rows = trained.get(user, [])
        total = sum(rows, Counter())
        if not config["tie_shuffles"]:
            assert total == train_runs
        else:  # the original rows, and copies that reorder the same training items (repeats collapsed)
            assert set(total) == set(train_runs) and all(row <= train_runs for row in rows)
            assert all(total[item] >= n for item, n in train_runs.items())

    expected_pairs = Counter(
        (query, target["item_id"])
        for query, target in search_pairs(events)
        if hashing.holdout_split(query, config["search_holdout"]) == "train" and target["event_id"] not in held_events
    )
    assert expected_pairs and any(t["event_id"] in held_events for _, t in search_pairs(events))
    assert (
        Counter((r["subject_id"], item_of(r["input_ids"][-2])) for r in train if r["kind"] == "search")
        == expected_pairs
    )
    held_queries = {r["subject_id"] for r in valid + test if r["kind"] == "search"}
    assert held_queries and not held_queries & {r["subject_id"] for r in train if r["kind"] == "search"}
    held_items = {r["subject_id"] for r in valid + test if r["kind"] == "describe"}
    assert held_items and not held_items & {r["subject_id"] for r in train if r["kind"] == "describe"}


def ordered_item_runs(events, user):
    """[(item_id, [event ids])] of a user's item events in (ts, arrival) order, consecutive repeats merged."""
    evs = sorted((e for e in events if e["user_id"] == user), key=lambda e: (e["ts"], e["arrival"]))
    runs = []
    for e in evs:
        if e["event_type"] == "search":
            continue
        if runs and runs[-1][0] == e["item_id"]:
            runs[-1][1].append(e["event_id"])
        else:
            runs.append((e["item_id"], [e["event_id"]]))
    return runs


def search_pairs(events):
    """(query, answering event): the first click/cart/purchase after a search in its session, before the next search."""
    evs = sorted(events, key=lambda e: (e["ts"], e["arrival"]))
    pairs = []
    for i, e in enumerate(evs):
        if e["event_type"] != "search":
            continue
        for nxt in evs[i + 1 :]:
            if nxt["session_id"] != e["session_id"]:
                continue
            if nxt["event_type"] == "search":
                break
            if nxt["event_type"] in ("click", "add_to_cart", "purchase"):
                pairs.append((e["query"], nxt))
                break
    return pairs


def test_by_default_only_histories_with_same_time_events_get_reordered_copies(tmp_path):
    """An order's items share its timestamp: with no config, such a history trains in other orders too;
    a history whose events are all apart is trained once, as it was."""
    out = tmp_path / "out"
    items = [item(f"p{i}", f"Item {i}") for i in range(8)]
    basket = [event(n, "u-basket", "s1", "purchase", f"p{n}", minutes=0) for n in range(6)]
    apart = [event(10 + n, "u-apart", "s2", "purchase", f"p{n}", minutes=10 + n) for n in range(6)]
    write_curated(out, DATE, items, basket + apart)
    assert prepare(out) == 0
    history = read_split(out, "train").to_pandas().query("kind == 'history'")
    rows = history.groupby("subject_id")["input_ids"].apply(lambda ids: {tuple(r) for r in ids})
    assert len(rows["u-apart"]) == 1
    assert 2 <= len(rows["u-basket"]) <= 4  # the original and up to 3 other orders of the same items
    assert len({frozenset(r) for r in rows["u-basket"]}) == 1
    summary = storage.read_json(storage.summary_path(out, DATE, "prepare"))
    assert summary["tie_copy_rows"] == len(rows["u-basket"]) - 1


def test_item_ids_stay_stable_when_the_catalog_grows(tmp_path):
    out = tmp_path / "out"
    items, events = realistic_shop(n_items=20, n_users=10)
    write_curated(out, "2024-05-01", items, events)
    assert main(["prepare", "--out", str(out), "--date", "2024-05-01"]) == 0
    first = ItemVocab.load(out / "vocab").items
    bigger, _ = realistic_shop(n_items=30, n_users=10)
    bigger = [dict(it, item_id="new-" + it["item_id"]) if k % 2 else it for k, it in enumerate(bigger)]
    write_curated(out, "2024-05-02", bigger, events)
    assert main(["prepare", "--out", str(out), "--date", "2024-05-02"]) == 0
    second = ItemVocab.load(out / "vocab").items
    assert second[: len(first)] == first
    new = sorted({it["item_id"] for it in bigger} - set(first))
    assert second[len(first) :] == new
    summary = storage.read_json(storage.summary_path(out, "2024-05-02", "prepare"))
    assert summary["item_vocab"] == {"size": len(second), "added": len(new)}
    assert summary["tokenizer"]["trained"] is False


def test_retrain_tokenizer_flag_trains_again_and_warns(tmp_path, caplog):
    out = tmp_path / "out"
    items, events = realistic_shop(n_items=12, n_users=6)
    write_curated(out, DATE, items, events)
    assert prepare(out) == 0
    vocab_before = ItemVocab.load(out / "vocab").items
    with caplog.at_level("WARNING", logger="jobs.prepare"):
        assert prepare(out, "--retrain-tokenizer") == 0
    assert any("retraining the tokenizer" in r.message for r in caplog.records)
    summary = storage.read_json(storage.summary_path(out, DATE, "prepare"))
    assert summary["tokenizer"]["trained"] is True
    assert summary["item_vocab"]["added"] == 0 and ItemVocab.load(out / "vocab").items == vocab_before


def test_missing_curated_partition_is_one_clear_error(tmp_path, capsys):
    out = tmp_path / "out"
    items, events = realistic_shop(n_items=5, n_users=2)
    write_curated(out, DATE, items, events)
    import shutil

    shutil.rmtree(storage.partition_dir(out, CURATED_SESSIONS, DATE))
    assert prepare(out) == 2
    err = capsys.readouterr().err.strip()
    assert "curated/sessions/dt=2024-05-01" in err and "shopllm ingest" in err
    assert len(err.splitlines()) == 1


def test_a_curated_file_with_other_columns_is_one_clear_error(tmp_path, capsys):
    """The files of a dataset are read in one call, which would fill a column missing from a later file
    with nulls: prepare refuses such a partition instead."""
    out = tmp_path / "out"
    items, events = realistic_shop(n_items=5, n_users=2)
    write_curated(out, DATE, items, events)
    odd = storage.join(storage.partition_dir(out, CURATED_EVENTS, DATE), "part-00001.parquet")
    pq.write_table(pa.Table.from_pylist(events[:3], schema=EVENTS).drop_columns(["query"]), odd)
    assert prepare(out) == 2
    err = capsys.readouterr().err.strip()
    assert "part-00001.parquet" in err and "query" in err and len(err.splitlines()) == 1


def test_arrow_table_coder_round_trips_a_slice():
    from pipelines.prepare import ArrowTableCoder

    items, _ = realistic_shop(n_items=10, n_users=1)
    table = pa.Table.from_pylist(items, schema=ITEMS).slice(3, 4)
    coder = ArrowTableCoder()
    assert coder.decode(coder.encode(table)).equals(table)
    assert 0 < coder.estimate_size(table)


def test_a_failed_shard_write_publishes_no_split_and_leaves_no_staging_folder(night_one, tmp_path, monkeypatch, capsys):
    """A shard write that fails (a full disk) fails the stage with one line: no split is published and the
    staging folders of all three are removed."""
    import pipelines.prepare as prepare_module

    out, items, events, config = night_one
    night = tmp_path / "out"
    write_curated(night, DATE, items, events)
    (night / "vocab").mkdir()
    for name in ("tokenizer.json", "item_vocab.json"):
        (night / "vocab" / name).write_bytes((out / "vocab" / name).read_bytes())
    write, calls = prepare_module.write_shard_file, []

    def failing(staging, split, shard, rows):
        calls.append(split)
        if len(calls) > 1:  # the first shard is written, a later one fails
            raise OSError("disk full")
        write(staging, split, shard, rows)

    monkeypatch.setattr(prepare_module, "write_shard_file", failing)
    assert prepare(night, config=config) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("shopllm")]
    assert len(errors) == 1 and "prepare pipeline failed" in errors[0] and "disk full" in errors[0], errors
    assert len(calls) > 1
    tokens = night / TOKENS
    assert not list(tokens.rglob(storage.SUCCESS))
    assert not [p for p in tokens.rglob("*") if p.name.startswith(storage.STAGING_PREFIX)]
    assert not list(tokens.rglob("*.parquet"))
