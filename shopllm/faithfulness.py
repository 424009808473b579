"""Does a description state only the facts its item has? One module, used by the gate, evaluate and the bench.

A `Lexicon` holds what the shop's catalog names: every attribute value (with the keys it is a value of),
every brand and every attribute key. `check(text, item, lexicon)` finds their mentions in a text and sorts
them into what a reader would call an error:

- contradiction: a value of one of the item's own keys that is not the item's value (a colour it lacks);
- wrong brand: another brand of the shop;
- wrong model: another item's model or series name (`model_name` of its title) that this item's title lacks;
- misbinding: a value written next to an attribute name it is not a value of ("battery life: black");
- unsupported: a value of a key the item does not have (a battery life for a T-shirt);
- unknown key: an attribute name the item does not have;
- unknown code: a model number or other code (letters and digits in one word: "N460", "WH-1000XM5") that is
  neither in the item's title or attributes nor anywhere in the lexicon.

Mentions are whole words: a match may not start or end inside a run of letters or digits (so size "S" is not
found in "easy", "5kg" not in "1.5kg"). Chinese has no spaces, so inside CJK text the longest entry wins
where entries overlap ("纯棉" over "棉"), the usual dictionary-segmentation rule. Matching ignores case.

Some catalog words are also plain words of the shop's voice ("keep" is a brand, "down" a filling). The
lexicon is calibrated on the shop's own descriptions, which are taken as correct: a surface that the checks
would flag in several of them is ambiguous and no longer counts as an error anywhere. Coverage is judged
against what those descriptions usually name: a key is expected when most descriptions of items with that
key name its value.
"""

from __future__ import annotations

import functools
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

# error kinds (also the gate's reasons and the report's column names)
CONTRADICTION, WRONG_BRAND, WRONG_MODEL, MISBINDING, UNSUPPORTED, UNKNOWN_KEY, UNKNOWN_CODE = (
    "contradiction",
    "wrong_brand",
    "wrong_model",
    "misbinding",
    "unsupported",
    "unknown_key",
    "unknown_code",
)
ERROR_KINDS = (CONTRADICTION, WRONG_BRAND, WRONG_MODEL, MISBINDING, UNSUPPORTED, UNKNOWN_KEY, UNKNOWN_CODE)
# what keeps a text from being published (an unknown key alone is only reported: "size" or "type" are plain words)
BLOCKING = (CONTRADICTION, WRONG_BRAND, WRONG_MODEL, MISBINDING, UNSUPPORTED, UNKNOWN_CODE)

EXPECTED_NAMING = 0.5  # a key is expected in a description when at least this share of the shop's name it
BIND_GAP = 8  # characters between an attribute name and the value it is bound to, at most
AMBIGUOUS_MIN_TEXTS = 2  # a surface flagged in this many of the shop's own descriptions ...
AMBIGUOUS_MIN_SHARE = 0.05  # ... and in this share of those that mention it is ambiguous

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")
CLAUSE_END = re.compile(r"[。.!?！？;；\n]")
# a word of letters and digits together: model numbers, codes ("N460", "WH-1000XM5", "3CE"); never the tail of a
# decimal ("5kg" of "1.5kg")
CODE = re.compile(
    r"(?<![A-Za-z0-9])(?<![0-9][.,])(?=[A-Za-z0-9-]*[A-Za-z])(?=[A-Za-z0-9-]*[0-9])[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*"
    r"(?![A-Za-z0-9])"
)


_BOOK_TITLE = re.compile(r"《[^《》]+》")
_TITLE_WORD = re.compile(r"[A-Za-z][A-Za-z'&.-]*[A-Za-z]|[\u3400-\u4dbf\u4e00-\u9fff]+")


def model_name(title: str | None, taken: Iterable[str] = (), category: str | None = None) -> str:
    """The item's model or series name as its title writes it: a title in 《》, else the first code of letters
    and digits ("N460"), else the first name word (a capitalised Latin word or a Chinese run of 2-6
    characters: "Willow", "暖冬") that is not part of `taken` (its brand and attribute values) nor a word of its
    category's last level; "" when there is none."""
    title = title or ""
    book = _BOOK_TITLE.search(title)
    if book:
        return book.group(0)
    taken = [normalize(t) for t in taken if t]
    part_of_taken = lambda w: any(w == t or w in t.split() for t in taken)  # noqa: E731
    for c in CODE.finditer(title):
        if not part_of_taken(normalize(c.group())):
            return c.group()
    leaf = normalize((category or "").split(">")[-1]).split()
    for w in _TITLE_WORD.findall(title):
        n = normalize(w)
        cjk = bool(_CJK.match(w))
        if (not cjk and w == n) or (cjk and not 2 <= len(w) <= 6) or part_of_taken(n):
            continue
        if any(n.startswith(x) or x.startswith(n) for x in leaf):  # "Case" of "Phone Cases"
            continue
        if cjk and any(n in t for t in taken + leaf):
            continue
        return w
    return ""


