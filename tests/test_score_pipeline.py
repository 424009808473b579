"""The score pipeline end to end on a tiny shop and a two-layer model (and its ModelHandler in a TestPipeline)."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
import torch

from shopllm import modelstore, storage
from shopllm.config import ScoreConfig
from shopllm.errors import ConfigError, ShopllmError
from shopllm.model import GPT, GPTConfig
from shopllm.schemas import (
    CURATED_EVENTS,
    CURATED_ITEMS,
    CURATED_SESSIONS,
    DESCRIPTIONS,
    EVENTS,
    ITEMS,
    RECOMMENDATIONS,
    SESSIONS,
)
from shopllm.sequences import attribute_text
from shopllm.tokenizer import TextTokenizer
from shopllm.vocab import ItemVocab

DATE = "2024-05-10"
DAY = dt.datetime(2024, 5, 10, tzinfo=dt.UTC)
VERSION = "v-test"
K = 5


def _item(i: int, title_suffix: str = "") -> dict:
    zh = i % 2 == 0
    return {
        "item_id": f"i{i:02d}",
        "title": (f"无线蓝牙耳机 {i} 号" if zh else f"Wireless headphones model {i}") + title_suffix,
        "description": None,
        "category": "数码 > 耳机" if zh else "Electronics > Audio",
        "brand": "声浪" if zh else "SoundCo",
        "price": 10.0 + i,
        "currency": "CNY" if zh else "USD",
        "attributes": [("颜色", "黑色")] if zh else [("color", "black"), ("battery", "30h")],
        "language": "zh" if zh else "en",
        "updated_at": DAY - dt.timedelta(days=3),
        "source_hash": None,
    }


def _event(n, user, session, etype, item=None, query=None, hours=0.0):
    return {
        "event_id": f"e{n}",
        "user_id": user,
        "session_id": session,
        "event_type": etype,
        "item_id": item,
        "query": query,
        "ts": DAY + dt.timedelta(hours=hours),
        "arrival": n,
    }


def shop_events() -> list[dict]:
    e = []
    n = iter(range(1000))
    # u1: long history yesterday + today, bought i01
    for h, item in enumerate(["i00", "i01", "i01", "i02", "i03"]):
        e.append(_event(next(n), "u1", "s1", "view", item, hours=-20 + h * 0.1))
    e.append(_event(next(n), "u1", "s1", "purchase", "i01", hours=-19))
    e.append(_event(next(n), "u1", "s2", "view", "i04", hours=2))
    e.append(_event(next(n), "u1", "s2", "view", "i05", hours=2.1))
    # u2: only searches today (no item history -> skipped for the user scope)
    for h in range(3):
        e.append(_event(next(n), "u2", "s3", "search", query="蓝牙 耳机", hours=3 + h * 0.1))
    # u3: active long ago only (outside active_days) -> not scored
    e.append(_event(next(n), "u3", "s4", "view", "i06", hours=-24 * 60))
    # u4: views an item the model does not know, then a known one
    e.append(_event(next(n), "u4", "s5", "view", "unknown-item", hours=5))
    e.append(_event(next(n), "u4", "s5", "view", "i07", hours=5.1))
    e.append(_event(next(n), "u4", "s5", "search", query="wireless headphones", hours=5.2))
    e.append(_event(next(n), "u2", "s3", "search", query="wireless headphones", hours=5.3))
    e.append(_event(next(n), "u1", "s2", "search", query="wireless headphones", hours=5.4))
    # an event after the day: ignored
    e.append(_event(next(n), "u5", "s6", "view", "i08", hours=30))
    return e


def sessions_of(events: list[dict]) -> list[dict]:
    by = {}
    for e in sorted(events, key=lambda e: (e["ts"], e["arrival"])):
        by.setdefault(e["session_id"], []).append(e)
    return [
        {
            "session_id": s,
            "user_id": es[0]["user_id"],
            "start_ts": es[0]["ts"],
            "end_ts": es[-1]["ts"],
            "n_events": len(es),
            "event_types": [x["event_type"] for x in es],
            "item_ids": [x["item_id"] for x in es],
            "queries": [x["query"] for x in es],
        }
        for s, es in sorted(by.items())
    ]


def write_partition(out, dataset, date, rows, schema):
    with storage.publishing(out, dataset, date) as tmp:
        storage.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)


def write_curated(out, date=DATE, items=None, events=None):
    items = items if items is not None else [_item(i) for i in range(12)]
    events = events if events is not None else shop_events()
    write_partition(out, CURATED_ITEMS, date, items, ITEMS)
    write_partition(out, CURATED_EVENTS, date, events, EVENTS)
    write_partition(out, CURATED_SESSIONS, date, sessions_of(events), SESSIONS)
    return items, events


def tiny_model(out, items, version=VERSION, extra_items=("gone-item",), seed=0, block_size=64) -> Path:
    """Tokenizer on the items' text, a random two-layer model, saved with modelstore."""
    texts = [attribute_text(i["title"], i["category"], i["brand"], i["attributes"]) for i in items]
    texts += ["wireless headphones", "蓝牙 耳机", "great sound, long battery", "音质好，续航长"]
    tok = TextTokenizer.train(texts * 3, vocab_size=300, min_frequency=1)
    tok_path = tok.save(Path(out) / "tmp_tokenizer.json")
    vocab = ItemVocab(sorted([i["item_id"] for i in items] + list(extra_items)))
    torch.manual_seed(seed)
    model = GPT(
        GPTConfig(
            n_text=tok.n_text, n_items=len(vocab), block_size=block_size, n_layer=2, n_head=2, n_embd=32, dropout=0.0
        )
    )
    return modelstore.save(out, version, model, tokenizer_json=tok_path, items=vocab, metrics={})


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A shop scored once (plus a rerun into a second folder for the determinism check)."""
    from jobs.score import run_score

    out = tmp_path_factory.mktemp("shop")
    items, _ = write_curated(out)
    tiny_model(out, items)
    cfg = ScoreConfig(top_k=K, active_days=7, min_query_count=3, batch_size=4, max_new_tokens=12)
    summary = run_score(str(out), DATE, VERSION, cfg)
    return out, summary, cfg


def read(out, dataset, date=DATE):
    return storage.read_partition(out, dataset, date).to_pandas()


def test_every_subject_gets_exactly_k_distinct_eligible_items(scored):
    out, summary, _ = scored
    recs = read(out, RECOMMENDATIONS)
    catalog = {f"i{i:02d}" for i in range(12)}
    subjects = {(s, x) for s, x in zip(recs.scope, recs.subject_id)}
    assert subjects == {
        ("user", "u1"),
        ("user", "u4"),
        ("session", "s2"),
        ("session", "s5"),
        ("query", "蓝牙 耳机"),
        ("query", "wireless headphones"),
    }
    for _, g in recs.groupby(["scope", "subject_id"]):
        assert list(g["rank"]) == list(range(1, K + 1))
        assert g.item_id.nunique() == K
        assert set(g.item_id) <= catalog  # never "gone-item", which the model knows but the catalog dropped
        assert list(g.score) == sorted(g.score, reverse=True)
    u1 = recs[(recs.scope == "user") & (recs.subject_id == "u1")]
    assert "i01" not in set(u1.item_id)  # bought
    s2 = recs[(recs.scope == "session") & (recs.subject_id == "s2")]
    assert not {"i04", "i05"} & set(s2.item_id)  # seen in the session
    assert (recs.model_version == VERSION).all()
    assert recs.score.dtype == "float32" and (recs.score <= 0).all()


def test_summary_counts_scored_and_skipped(scored):
    out, summary, _ = scored
    on_disk = storage.read_json(storage.summary_path(out, DATE, "score"))
    assert on_disk == summary
    rec = summary["recommendations"]
    assert rec["user"]["scored"] == 2 and rec["user"]["skipped"] == {"no_history": 1}
    assert rec["user"]["unknown_history_items"] == 1
    assert rec["session"]["scored"] == 2 and rec["session"]["skipped"] == {"no_history": 1}
    assert rec["query"]["scored"] == 2
    assert summary["descriptions"]["generated"] == 12 and summary["descriptions"]["carried_over"] == 0
    assert modelstore.latest_version(out) == VERSION


def test_descriptions_never_blank_and_flagged(scored):
    out, summary, _ = scored
    desc = read(out, DESCRIPTIONS)
    assert sorted(desc.item_id) == [f"i{i:02d}" for i in range(12)]
    assert desc.description.str.strip().str.len().min() > 0
    assert (desc.generated_dt == DATE).all() and (desc.model_version == VERSION).all()
    assert desc.is_fallback.sum() == summary["descriptions"]["fallbacks"]
    for text in desc.description:
        assert "<" not in text  # no <eos>, <desc>, ... leaked


def test_rerun_gives_identical_parquet(scored):
    from jobs.score import run_score

    out, _, cfg = scored
    before = {ds: read(out, ds) for ds in (RECOMMENDATIONS, DESCRIPTIONS)}
    files = {
        ds: [Path(f).read_bytes() for f in storage.partition_files(out, ds, DATE)]
        for ds in (RECOMMENDATIONS, DESCRIPTIONS)
    }
    run_score(str(out), DATE, VERSION, cfg)
    for ds in (RECOMMENDATIONS, DESCRIPTIONS):
        pd.testing.assert_frame_equal(read(out, ds), before[ds])
        assert [Path(f).read_bytes() for f in storage.partition_files(out, ds, DATE)] == files[ds]


def test_unchanged_item_carried_over_changed_one_regenerated(tmp_path):
    from jobs.score import run_score

    items, events = write_curated(tmp_path)
    tiny_model(tmp_path, items)
    cfg = ScoreConfig(top_k=K, active_days=7, batch_size=8, max_new_tokens=8)
    run_score(str(tmp_path), DATE, VERSION, cfg)
    first = read(tmp_path, DESCRIPTIONS).set_index("item_id")

    next_day = "2024-05-11"
    changed = [dict(i) for i in items]
    changed[3]["title"] = changed[3]["title"] + " pro"  # inputs changed -> new source_hash
    changed.append(_item(12))  # new item
    write_curated(tmp_path, next_day, items=changed, events=events)
    summary = run_score(str(tmp_path), next_day, VERSION, cfg)
    second = read(tmp_path, DESCRIPTIONS, next_day).set_index("item_id")
    assert (summary["descriptions"]["generated"], summary["descriptions"]["carried_over"]) == (2, 11)
    assert second.loc["i03", "generated_dt"] == next_day and second.loc["i12", "generated_dt"] == next_day
    carried = second.drop(index=["i03", "i12"])
    pd.testing.assert_frame_equal(carried, first.drop(index=["i03"]).loc[carried.index])
    assert (carried.generated_dt == DATE).all()


def test_missing_inputs_and_model_are_clear_errors(tmp_path):
    from jobs.cli import main
    from jobs.score import run_score

    with pytest.raises(ShopllmError, match="curated/items/dt=2024-05-10 is not published"):
        items = [_item(0)]
        tiny_model(tmp_path, items)
        run_score(str(tmp_path), DATE, VERSION, ScoreConfig())
    assert main(["score", "--out", str(tmp_path / "empty"), "--date", DATE]) == 2


def test_model_handler_in_a_test_pipeline(tmp_path):
    import apache_beam as beam
    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from pipelines.common import make_pipeline
    from pipelines.score import ShopModelHandler
    from shopllm.ranking import RankRequest

    items = [_item(i) for i in range(6)]
    folder = tiny_model(tmp_path, items)
    catalog = [i["item_id"] for i in items]
    handler = ShopModelHandler(str(folder), "rank", top_k=3, catalog=catalog, batch_size=2)
    requests = [
        ("a", RankRequest("history", items=("i00", "i01"), exclude=("i02",))),
        ("b", RankRequest("history", items=("i03",) * 1)),
        ("c", RankRequest("search", query="wireless headphones")),
        ("d", RankRequest("history", items=("nope",))),
    ]

    def summary(kv):
        key, pred = kv
        res = pred.inference
        return key, len(res.item_ids), len(set(res.item_ids)), "i02" in res.item_ids, res.skipped

    with TestPipeline(runner=make_pipeline().runner) as p:
        out = p | beam.Create(requests) | RunInference(KeyedModelHandler(handler)) | beam.Map(summary)
        assert_that(
            out,
            equal_to(
                [
                    ("a", 3, 3, False, None),
                    ("b", 3, 3, False, None),
                    ("c", 3, 3, False, None),
                    ("d", 0, 0, False, "unknown_items"),
                ]
            ),
        )


def test_the_gates_lexicon_knows_the_catalogs_brands_values_and_model_names(tmp_path):
    """What the score stage's gate checks against: a neighbour's series name in a text is not published."""
    import pyarrow.parquet as pq

    from jobs.score import catalog_lexicon, catalog_rows
    from shopllm.faithfulness import Item, check

    rows = [
        {
            "item_id": "a",
            "title": "【Whiskerly】青柠 猫粮 老年猫",
            "category": "宠物 > 猫粮",
            "brand": "Whiskerly",
            "attributes": [("适用猫龄", "老年猫")],
            "description": "青柠猫粮，适用猫龄老年猫。",
        },
        {
            "item_id": "b",
            "title": "【Whiskerly】云朵 猫粮 幼猫",
            "category": "宠物 > 猫粮",
            "brand": "Whiskerly",
            "attributes": [("适用猫龄", "幼猫")],
            "description": "云朵猫粮，适用猫龄幼猫。",
        },
    ]
    table = pa.table({k: [r[k] for r in rows] for k in ("item_id", "title", "category", "brand", "description")})
    table = table.append_column(
        "attributes", pa.array([r["attributes"] for r in rows], pa.map_(pa.string(), pa.string()))
    )
    pq.write_table(table, tmp_path / "items.parquet")
    lexicon = catalog_lexicon(catalog_rows([str(tmp_path / "items.parquet")]))
    item = Item.of("Whiskerly", {"适用猫龄": "老年猫"}, rows[0]["title"])
    assert check("Whiskerly的云朵猫粮，适用猫龄老年猫。", item, lexicon).blocking == ["wrong_model"]
    assert check("Whiskerly的青柠猫粮，适用猫龄老年猫。", item, lexicon).blocking == []


def test_a_catalog_over_ann_above_without_faiss_fails_before_the_pipeline(tmp_path, monkeypatch):
    from jobs.score import run_score

    items = [_item(i) for i in range(6)]
    write_curated(tmp_path, items=items)
    tiny_model(tmp_path, items)
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    with pytest.raises(ConfigError, match=r"faiss is not installed: pip install 'shopllm\[ann\]'"):
        run_score(str(tmp_path), DATE, VERSION, ScoreConfig(ann_above=3))
    assert not storage.exists(storage.join(str(tmp_path), RECOMMENDATIONS))
