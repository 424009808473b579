import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopllm.cleaning import (
    EMAIL_MASK,
    PHONE_MASK,
    clean_attributes,
    clean_line,
    clean_query,
    clean_text,
    detect_language,
    normalize_category,
)
from shopllm.hashing import source_hash

TAG = re.compile(r"<\s*/?\s*[A-Za-z][^<>]*>")


# ---- examples -----------------------------------------------------------------------------------


def test_html_becomes_lines_of_text():
    html = "<div><p>Great&nbsp;sound &amp; bass</p><ul><li>BT 5.3</li><li>30h</li></ul>end<br/>last</div>"
    assert clean_text(html) == "Great sound & bass\nBT 5.3\n30h\nend\nlast"


def test_script_style_and_comments_vanish():
    assert clean_text("<style>p{color:red}</style>a<!-- hidden -->b<script>alert(1)</script>") == "ab"


def test_escaped_and_fullwidth_tags_are_removed_too():
    assert clean_text("&lt;b&gt;bold&lt;/b&gt; &amp;lt;i&amp;gt;x") == "bold x"
    assert clean_text("＜b＞全角＜/b＞") == "全角"


def test_a_lone_angle_bracket_is_text():
    assert clean_text("size < 5 and > 2") == "size < 5 and > 2"


def test_nfkc_controls_and_whitespace():
    assert clean_text("ＡＢＣ１２３\x00\x07  tab\there \r\n\n\n  next   line ") == "ABC123 tab here\nnext line"


def test_pii_is_masked_but_numbers_that_are_not_phones_stay():
    text = (
        "Mail sales.cn@example.com.cn or call +86 138-0013-8000 / (021) 6234 5678. "
        "2024-01-15, ¥1999, 5000mAh, 13800138000"
    )
    out = clean_text(text)
    assert "example.com" not in out and "0013" not in out and "6234" not in out and "13800138000" not in out
    assert out.count(EMAIL_MASK) == 1 and out.count(PHONE_MASK) == 3
    assert "2024-01-15" in out and "1999" in out and "5000mAh" in out


def test_chinese_and_emoji_survive():
    assert clean_text("<p>无线蓝牙耳机 🎧👍🏽 超长续航</p>") == "无线蓝牙耳机 🎧👍🏽 超长续航"


def test_clean_line_joins_lines():
    assert clean_line("<p>a</p><p>b</p>") == "a b"
    assert clean_line(None) == "" and clean_text("") == ""


@pytest.mark.parametrize(
    "raw", ["数码>耳机 ", "数码 / 耳机", " 数码|耳机", "数码 &gt; 耳机", "数码 > > 耳机", "数码＞耳机"]
)
def test_category_paths_normalise(raw):
    assert normalize_category(raw) == "数码 > 耳机"


def test_attributes_cleaned_sorted_and_empty_dropped():
    attrs = {" Color ": "<b>Red</b>", "": "x", "size": "  ", "容量": "２５６GB"}
    assert clean_attributes(attrs) == [("Color", "Red"), ("容量", "256GB")]


def test_query_is_one_lowercased_line():
    assert clean_query("  Wireless\nEARBUDS  蓝牙 ") == "wireless earbuds 蓝牙"


def test_language_from_title_script():
    assert detect_language("Sony 无线耳机") == "zh"
    assert detect_language("Sony WH-1000XM5 🎧") == "en"


def test_source_hash_is_stable_and_sensitive():
    base = source_hash("t", "d", "a > b", "brand", [("k", "v"), ("a", "b")], 9.5)
    assert base == source_hash("t", "d", "a > b", "brand", [("a", "b"), ("k", "v")], 9.5)
    assert len(base) == 16 and int(base, 16) >= 0
    assert base != source_hash("t", "d", "a > b", "brand", [("a", "b"), ("k", "v")], 9.6)
    assert base != source_hash("t2", "d", "a > b", "brand", [("a", "b"), ("k", "v")], 9.5)


# ---- properties ---------------------------------------------------------------------------------

TAGS = st.sampled_from(
    [
        "<p>",
        "</p>",
        "<br/>",
        "<li>",
        "</li>",
        "<b>",
        "</b>",
        "<div class='x'>",
        "<",
        ">",
        "&amp;",
        "&lt;",
        "&gt;",
        "&nbsp;",
        "&#x4e2d;",
        "\n",
        "\t",
        "\x00",
        "\u200b",
        "＜",
        "＞",
        "  ",
    ]
)
CJK = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5)
EMOJI = st.sampled_from(["🎧", "👍", "🔥", "😀", "🛒", "❤️", "👍🏽"])
MESSY = st.lists(st.one_of(st.text(max_size=8), TAGS, CJK, EMOJI), max_size=30).map("".join)


@settings(max_examples=300, deadline=None)
@given(MESSY)
def test_cleaning_is_idempotent(s):
    once = clean_text(s)
    assert clean_text(once) == once
    assert clean_line(clean_line(s)) == clean_line(s)
    assert normalize_category(normalize_category(s)) == normalize_category(s)
    assert clean_query(clean_query(s)) == clean_query(s)


@settings(max_examples=300, deadline=None)
@given(MESSY)
def test_no_tags_or_controls_left(s):
    out = clean_text(s)
    assert not TAG.search(out)
    assert not any(ord(c) < 32 and c != "\n" for c in out)
    assert all(line == line.strip() and line for line in out.split("\n")) or out == ""


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(CJK, EMOJI), min_size=1, max_size=10), st.lists(TAGS, max_size=5))
def test_chinese_and_emoji_kept(words, tags):
    text = "".join(t + w for t, w in zip(tags + [""] * len(words), words))
    out = clean_text(text)
    for w in words:
        assert w in out


LOCAL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._", min_size=1, max_size=10).filter(
    lambda s: s[0].isalnum()
)
DOMAIN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)
PHONE = st.tuples(
    st.sampled_from(["", "+86 ", "+1 "]), st.integers(100, 999), st.integers(1000, 9999), st.integers(1000, 9999)
).map(lambda p: f"{p[0]}{p[1]}-{p[2]} {p[3]}")
FILLER = st.text(
    alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x4E50) | st.sampled_from(" ,:"), max_size=6
)


@settings(max_examples=200, deadline=None)
@given(FILLER, LOCAL, DOMAIN, PHONE, FILLER)
def test_pii_masked(before, local, domain, phone, after):
    email = f"{local}@{domain}.com"
    out = clean_text(f"{before} {email} {after} {phone}")
    assert email not in out and EMAIL_MASK in out
    assert PHONE_MASK in out and not re.search(r"\d{4}", out)