@functools.lru_cache(maxsize=1 << 16)  # a shop's values and keys repeat over its items
def normalize(s: str) -> str:
    """The form entries are matched in: lower case, one space between words (texts and entries are both
    cleaned by ingest, so no other normalisation is needed)."""
    return " ".join(_fold(s or "").split())


def _fold(text: str) -> str:
    """Lower case, one character for one character (so match positions are positions in the text)."""
    low = text.lower()
    # str.lower() maps each character on its own except a final sigma; when no character grew, it is
    # the per-character fold (every character maps to at least one)
    if len(low) == len(text) and "Σ" not in text:
        return low
    return "".join(low if len(low := c.lower()) == 1 else c for c in text)


def _is_word(c: str) -> bool:
    return c.isalnum() and not _CJK.match(c)


def _starts_word(text: str, i: int) -> bool:
    """Whether a match may start at i: not inside a word or a number ("1.5kg" holds no "5kg")."""
    if i == 0 or not _is_word(text[i]):
        return True
    prev = text[i - 1]
    if _is_word(prev):
        return False
    return not (prev in ".," and i >= 2 and text[i - 2].isdigit() and text[i].isdigit())


def _ends_word(text: str, j: int) -> bool:
    """Whether a match may end before j."""
    if j >= len(text) or not _is_word(text[j - 1]):
        return True
    nxt = text[j]
    if _is_word(nxt):
        return False
    return not (nxt in ".," and j + 1 < len(text) and text[j + 1].isdigit() and text[j - 1].isdigit())


def find_surfaces(text: str, surfaces: Mapping[str, object]) -> list[tuple[int, int, object]]:
    """(start, end, surfaces[s]) of every whole-word mention of a surface `s` (normalised) in `text`,
    leftmost-longest, not overlapping."""
    low = _fold(text)
    by_first: dict[str, list[str]] = defaultdict(list)
    for s in sorted(surfaces, key=len, reverse=True):
        if s:
            by_first[s[0]].append(s)
    out = []
    end = 0  # matches do not overlap: the next one starts at or after the last one's end
    for i, c in enumerate(low):
        if i < end or c not in by_first:
            continue
        for s in by_first[c]:  # longest first
            if low.startswith(s, i) and _starts_word(low, i) and _ends_word(low, i + len(s)):
                out.append((i, i + len(s), surfaces[s]))
                end = i + len(s)
                break
    return out


class Role(NamedTuple):
    kind: str  # 'value' | 'brand' | 'key' | 'model'
    key: str | None  # the (normalised) key of a value or key name; None for a brand


class Mention(NamedTuple):
    start: int
    end: int
    surface: str  # normalised
    roles: frozenset[Role]

    def values_of(self) -> set[str]:
        return {r.key for r in self.roles if r.kind == "value"}

    def key_names(self) -> set[str]:
        return {r.key for r in self.roles if r.kind == "key"}

    @property
    def is_brand(self) -> bool:
        return any(r.kind == "brand" for r in self.roles)

    @property
    def is_model(self) -> bool:
        return any(r.kind == "model" for r in self.roles)


class Item(NamedTuple):
    """What a check needs of an item: its brand, attributes (keys and values as in the catalog) and title."""

    brand: str | None
    attributes: Mapping[str, str]
    title: str = ""

    @classmethod
    def of(cls, brand: str | None, attributes, title: str | None = "") -> Item:
        pairs = attributes.items() if isinstance(attributes, Mapping) else (attributes or ())
        return cls(brand, {k: v for k, v in pairs if k and v}, title or "")


@dataclass
class Findings:
    """What `check` found in one text."""

    errors: dict[str, list[str]] = field(default_factory=dict)  # kind -> the surfaces found
    named: set[str] = field(default_factory=set)  # the item's (normalised) keys whose value the text names
    expected: set[str] = field(default_factory=set)  # the item's keys the shop's descriptions usually name
    brand_named: bool = False

    def has(self, kind: str) -> bool:
        return bool(self.errors.get(kind))

    @property
    def blocking(self) -> list[str]:
        return [k for k in BLOCKING if self.has(k)]

    @property
    def coverage(self) -> float | None:
        """Share of the expected keys the text names; None when the item has none expected."""
        return len(self.named & self.expected) / len(self.expected) if self.expected else None

    def flags(self) -> list[str]:
        return [k for k in ERROR_KINDS if self.has(k)]


