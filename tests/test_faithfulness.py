"""Faithfulness checks on hand-written Chinese and English descriptions: each error kind, whole words, CJK."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopllm.cleaning import chinese_punctuation, clean_line, clean_text
from shopllm.faithfulness import (
    CONTRADICTION,
    MISBINDING,
    UNKNOWN_CODE,
    UNKNOWN_KEY,
    UNSUPPORTED,
    WRONG_BRAND,
    WRONG_MODEL,
    Item,
    Lexicon,
    check,
    find_surfaces,
)

SHOP = [  # a tiny shop: its own descriptions are taken as correct
    {
        "brand": "Sony",
        "title": "Sony WH-1000XM5 Black Headphones",
        "attributes": {"color": "black", "battery life": "30 hours", "size": "S"},
        "description": "The Sony WH-1000XM5 in black. Battery life: 30 hours. Free returns within 7 days.",
    },
    {
        "brand": "Bose",
        "title": "Bose QC45 White Headphones",
        "attributes": {"color": "white", "battery life": "24 hours", "size": "M"},
        "description": "Bose QC45, white. Battery life: 24 hours. Free returns within 7 days.",
    },
    {
        "brand": "Keep",
        "title": "Keep Yoga Mat",
        "attributes": {"color": "red", "thickness": "6mm"},
        "description": "Keep it simple: a red mat, 6mm thick.",
    },
    {
        "brand": "小米",
        "title": "小米 R10 耳机 黑色",
        "attributes": {"颜色": "黑色", "续航": "24小时", "材质": "纯棉"},
        "description": "小米耳机，颜色为黑色，续航24小时，纯棉耳罩。",
    },
    {
        "brand": "华为",
        "title": "华为 手表 白色",
        "attributes": {"颜色": "白色", "续航": "7天", "材质": "棉"},
        "description": "华为手表，白色，续航7天。",
    },
    {
        "brand": "Spigen",
        "title": "Spigen Case for Xiaomi 15",
        "attributes": {"compatible with": "Xiaomi 15", "color": "white"},
        "description": "A Spigen case for the Xiaomi 15, in white.",
    },
    {
        "brand": "Xiaomi",
        "title": "Xiaomi 15 Phone",
        "attributes": {"storage": "256GB", "color": "black"},
        "description": "The Xiaomi 15 with 256GB, in black.",
    },
    {
        "brand": "Leafy Lane",
        "title": "Willow Houseplants by Leafy Lane",
        "category": "Garden > Houseplants",
        "attributes": {"height": "120cm"},
        "description": "Leafy Lane got the houseplant just right with the Willow.",
    },
    {
        "brand": "小米",
        "title": "小米 青柠 耳机 白色",
        "category": "数码 > 耳机",
        "attributes": {"颜色": "白色"},
        "description": "青柠是小米今年主推的耳机，白色。",
    },
]
LEX = Lexicon.from_items(SHOP)
SONY = Item.of("Sony", SHOP[0]["attributes"], SHOP[0]["title"])
XIAOMI_EAR = Item.of("小米", SHOP[3]["attributes"], SHOP[3]["title"])


def errors(text, item=SONY):
    return check(text, item, LEX).errors


def test_the_shops_own_descriptions_pass():
    for it in SHOP:
        f = check(it["description"], Item.of(it["brand"], it["attributes"], it["title"]), LEX)
        assert not f.blocking, (it["description"], f.errors)


@pytest.mark.parametrize(
    "text, kind, surface",
    [
        ("The Sony headphones in white.", CONTRADICTION, "white"),  # a colour it does not have
        ("Battery life: 24 hours.", CONTRADICTION, "24 hours"),
        ("Great sound from Bose.", WRONG_BRAND, "bose"),
        ("Battery life: black.", MISBINDING, "battery life: black"),  # its own value under another key
        ("Choose its black color: 30 hours.", MISBINDING, "color: 30 hours"),  # a colon binds forward
        ("A 6mm cushion.", UNSUPPORTED, "6mm"),  # a value of a key it does not have
        ("Thickness you will love.", UNKNOWN_KEY, "thickness"),
        ("The Sony N460 is here.", UNKNOWN_CODE, "n460"),  # a model number that is not its own
        ("The Sony QC45 is here.", WRONG_MODEL, "qc45"),  # another item's model
        ("Sony got it right with the Willow.", WRONG_MODEL, "willow"),  # another item's series name
    ],
)
def test_each_error_kind_in_english(text, kind, surface):
    assert surface in errors(text).get(kind, []), errors(text)


@pytest.mark.parametrize(
    "text, kind, surface",
    [
        ("小米耳机，颜色为白色。", CONTRADICTION, "白色"),
        ("华为出品的耳机。", WRONG_BRAND, "华为"),
        ("续航为黑色。", MISBINDING, "续航: 黑色"),
        ("采用黑色设计（续航）。", MISBINDING, "续航: 黑色"),  # value before its name, full-width brackets
        ("续航24小时，颜色为黑色，256GB大容量。", UNSUPPORTED, "256gb"),
        ("青柠是小米今年主推的耳机。", WRONG_MODEL, "青柠"),  # another item's series name
    ],
)
def test_each_error_kind_in_chinese(text, kind, surface):
    assert surface in errors(text, XIAOMI_EAR).get(kind, []), errors(text, XIAOMI_EAR)


def test_whole_words_not_substrings():
    # size "S" is not in "easy"; "30 hours" is not in "130 hours"; "5kg" would not be in "1.5kg"
    f = check("Easy to love: the Sony in black, 130 hours of fun.", SONY, LEX)
    assert "size" not in f.named and not f.errors
    assert [s for _, _, s in find_surfaces("1.5kg and 5kg", {"5kg": "x"})] == ["x"]
    assert find_surfaces("size S, easy", {"s": 1}) == [(5, 6, 1)]


def test_chinese_longest_entry_wins():
    # "纯棉" (this item's material) is one word, not "棉" (another item's material)
    f = check("小米耳机，黑色，纯棉耳罩，续航24小时。", XIAOMI_EAR, LEX)
    assert not f.errors and f.named == {"颜色", "材质", "续航"}


def test_a_value_inside_a_longer_own_value_is_not_another_brand():
    case = Item.of("Spigen", SHOP[5]["attributes"], SHOP[5]["title"])
    assert not check("A Spigen case for the Xiaomi 15, in white.", case, LEX).errors  # brand "Xiaomi" inside a value
    assert WRONG_BRAND in check("A Spigen case by Bose, in white.", case, LEX).errors


def test_calibration_makes_words_of_the_shops_voice_ambiguous():
    # "7 days" is every description's return policy, not a battery life: not counted as an error
    assert "7 days" not in LEX.ambiguous or not errors("Free returns within 7 days.")
    shop = [
        {"brand": "Acme", "attributes": {"filling": "latex"}, "description": f"Latex pillow {i}, never lets you down."}
        for i in range(3)
    ] + [{"brand": "Acme", "attributes": {"filling": "down"}, "description": "A down pillow."}]
    lex = Lexicon.from_items(shop)
    assert "down" in lex.ambiguous  # the shop's own texts use it as a plain word
    assert not check("Never lets you down.", Item.of("Acme", {"filling": "latex"}), lex).blocking


def test_coverage_is_judged_against_what_the_shop_usually_names():
    # every description names colour and battery life; size is never named
    assert LEX.naming["color"] == 1.0 and LEX.naming["size"] == 0.0
    f = check("The Sony in black, 30 hours of battery life.", SONY, LEX)
    assert f.expected == {"color", "battery life"} and f.coverage == 1.0
    assert check("The Sony in black.", SONY, LEX).coverage == 0.5


def test_chinese_punctuation_is_kept_and_made():
    assert clean_text("颜色：黑色，续航（24小时）！") == "颜色：黑色，续航（24小时）！"
    assert clean_line("ＡＢＣ１２３，好") == "ABC123，好"  # full-width Latin letters and digits still fold
    assert clean_line("ＡＢＣ，ｄｅｆ") == "ABC,def"  # no Chinese: ASCII
    assert chinese_punctuation("颜色:黑色,屏幕6.1英寸.") == "颜色：黑色，屏幕6.1英寸。"
    assert chinese_punctuation("iPhone 16, 256GB") == "iPhone 16, 256GB"


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_fold_is_the_one_for_one_lower_case_of_any_text(text):
    from shopllm.faithfulness import _fold

    per_char = "".join(low if len(low := c.lower()) == 1 else c for c in text)
    assert _fold(text) == per_char and len(_fold(text)) == len(text)
