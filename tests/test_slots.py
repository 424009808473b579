"""Slot tokens: delexicalised targets, constrained decoding, fill-in, repair, the gate, and a grown vocabulary."""

from __future__ import annotations

import pytest
import torch

from shopllm.describe import Describer, DescribeRequest, complete, describe_batch, fallback_text
from shopllm.faithfulness import Lexicon
from shopllm.model import GPT, GPTConfig
from shopllm.slots import (
    SlotVocab,
    add_slot_tokens,
    delexicalize,
    key_slot,
    model_name,
    realize,
    slot_keys,
)
from shopllm.tokenizer import TextTokenizer
from shopllm.vocab import ItemVocab

EN = DescribeRequest(
    "a1",
    "en",
    "Sony WH-1000XM5 Black Headphones",
    "Electronics > Headphones",
    "Sony",
    (("battery life", "30 hours"), ("color", "black")),
)
ZH = DescribeRequest("b2", "zh", "小米 R10 耳机 白色", "数码 > 耳机", "小米", (("续航", "24小时"), ("颜色", "白色")))
OTHER = DescribeRequest("c3", "en", "Keep Yoga Mat", "Sports > Yoga Mats", "Keep", (("thickness", "6mm"),))
TEXTS = [
    "The Sony WH-1000XM5 Headphones. The color is black. Battery life: 30 hours.",
    "小米耳机，颜色为白色，续航24小时。",
    "A Keep mat, 6mm thick.",
    "red blue green grey 8mm 7天",
]


@pytest.fixture(scope="module")
def tok():
    t = TextTokenizer.train(TEXTS * 4, vocab_size=400, min_frequency=1)
    n_before = t.n_text
    added = add_slot_tokens(t, slot_keys([dict(r.attributes) for r in (EN, ZH, OTHER)], min_items=1))
    assert added == len(SlotVocab.of(t).by_name) and t.n_text == n_before + added
    return t


def _facts(slots, req):
    return slots.facts(req.brand, req.category, req.attributes, req.title)


def test_slot_tokens_are_appended_without_renumbering(tok):
    before = dict(tok.tk.get_vocab(with_added_tokens=True))
    assert add_slot_tokens(tok, ["color", "new key"]) == 1  # only the key it lacks
    after = tok.tk.get_vocab(with_added_tokens=True)
    assert all(after[t] == i for t, i in before.items()) and after[key_slot("new key")] == max(before.values()) + 1


def test_model_name_is_a_book_title_a_code_or_a_name_word_of_the_title():
    assert model_name("Sony WH-1000XM5 Black Headphones", ["Sony", "black"]) == "WH-1000XM5"
    assert model_name("《星河旅人》 科幻 平装", ["科幻"]) == "《星河旅人》"
    assert (
        model_name(
            "Willow Houseplants by Leafy Lane – Expert, 120cm",
            ["Leafy Lane", "expert", "120cm"],
            "Garden > Houseplants",
        )
        == "Willow"
    )  # not the brand, a value or the category
    assert model_name("【Barkbite】暖冬 狗零食 小型犬 500g", ["Barkbite", "小型犬", "500g"], "宠物 > 狗零食") == "暖冬"
    assert model_name("Apple iPhone 16 Case", ["Apple", "iPhone 16"], "Electronics > Phone Cases") == ""
    assert model_name("宜家 床单 1.5米 纯棉", ["宜家", "1.5米", "纯棉"], "家居 > 床单") == ""
    assert model_name("Cloud Cat Food by Pawcraft – 1.5kg", ["Pawcraft", "1.5kg"], "Pets > Cat Food") == "Cloud"


def test_delexicalize_then_realize_gives_the_text_back(tok):
    slots = SlotVocab.of(tok)
    for req, text in ((EN, TEXTS[0]), (ZH, TEXTS[1])):
        facts = _facts(slots, req)
        pieces = delexicalize(text, facts, slots.name_id)
        plain = "".join(p for p in pieces if isinstance(p, str))
        assert all(v.lower() not in plain.lower() for v in facts.values.values())  # every fact is a slot
        assert slots.name_id in pieces  # "color is black": the name bound to its value
        ids = [i for p in pieces for i in (tok.encode(p) if isinstance(p, str) else [p])]
        back, unbound = realize(ids, facts, tok.decode, slots.name_id, capitalize=req.language != "zh")
        assert unbound == 0 and back.lower() == text.lower()


def test_a_name_far_from_any_value_stays_text_and_an_unbound_name_is_counted(tok):
    slots = SlotVocab.of(tok)
    facts = _facts(slots, EN)
    pieces = delexicalize("Pick a color you like. It is black.", facts, slots.name_id)
    assert slots.name_id not in pieces and "color" in "".join(p for p in pieces if isinstance(p, str))
    text, unbound = realize(
        [*tok.encode("The "), slots.name_id, *tok.encode(" is great.")], facts, tok.decode, slots.name_id
    )
    assert unbound == 1 and "color" not in text