class Lexicon:
    """The shop's attribute values, brands and keys, with a trie for whole-word, longest-first matching."""

    def __init__(
        self,
        values: Mapping[str, Iterable[str]],
        brands: Iterable[str],
        naming: Mapping[str, float] = (),
        ambiguous: Iterable[str] = (),
        models: Iterable[str] = (),
    ):
        """values: normalised key -> its values; brands; naming: key -> share of the shop's descriptions of items
        with the key that name its value; ambiguous: surfaces never counted as errors; models: the items'
        model names."""
        self.values = {normalize(k): {normalize(v) for v in vs if normalize(v)} for k, vs in values.items()}
        self.brands = {normalize(b) for b in brands if normalize(b)}
        self.models = {normalize(m) for m in models if normalize(m)}
        self.naming = dict(naming)
        self.ambiguous = set(ambiguous)
        roles: dict[str, set[Role]] = defaultdict(set)
        for key, vs in self.values.items():
            if key:
                roles[key].add(Role("key", key))
            for v in vs:
                roles[v].add(Role("value", key))
        for b in self.brands:
            roles[b].add(Role("brand", None))
        for m in self.models:
            roles[m].add(Role("model", None))
        self.trie: dict = {}
        for surface, rs in roles.items():
            node = self.trie
            for c in surface:
                node = node.setdefault(c, {})
            node[""] = frozenset(rs)

    @classmethod
    def from_items(cls, items: Iterable[Mapping]) -> Lexicon:
        """From curated item rows (dicts with brand, attributes and description), calibrated on their
        descriptions."""
        items = list(items)
        values: dict[str, set[str]] = defaultdict(set)
        brands, models = set(), set()
        for it in items:
            own = Item.of(it.get("brand"), it.get("attributes")).attributes
            for k, v in own.items():
                values[normalize(k)].add(v)
            if it.get("brand"):
                brands.add(it["brand"])
            models.add(model_name(it.get("title"), [it.get("brand") or "", *own.values()], it.get("category")))
        lex = cls(values, brands, models=models)
        lex.calibrate(
            [
                (it.get("description") or "", Item.of(it.get("brand"), it.get("attributes"), it.get("title")))
                for it in items
            ]
        )
        return lex

    def calibrate(self, described: Sequence[tuple[str, Item]]) -> None:
        """Learn naming rates and ambiguous surfaces from the shop's own (correct) descriptions."""
        has_key, names_key = Counter(), Counter()
        mentioned, flagged = Counter(), Counter()
        for text, item in described:
            if not text:
                continue
            f = check(text, item, self, surfaces=(seen := Counter()))
            for key in {normalize(k) for k in item.attributes}:
                has_key[key] += 1
                names_key[key] += key in f.named
            for s in seen:
                mentioned[s] += 1
            for s in {s for kind in ERROR_KINDS for s in f.errors.get(kind, [])}:
                flagged[s] += 1
        self.naming = {k: names_key[k] / n for k, n in has_key.items()}
        self.ambiguous |= {
            s for s, n in flagged.items() if n >= AMBIGUOUS_MIN_TEXTS and n >= AMBIGUOUS_MIN_SHARE * mentioned[s]
        }

    def expected_keys(self, item: Item) -> set[str]:
        return {k for k in map(normalize, item.attributes) if self.naming.get(k, 0.0) >= EXPECTED_NAMING}

    def mentions(self, text: str, extra: Mapping[str, frozenset[Role]] = ()) -> list[Mention]:
        """Every lexicon entry (plus `extra` surfaces) in `text`, leftmost-longest, whole words only."""
        low = _fold(text)
        out: list[Mention] = []
        i = 0
        while i < len(low):
            best = None
            if _starts_word(low, i):
                node, j = self.trie, i
                while j < len(low) and (node := node.get(low[j])) is not None:
                    j += 1
                    if "" in node and _ends_word(low, j):
                        best = (j, node[""])
                for surface, roles in extra.items():  # the item's own entries, when the lexicon lacks them
                    j = i + len(surface)
                    if (best is None or j > best[0]) and low.startswith(surface, i) and _ends_word(low, j):
                        best = (j, roles)
            if best is None:
                i += 1
                continue
            j, roles = best
            out.append(Mention(i, j, " ".join(low[i:j].split()), roles))
            i = j
        return out


