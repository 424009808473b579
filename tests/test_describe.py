"""Descriptions: generation with/without the KV cache, banned control tokens, degenerate checks, fallbacks."""

from __future__ import annotations

import pytest
import torch

from shopllm.describe import (
    BANNED_IDS,
    REPETITIVE,
    TOO_SHORT,
    UNKNOWN_ITEM,
    WRONG_SCRIPT,
    Describer,
    DescribeRequest,
    degenerate_reason,
    describe_batch,
    fallback_text,
    needs_generation,
)
from shopllm.hashing import source_hash, source_hash_of
from shopllm.model import GPT, GPTConfig
from shopllm.sequences import attribute_text, describe_sequence
from shopllm.text_metrics import distinct_n, repeated_ngram_rate, units
from shopllm.tokenizer import TextTokenizer
from shopllm.vocab import DESC_ID, EOS_ID, SEP_ID, SPECIAL_ID, ItemVocab

EN = DescribeRequest("a1", "en", "Trail running shoes", "Sports > Shoes", "Fleet", (("color", "red"), ("size", "42")))
ZH = DescribeRequest("b2", "zh", "无线蓝牙耳机", "数码 > 耳机", "声浪", (("颜色", "黑色"),))
DESCRIPTIONS = {
    "a1": "Light red trail shoes with a grippy sole for long runs.",
    "b2": "音质清晰，续航持久，佩戴舒适的黑色蓝牙耳机。",
}


@pytest.fixture(scope="module")
def parts():
    texts = [attribute_text(r.title, r.category, r.brand, r.attributes) for r in (EN, ZH)] + list(DESCRIPTIONS.values())
    tok = TextTokenizer.train(texts * 3, vocab_size=320, min_frequency=1)
    items = ItemVocab(["a1", "b2", "c3"])
    return tok, items


def _model(tok, items, seed=0):
    torch.manual_seed(seed)
    return GPT(
        GPTConfig(n_text=tok.n_text, n_items=len(items), block_size=128, n_layer=2, n_head=2, n_embd=48, dropout=0.0)
    ).eval()


