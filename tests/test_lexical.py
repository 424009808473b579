"""The query blend: our BM25 against bm25s, the blend's effect, and the weight fitted on held-out searches."""

import numpy as np
import pytest
import torch

from shopllm.lexical import LexicalIndex, best_weight, blend, blend_ranks, fit_weight, item_text, terms

DOCS = [
    "索尼 无线蓝牙耳机 黑色 数码 > 耳机",
    "小米 手机 12GB 数码 > 手机",
    "Levi's slim jeans, blue Apparel > Jeans",
    "Uniqlo loose jeans, black Apparel > Jeans",
    "绿联 充电器 65W 数码 > 充电器",
    "Uniqlo cotton T-shirt, black",
]


def test_terms_split_latin_words_and_chinese_characters_and_bigrams():
    assert terms("索尼 WH-1000XM5 无线耳机") == [
        "wh-1000xm5",
        "索",
        "尼",
        "索尼",
        "无",
        "线",
        "耳",
        "机",
        "无线",
        "线耳",
        "耳机",
    ]
    assert terms("ＵＮＩＱＬＯ Jeans") == ["uniqlo", "jeans"]  # NFKC folds full-width letters


def test_our_bm25_scores_as_bm25s_does():
    bm25s = pytest.importorskip("bm25s")
    vocab = {}
    ids = [[vocab.setdefault(t, len(vocab)) for t in terms(d)] for d in DOCS]
    ref = bm25s.BM25(k1=1.5, b=0.75)
    ref.index(bm25s.tokenization.Tokenized(ids=ids, vocab=vocab), show_progress=False)
    index = LexicalIndex(DOCS)
    for q in ["蓝牙耳机", "loose jeans", "black", "65w 充电器", "uniqlo black jeans"]:
        expected = np.asarray(ref.get_scores([vocab[t] for t in terms(q) if t in vocab]))
        got = index.scores([q])[0].numpy()
        assert np.allclose(got, expected / expected.max(), atol=1e-5), q


def test_a_query_with_no_known_word_leaves_the_models_ranking_alone():
    index = LexicalIndex(DOCS)
    lexical = index.scores(["咖啡豆 gift", "jeans"])
    assert torch.equal(lexical[0], torch.zeros(len(DOCS)))
    logp = torch.log_softmax(torch.randn(2, len(DOCS)), dim=1)
    mixed = blend(logp, lexical, 8.0)
    assert torch.equal(mixed[0], logp[0])
    assert set(mixed[1].topk(2).indices.tolist()) == {2, 3}  # the two jeans


def test_the_weight_is_fitted_on_held_out_searches():
    index = LexicalIndex(DOCS)
    queries, targets = ["jeans black", "耳机", "black"], torch.tensor([3, 0, 5])
    lexical = index.scores(queries)
    # a model that knows the clicks (the black T-shirt for "black") but not the words
    logp = torch.full((3, len(DOCS)), -5.0)
    logp[2, 5] = -0.1
    weight, by_weight = fit_weight(logp, lexical, targets)
    assert weight > 0 and by_weight["0.0"] < by_weight[str(weight)]
    # where the words mislead and the model is right, the blend is switched off
    weight, _ = fit_weight(torch.eye(len(DOCS))[[1, 4, 2]].log_softmax(1) * 10, lexical, torch.tensor([1, 4, 2]))
    assert weight == 0.0
    # fitted chunk by chunk of searches (as training does, to bound memory): the same weight and figures
    chunks = [blend_ranks(logp[i : i + 2], lexical[i : i + 2], targets[i : i + 2]) for i in (0, 2)]
    chunked = best_weight({w: torch.cat([c[w] for c in chunks]) for w in chunks[0]})
    assert chunked == fit_weight(logp, lexical, targets)


def test_item_text_holds_what_a_search_finds_an_item_by():
    row = {
        "title": "Sony WH-1000XM5",
        "category": "Electronics > Headphones",
        "brand": "Sony",
        "attributes": {"color": "black", "battery life": "30 hours"},
        "description": "not searched",
    }
    assert item_text(row) == "Sony WH-1000XM5 Electronics > Headphones Sony battery life 30 hours color black"