def _slot_loving_model(tok, items, seed=0, name_first=False):
    """A random model that would rather emit any slot token than text (with `name_first`, an attribute name
    whenever it may)."""
    torch.manual_seed(seed)
    model = GPT(
        GPTConfig(n_text=tok.n_text, n_items=len(items), block_size=160, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    ).eval()
    ids = SlotVocab.of(tok).ids
    real = model.text_logits

    def prefer_slots(h):
        logits = real(h)
        logits[..., ids] += 50.0 + torch.randn(len(ids))  # slots win over text, in a random order per call
        if name_first:
            logits[..., SlotVocab.of(tok).name_id] += 100.0
        return logits

    model.text_logits = prefer_slots
    return model


@pytest.mark.parametrize("seed,name_first", [(0, False), (1, False), (2, True), (3, True)])
def test_constrained_decoding_emits_only_the_items_own_slots_each_once(tok, seed, name_first):
    items = ItemVocab(["a1", "b2", "c3"])
    d = Describer(_slot_loving_model(tok, items, seed, name_first), tok, items, max_new_tokens=40)
    slots = SlotVocab.of(tok)
    reqs = [EN, ZH, OTHER]
    out = d.generate_ids([d.prompt(r) for r in reqs], reqs)
    for req, ids in zip(reqs, out):
        facts = _facts(slots, req)
        emitted = [i for i in ids if i in slots.ids]
        assert emitted, "the model prefers slots"
        values = [i for i in emitted if i != slots.name_id]
        assert set(values) <= set(facts.values) and len(values) == len(set(values))  # own slots, each once
        if name_first:  # a name before each value, bound to it
            assert emitted.count(slots.name_id) == len(facts.names)
        text, unbound = realize(ids, facts, tok.decode, slots.name_id)
        assert unbound == 0  # every name is bound to a value of its own
        assert not set(values) & {i for r in reqs if r is not req for i in _facts(slots, r).values} - set(facts.values)


def test_complete_adds_a_plain_sentence_for_what_the_shop_usually_names():
    lex = Lexicon(
        {"color": ["black", "white"], "battery life": ["30 hours"]}, ["Sony"], {"color": 1.0, "battery life": 0.9}
    )
    assert complete("The Sony Headphones in black.", EN, lex) == "The Sony Headphones in black. Battery life: 30 hours."
    assert complete("The Sony Headphones", EN, lex) == "The Sony Headphones. Battery life: 30 hours. Color: black."
    zh_lex = Lexicon({"颜色": ["白色"], "续航": ["24小时"]}, ["小米"], {"颜色": 1.0, "续航": 0.2})
    assert complete("小米耳机，好用", ZH, zh_lex) == "小米耳机，好用。颜色：白色。"  # 续航 is rarely named: left out


def test_the_gate_publishes_nothing_with_a_contradiction_a_wrong_brand_or_a_misbinding(tok):
    items = ItemVocab(["a1", "b2", "c3"])
    lex = Lexicon(
        {
            "color": ["black", "white"],
            "battery life": ["30 hours", "24 hours"],
            "颜色": ["白色", "黑色"],
            "续航": ["24小时", "7天"],
        },
        ["Sony", "Bose", "小米", "华为"],
    )
    said = {
        "a1": "The Sony Headphones in white, a joy to wear every day.",  # contradiction
        "b2": "华为耳机，颜色为白色，续航24小时。",  # wrong brand
        "c3": "Battery life: black, a mat for every day.",
    }  # misbinding (and a key the item lacks)

    class Says(Describer):
        def generate_ids(self, prompts, reqs):
            return [tok.encode(said[r.item_id]) for r in reqs]

    res = describe_batch(Says(_slot_loving_model(tok, items), tok, items, lexicon=lex), [EN, ZH, OTHER])
    assert [r.is_fallback for r in res] == [True, True, True]
    assert [r.reason for r in res] == ["contradiction", "wrong_brand", "misbinding"]
    assert [r.description for r in res] == [fallback_text(EN), fallback_text(ZH), fallback_text(OTHER)]
    assert res[0].model_text.startswith(said["a1"]) and "contradiction" in res[0].flags


def test_grown_vocabulary_keeps_every_trained_row():
    torch.manual_seed(0)
    old = GPT(GPTConfig(n_text=300, n_items=5, block_size=16, n_layer=1, n_head=2, n_embd=16))
    new = old.with_vocab(310, 7)
    w_old, w_new = old.wte.weight.detach(), new.wte.weight.detach()
    assert new.config.n_text == 310 and new.config.n_items == 7
    assert torch.equal(w_new[:300], w_old[:300]) and torch.equal(w_new[310:315], w_old[300:305])
    x = torch.tensor([[1, 5, 7]])
    assert torch.allclose(old.eval().hidden(x), new.eval().hidden(x))  # same text ids, same result