def check(text: str, item: Item, lexicon: Lexicon, surfaces: Counter | None = None) -> Findings:
    """The faithfulness findings of `text` as a description of `item` (see the module docstring)."""
    own = {normalize(k): normalize(v) for k, v in item.attributes.items()}
    own_values = set(own.values())
    brand = normalize(item.brand or "")
    extra = {v: frozenset({Role("value", k)}) for k, v in own.items() if v}
    if brand:
        extra.setdefault(brand, frozenset({Role("brand", None)}))
    title = _fold(item.title)
    found = Findings(expected=lexicon.expected_keys(item))
    errors: dict[str, list[str]] = defaultdict(list)
    mentions = lexicon.mentions(text, extra)
    for m in mentions:
        if surfaces is not None:
            surfaces[m.surface] += 1
        if m.surface in own_values:
            found.named |= {k for k, v in own.items() if v == m.surface}
            continue
        if m.surface == brand:
            found.brand_named = True
            continue
        if m.surface in lexicon.ambiguous or _has_word(title, m.surface):  # the item's own title supports it
            continue
        keys = m.values_of()
        if keys & own.keys():
            errors[CONTRADICTION].append(m.surface)
        elif m.is_brand:
            errors[WRONG_BRAND].append(m.surface)
        elif m.is_model:
            errors[WRONG_MODEL].append(m.surface)
        elif keys:
            errors[UNSUPPORTED].append(m.surface)
        elif m.key_names() and not m.key_names() & own.keys():
            errors[UNKNOWN_KEY].append(m.surface)
    for surface in _misbound(text, mentions, lexicon):
        errors[MISBINDING].append(surface)
    errors[UNKNOWN_CODE].extend(c for c in _unknown_codes(text, mentions, item) if c not in lexicon.ambiguous)
    found.errors = {k: v for k, v in errors.items() if v}
    return found


def _unknown_codes(text: str, mentions: list[Mention], item: Item) -> list[str]:
    """Codes in `text` outside every lexicon mention that the item's title and values do not hold."""
    own = _fold(" ".join([item.title, item.brand or "", *item.attributes.values()]))
    covered = [(m.start, m.end) for m in mentions]
    out = []
    for c in CODE.finditer(text):
        if any(s <= c.start() and c.end() <= e for s, e in covered):
            continue
        if not _has_word(own, _fold(c.group())):
            out.append(_fold(c.group()))
    return out


def _has_word(text: str, word: str) -> bool:
    """Whether `word` occurs in `text` (both folded) as a whole word."""
    i = text.find(word) if word else -1
    while i >= 0:
        if _starts_word(text, i) and _ends_word(text, i + len(word)):
            return True
        i = text.find(word, i + 1)
    return False


def _misbound(text: str, mentions: list[Mention], lexicon: Lexicon) -> list[str]:
    """`key value` pairs (the nearest value mention on either side of an attribute name, within BIND_GAP
    characters of the same clause) where the value is not one of that key's values."""
    out = []
    is_value = [bool(m.values_of()) for m in mentions]
    for n, m in enumerate(mentions):
        names = m.key_names()
        if not names or m.values_of() or m.is_brand or m.surface in lexicon.ambiguous:
            continue
        b = bound_neighbour(text, [(x.start, x.end) for x in mentions], n, is_value)
        if b is None or mentions[b].surface in lexicon.ambiguous:
            continue
        if not any(mentions[b].surface in lexicon.values.get(k, ()) for k in names):
            out.append(f"{m.surface}: {mentions[b].surface}")
    return out


def bound_neighbour(text: str, spans: Sequence[tuple[int, int]], n: int, is_value: Sequence[bool]) -> int | None:
    """The index of the value an attribute name at spans[n] is bound to: the next or previous span, if it is a
    value (`is_value`) within BIND_GAP characters of the same clause; the next one when a colon follows the
    name, else the nearer one, the next on a tie."""
    best, best_gap = None, BIND_GAP + 1
    start, end = spans[n]
    for other in (n + 1, n - 1):
        if not 0 <= other < len(spans) or not is_value[other]:
            continue
        gap = text[end : spans[other][0]] if other > n else text[spans[other][1] : start]
        if CLAUSE_END.search(gap) or len(gap) > BIND_GAP:
            continue
        if other > n and gap.lstrip().startswith((":", "：")):
            return other  # "name: value" reads forward, however near a value before it
        if len(gap) < best_gap:
            best, best_gap = other, len(gap)
    return best
