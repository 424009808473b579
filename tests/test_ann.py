"""The approximate ranking index (shopllm.ann): exact when the index is, close to exact when it is not."""

from __future__ import annotations

import sys

import pytest
import torch

from shopllm.ann import AnnSettings, ItemIndex, require_faiss, settings
from shopllm.config import ScoreConfig
from shopllm.errors import ConfigError
from shopllm.model import GPT, GPTConfig
from shopllm.ranking import Ranker, RankRequest, rank_batch
from shopllm.tokenizer import TextTokenizer
from shopllm.vocab import ItemVocab

N_ITEMS = 400


@pytest.fixture(scope="module")
def tok():
    return TextTokenizer.train(["red shoes", "blue shirt", "红色 鞋子"] * 3, vocab_size=280, min_frequency=1)


def _model(tok, tie_items: bool):
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(
            n_text=tok.n_text,
            n_items=N_ITEMS,
            block_size=40,
            n_layer=2,
            n_head=2,
            n_embd=32,
            dropout=0.0,
            tie_items=tie_items,
        )
    ).eval()
    with torch.no_grad():  # spread the item logits, as training does, so rankings are not near-ties
        w = model.item_weight()
        w.mul_(40.0)
    return model


def _requests():
    return [
        RankRequest("history", items=("i1", "i2", "i7"), exclude=("i3", "i9", "gone")),
        RankRequest("history", items=("i5",)),
        RankRequest(
            "history", items=tuple(f"i{i}" for i in range(10, 30)), exclude=tuple(f"i{i}" for i in range(10, 30))
        ),
        RankRequest("search", query="red shoes"),
        RankRequest("history", items=("unknown",)),  # skipped: nothing the model knows
        RankRequest("search", query="blue shirt", exclude=("i4",)),
    ]


@pytest.mark.parametrize("tie_items", [True, False])
def test_exact_index_ranks_like_exact_ranking(tok, tie_items):
    pytest.importorskip("faiss")
    model = _model(tok, tie_items)
    items = ItemVocab([f"i{i}" for i in range(N_ITEMS)])
    catalog = [f"i{i}" for i in range(0, N_ITEMS, 3)] + [f"i{i}" for i in range(1, 40, 3)] + ["not-in-model"]
    exact = Ranker(model, tok, items, catalog)
    approx = Ranker(model, tok, items, catalog, ann=AnnSettings(above=1, kind="flat"))
    assert exact.index is None and approx.index is not None
    reqs = _requests()
    for k in (1, 10, 50):
        want, got = rank_batch(exact, reqs, k), rank_batch(approx, reqs, k)
        for w, g, req in zip(want, got, reqs):
            assert g.item_ids == w.item_ids
            assert g.skipped == w.skipped and g.n_unknown == w.n_unknown
            assert not set(g.item_ids) & set(req.exclude)
            # a catalog under NORMALISER_SAMPLE items: the normaliser is exact, so are the scores
            assert g.scores == pytest.approx(w.scores, abs=1e-4)
    assert rank_batch(approx, reqs, 10)[2].item_ids and len(rank_batch(approx, reqs, 10)[0].item_ids) == 10


def test_searches_blended_with_bm25_keep_their_text_matches(tok):
    pytest.importorskip("faiss")
    model = _model(tok, True)
    items = ItemVocab([f"i{i}" for i in range(N_ITEMS)])
    catalog = items.items
    texts = {i: ("red shoes" if i in ("i300", "i301") else "blue shirt" if i == "i302" else "") for i in catalog}
    kw = dict(item_texts=texts, lexical_weight=50.0)
    exact = Ranker(model, tok, items, catalog, **kw)
    approx = Ranker(model, tok, items, catalog, ann=AnnSettings(above=1, kind="flat"), **kw)
    reqs = [RankRequest("search", query="red shoes"), RankRequest("search", query="blue shirt")]
    want, got = rank_batch(exact, reqs, 10), rank_batch(approx, reqs, 10)
    assert set(got[0].item_ids[:2]) == {"i300", "i301"} and got[1].item_ids[0] == "i302"
    for w, g in zip(want, got):
        assert g.item_ids == w.item_ids  # the model's top and the text's top are the candidates here
        assert g.scores == pytest.approx(w.scores, abs=1e-4)


def test_normaliser_estimate_is_close_on_a_large_catalog():
    pytest.importorskip("faiss")
    torch.manual_seed(1)
    weight = torch.randn(20_000, 16)
    h = torch.randn(8, 16)
    index = ItemIndex(weight, "flat")
    scores, cols = index.score_candidates(h, index.search(h, 10), 10)
    exact = torch.log_softmax(h @ weight.t(), dim=1)
    assert torch.equal(cols, torch.topk(exact, 10, dim=1).indices)
    # logits of std 4 over 20k items: a heavy tail, estimated from 4096 of them (~0.1 off at worst here)
    assert scores.sub(exact.gather(1, cols)).abs().max() < 0.3


@pytest.mark.parametrize("kind,knobs", [("ivf", dict(nprobe=16)), ("hnsw", dict(ef=64))])
def test_approximate_index_recall_at_10(kind, knobs):
    pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(50, 32, generator=g)
    weight = centres[torch.randint(0, 50, (4000,), generator=g)] + 0.5 * torch.randn(4000, 32, generator=g)
    queries = torch.randn(200, 32, generator=g)
    want = ItemIndex(weight, "flat").search(queries, 10)
    got = ItemIndex(weight, kind, **knobs).search(queries, 10)
    recall = sum(len(set(a) & set(b)) for a, b in zip(want.tolist(), got.tolist())) / want.numel()
    assert recall > 0.8, recall


def test_small_catalogs_and_ann_above_zero_rank_exactly(tok):
    model = _model(tok, True)
    items = ItemVocab([f"i{i}" for i in range(N_ITEMS)])
    assert Ranker(model, tok, items, items.items, ann=AnnSettings(above=N_ITEMS)).index is None
    assert settings(ScoreConfig(ann_above=0)) is None
    s = settings(ScoreConfig(ann_above=5, ann_index="hnsw", ann_ef=32))
    assert (s.above, s.kind, s.ef) == (5, "hnsw", 32) and s.wanted(6) and not s.wanted(5)


def test_config_rejects_bad_index_settings():
    with pytest.raises(ConfigError, match="ann_index"):
        ScoreConfig(ann_index="pq")
    with pytest.raises(ConfigError, match="ann_above"):
        ScoreConfig(ann_above=-1)
    with pytest.raises(ConfigError, match="ann_nprobe"):
        ScoreConfig(ann_nprobe=0)


def test_missing_faiss_fails_with_one_clear_line(tok, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    with pytest.raises(ConfigError) as err:
        require_faiss()
    assert "pip install 'shopllm[ann]'" in str(err.value) and "\n" not in str(err.value)
    model = _model(tok, True)
    items = ItemVocab([f"i{i}" for i in range(N_ITEMS)])
    with pytest.raises(ConfigError, match="faiss is not installed"):
        Ranker(model, tok, items, items.items, ann=AnnSettings(above=1))