@pytest.fixture(scope="module")
def trained(parts):
    """A two-layer model that has learned the two descriptions by heart (100 tiny steps)."""
    tok, items = parts
    model = _model(tok, items)
    seqs = []
    for req in (EN, ZH):
        attr = tok.encode(attribute_text(req.title, req.category, req.brand, req.attributes))
        seqs.append(
            describe_sequence(items.token_id(req.item_id, tok.n_text), attr, tok.encode(DESCRIPTIONS[req.item_id]), 128)
        )
    length = max(map(len, seqs))
    idx = torch.tensor([s[:-1] + [0] * (length - len(s)) for s in seqs])
    tgt = torch.tensor([s[1:] + [-1] * (length - len(s)) for s in seqs])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(100):
        _, loss = model(idx, tgt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_trained_model_writes_its_descriptions_in_a_batch_of_different_lengths(parts, trained):
    tok, items = parts
    res = describe_batch(Describer(trained, tok, items, max_new_tokens=64), [EN, ZH])
    assert [r.description for r in res] == [DESCRIPTIONS["a1"], DESCRIPTIONS["b2"]]
    assert [r.is_fallback for r in res] == [False, False]


def test_greedy_tokens_same_with_and_without_cache(parts, trained):
    tok, items = parts
    for model in (trained, _model(tok, items, seed=3)):
        d = Describer(model, tok, items, max_new_tokens=30)
        prompts = [d.prompt(EN), d.prompt(ZH)]
        with_cache = d.generate_ids(prompts, [EN, ZH])
        d.use_cache = False
        assert d.generate_ids(prompts, [EN, ZH]) == with_cache


def test_sampling_is_reproducible_with_a_seed(parts):
    tok, items = parts
    d = Describer(_model(tok, items, seed=1), tok, items, max_new_tokens=20, temperature=1.0, top_p=0.9, seed=7)
    prompts = [d.prompt(EN), d.prompt(ZH)]
    assert d.generate_ids(prompts, [EN, ZH]) == d.generate_ids(prompts, [EN, ZH])


def test_control_tokens_never_leak(parts):
    """A model that would rather emit <desc>/<sep>/... than text still produces text tokens only."""
    tok, items = parts
    model = _model(tok, items, seed=2)
    real = model.text_logits

    def prefer_control(h):
        logits = real(h)
        logits[..., list(BANNED_IDS)] += 1e4  # every control token but <eos> wins by far
        return logits

    model.text_logits = prefer_control
    d = Describer(model, tok, items, max_new_tokens=15)
    ids = d.generate_ids([d.prompt(EN)], [EN])[0]
    assert ids and not set(ids) & set(SPECIAL_ID.values())
    assert all(i < tok.n_text for i in ids)  # no item tokens either
    assert tok.decode([DESC_ID, *tok.encode("red"), SEP_ID, tok.n_text + 1, EOS_ID]) == "red"


def test_degenerate_output_gets_the_fallback(parts):
    tok, items = parts

    class Degenerate(Describer):  # loops in English; answers a Chinese item in English
        def generate_ids(self, prompts, reqs):
            return [
                tok.encode(
                    "good good good good good good good good good"
                    if r.language == "en"
                    else "Comfortable red shoes for long runs."
                )
                for r in reqs
            ]

    res = describe_batch(Degenerate(_model(tok, items), tok, items), [EN, ZH, EN._replace(item_id="new")])
    assert [r.is_fallback for r in res] == [True, True, True]
    assert [r.reason for r in res] == [REPETITIVE, WRONG_SCRIPT, UNKNOWN_ITEM]
    assert res[0].description == fallback_text(EN) and res[1].description == fallback_text(ZH)


def test_degenerate_reasons_and_fallback_language():
    assert degenerate_reason("", "en") == "empty"
    assert degenerate_reason("Red shoes.", "en") == TOO_SHORT
    assert degenerate_reason("buy now buy now buy now buy now buy now", "en") == REPETITIVE
    assert degenerate_reason("Comfortable red shoes for long runs.", "zh") == WRONG_SCRIPT
    assert degenerate_reason(DESCRIPTIONS["a1"], "en") is None
    assert degenerate_reason(DESCRIPTIONS["b2"], "zh") is None
    assert fallback_text(ZH) == "无线蓝牙耳机。品牌：声浪。类别：数码 > 耳机。颜色：黑色。"
    assert fallback_text(EN) == "Trail running shoes. Brand: Fleet. Category: Sports > Shoes. color: red, size: 42."
    assert degenerate_reason(fallback_text(EN), "en") is None and degenerate_reason(fallback_text(ZH), "zh") is None


def test_source_hash_decides_regeneration():
    item = {"item_id": "a1", "title": "Shoes", "category": None, "brand": "Fleet", "attributes": {"color": "red"}}
    h = source_hash_of(item)
    assert h == source_hash_of({**item, "attributes": [("color", "red")]})  # pyarrow dict or Beam pairs alike
    assert h != source_hash_of({**item, "title": "Shoes 2"})
    assert not needs_generation(item, {"source_hash": h})
    assert needs_generation(item, {"source_hash": "old"}) and needs_generation(item, None)
    assert source_hash_of({**item, "source_hash": "from-ingest"}) == "from-ingest"
    assert h == source_hash("Shoes", None, None, "Fleet", [("color", "red")], None)  # ingest's algorithm


def test_text_metrics():
    assert units("Red 鞋子, size 42!") == ["red", "鞋", "子", "size", "42"]
    assert distinct_n(["a b c", "a b d"], 2) == 3 / 4
    assert repeated_ngram_rate("a b c d a b c d") == 1 / 5  # 5 4-grams, 'a b c d' twice
    assert repeated_ngram_rate("short") == 0.0


def test_a_description_that_drifts_from_the_item_attributes_is_not_published():
    from shopllm.faithfulness import Item, Lexicon, check

    lex = Lexicon({"颜色": ["红色", "蓝色"], "容量": ["128GB", "256GB"]}, ["小米", "华为"], {"颜色": 1.0, "容量": 1.0})
    item = Item("小米", {"颜色": "红色", "容量": "256GB"})
    good = "这款红色手机存储256GB，轻薄耐用。"
    assert degenerate_reason(good, "zh", check(good, item, lex)) is None
    assert (
        degenerate_reason(
            "这款蓝色手机存储256GB，轻薄耐用。", "zh", check("这款蓝色手机存储256GB，轻薄耐用。", item, lex)
        )
        == "contradiction"
    )
    assert (
        degenerate_reason("华为红色手机，256GB，轻薄耐用。", "zh", check("华为红色手机，256GB，轻薄耐用。", item, lex))
        == "wrong_brand"
    )
    assert (
        degenerate_reason("这款枕头柔软舒适，适合送礼。", "zh", check("这款枕头柔软舒适，适合送礼。", item, lex))
        == "low_coverage"
    )
    assert degenerate_reason("这款枕头柔软舒适，适合送礼。", "zh") is None  # no findings, no faithfulness check
