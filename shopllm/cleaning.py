"""Text cleaning for catalog fields and search queries: pure functions, idempotent.

`clean_text` turns HTML into plain text (block tags become line breaks), unescapes entities,
applies NFKC, removes control characters (keeping line breaks), collapses whitespace per line and
masks e-mail addresses and phone numbers. Chinese and emoji pass through untouched: in text that holds
Chinese, the full-width punctuation Chinese is written with (`，：；！？（）`) is kept, while full-width
Latin letters and digits are still folded to ASCII.
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata

EMAIL_MASK = "[email]"
PHONE_MASK = "[phone]"

# Things that look like a tag: `<b>`, `</p >`, `<br/>`, `<a href=...>`. A lone `<` (as in "size < 5") is text.
_TAG = re.compile(r"<\s*/?\s*[A-Za-z][^<>]*>")
_BLOCK_TAG = re.compile(
    r"<\s*/?\s*(?:p|br|div|li|ul|ol|tr|table|h[1-6]|section|article|blockquote|pre|hr|dd|dt|dl)\b[^<>]*>", re.I
)
_HIDDEN = re.compile(r"<\s*(script|style)\b[^<>]*>.*?<\s*/\s*\1\s*>", re.I | re.S)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
# Digit groups joined by at most two of ` ()-`: masked when the run holds 9 to 15 digits (so prices,
# dates like 2024-01-15 and model numbers stay). No `.`: it would join a number to the next sentence.
_PHONE_RUN = re.compile(r"[+(]?[0-9]+(?:[ ()-]{1,2}[0-9]+)*")
_CATEGORY_SEP = re.compile(r"\s*[>/|»›]\s*")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")

# Full-width punctuation of Chinese text that NFKC would fold to ASCII.
_ZH_PUNCT = "，：；！？（）"
_ZH_PUNCT_RUN = re.compile(f"[{_ZH_PUNCT}]")
_ASCII_TO_ZH = {",": "，", ":": "：", ";": "；", "!": "！", "?": "？", "(": "（", ")": "）", ".": "。"}
# ASCII punctuation written next to a Chinese character (the period only at a clause end, not in 6.1)
_ASCII_PUNCT_BY_CJK = re.compile(
    r"(?<=[\u3400-\u9fff\uf900-\ufaff])[,:;!?)]|[(](?=[\u3400-\u9fff\uf900-\ufaff])"
    r"|(?<=[\u3400-\u9fff\uf900-\ufaff])\.(?!\d)"
)

# Control characters (Cc) and lone surrogates are dropped; tab and CR become whitespace.
_CONTROL_MAP = {c: None for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)}
_CONTROL_MAP.update({c: None for c in range(0x7F, 0xA0)})
_CONTROL_MAP.update({0x09: " ", 0x0D: "\n"})
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _strip_tags(s: str) -> str:
    s = _COMMENT.sub("", s)
    s = _HIDDEN.sub("", s)
    s = _BLOCK_TAG.sub("\n", s)
    # removing a tag can join `<` and `b>` into a new tag: repeat until none is left
    while True:
        stripped = _TAG.sub("", s)
        if stripped == s:
            return s
        s = stripped


def _unescape(s: str) -> str:
    # feeds double-escape (`&amp;lt;`); every change shrinks the string, so this ends
    while "&" in s:
        unescaped = html.unescape(s)
        if unescaped == s:
            break
        s = unescaped
    return s


def _drop_controls(s: str) -> str:
    s = s.translate(_CONTROL_MAP)
    return _SURROGATE.sub("", s) if not s.isascii() else s


def _decode(s: str, html_input: bool) -> str:
    """NFKC, controls, tags and entities until nothing changes: each step can expose work for another
    (fullwidth `＜b＞` becomes a tag under NFKC, `&lt;b&gt;` a tag after unescaping)."""
    for _ in range(8):
        before = s
        if not s.isascii() and not unicodedata.is_normalized("NFKC", s):
            s = _nfkc(s)
        s = _drop_controls(s)
        if "&" in s:
            s = _unescape(s)
        if html_input and "<" in s:
            s = _strip_tags(s)
        if s == before:
            break
    return s


def _nfkc(s: str) -> str:
    """NFKC, except the full-width punctuation of text that holds Chinese."""
    if not _CJK.search(s) or not _ZH_PUNCT_RUN.search(s):
        return unicodedata.normalize("NFKC", s)
    pieces = _ZH_PUNCT_RUN.split(s)
    marks = _ZH_PUNCT_RUN.findall(s)
    return "".join(
        unicodedata.normalize("NFKC", p) + (marks[i] if i < len(marks) else "") for i, p in enumerate(pieces)
    )


def chinese_punctuation(s: str) -> str:
    """Chinese text with the ASCII punctuation written next to its characters made full-width (`黑色,` ->
    `黑色，`); decimals (6.1英寸) and Latin text stay as they are."""
    return _ASCII_PUNCT_BY_CJK.sub(lambda m: _ASCII_TO_ZH[m.group(0)], s)


def _mask_phone(m: re.Match) -> str:
    run = m.group(0)
    digits = sum(c.isdigit() for c in run)
    return PHONE_MASK if 9 <= digits <= 15 else run


def mask_pii(s: str) -> str:
    """E-mail addresses -> [email], phone numbers (9-15 digits) -> [phone]."""
    if "@" in s:
        s = _EMAIL.sub(EMAIL_MASK, s)
    return _PHONE_RUN.sub(_mask_phone, s)


def clean_text(s: str | None, *, html_input: bool = True) -> str:
    """Multi-line plain text: one line per paragraph, list item or <br>; no empty lines."""
    if not s:
        return ""
    if len(s) <= _SHORT:
        return _clean_short(s, html_input)
    return _clean(s, html_input)


_SHORT = 64


@functools.lru_cache(maxsize=1 << 16)
def _clean_short(s: str, html_input: bool) -> str:
    # brands, currencies, categories and attribute pairs repeat across a catalog: clean each once
    return _clean(s, html_input)


def _clean(s: str, html_input: bool) -> str:
    s = _decode(s, html_input)
    lines = (" ".join(line.split()) for line in s.split("\n"))
    s = "\n".join(line for line in lines if line)
    return mask_pii(s)


def clean_line(s: str | None, *, html_input: bool = True) -> str:
    """Single-line text (titles, brands, attribute keys and values): line breaks become spaces."""
    if not s:
        return ""
    return clean_text(s, html_input=html_input).replace("\n", " ")


def clean_query(s: str | None) -> str:
    """A search query: one line, lowercased (no effect on Chinese)."""
    return clean_line(s, html_input=False).lower()


def normalize_category(s: str | None) -> str:
    """`数码>耳机 `, `数码 / 耳机`, `数码|耳机` -> `数码 > 耳机` (empty levels dropped)."""
    s = clean_line(s)
    if not s:
        return ""
    # a `<` left in a level could form a tag with the ` > ` we join with (`<A` + ` > 0`), so drop it
    levels = (" ".join(level.replace("<", " ").split()) for level in _CATEGORY_SEP.split(s))
    return " > ".join(level for level in levels if level)


def clean_attributes(attrs: dict[str, str] | None) -> list[tuple[str, str]]:
    """Cleaned (key, value) pairs sorted by key; empty keys or values dropped, the last duplicate key wins."""
    if not attrs:
        return []
    out: dict[str, str] = {}
    for key, value in attrs.items():
        k, v = clean_line(key), clean_line(value)
        if k and v:
            out[k] = v
    return sorted(out.items())


def detect_language(title: str) -> str:
    """'zh' when the title holds any CJK ideograph, else 'en'."""
    return "zh" if _CJK.search(title) else "en"
