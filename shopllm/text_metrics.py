"""Text quality measures for generated descriptions, for Chinese and English alike.

A "unit" is one CJK character or one run of other letters/digits (a word), lower-cased: Chinese is
not written with spaces, so n-grams over characters are the usual choice there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_UNITS = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+")
_CJK_CHAR = re.compile(rf"[{_CJK}]")
_LATIN_LETTER = re.compile(r"[A-Za-z]")


def units(text: str) -> list[str]:
    return _UNITS.findall((text or "").lower())


def ngrams(seq: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]


def distinct_n(texts: Iterable[str], n: int = 2) -> float:
    """Unique n-grams / all n-grams over the whole set of texts (0.0 when there are none)."""
    total, unique = 0, set()
    for t in texts:
        grams = ngrams(units(t), n)
        total += len(grams)
        unique.update(grams)
    return len(unique) / total if total else 0.0


def repeated_ngram_rate(text: str, n: int = 4) -> float:
    """Share of a text's n-grams that repeat an earlier n-gram of the same text (0.0 when none)."""
    grams = ngrams(units(text), n)
    return (len(grams) - len(set(grams))) / len(grams) if grams else 0.0


def repeated_ngram_rate_all(texts: Iterable[str], n: int = 4) -> float:
    """The repeated share pooled over texts: sum of repeats / sum of n-grams."""
    total = repeats = 0
    for t in texts:
        grams = ngrams(units(t), n)
        total += len(grams)
        repeats += len(grams) - len(set(grams))
    return repeats / total if total else 0.0


def cjk_share(text: str) -> float:
    """CJK characters / (CJK characters + Latin letters); 0.0 for text with neither."""
    cjk = len(_CJK_CHAR.findall(text or ""))
    latin = len(_LATIN_LETTER.findall(text or ""))
    return cjk / (cjk + latin) if cjk + latin else 0.0
