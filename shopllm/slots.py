"""Placeholders: descriptions are learned and generated with the item's facts as typed slot tokens.

A small model trained for minutes copies values from its prompt badly (another colour, another brand, a
value under the wrong attribute). So the model is taught the shop's voice with the facts taken out: in every
training description the item's own attribute values, brand, category name and model name (a code of its
title, see `shopllm.faithfulness.model_name`) are replaced by slot tokens (`<key:颜色>`, `<slot:brand>`,
`<slot:category>`, `<slot:model>`), and an attribute name written next to its own value by `<slot:name>`.
Decoding may emit only the slots the item has, each value slot once, and the values are filled in after
generation from the item's record (`realize`); a `<slot:name>` becomes the name of the value slot it is
bound to (the nearer neighbour in the same clause, by the rule the faithfulness check uses), so a value can
never be written under another attribute's name.

Slot tokens are special tokens appended to the text tokenizer (`add_slot_tokens`), never renumbering the ids
before them: a model trained on an earlier night keeps its rows and gets new ones (`GPT.with_vocab`). A key
gets a slot when enough items of the shop have it; the values of rarer keys stay plain text.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from shopllm.faithfulness import BIND_GAP, CLAUSE_END, bound_neighbour, find_surfaces, model_name, normalize

BRAND_SLOT = "<slot:brand>"
CATEGORY_SLOT = "<slot:category>"
MODEL_SLOT = "<slot:model>"
NAME_SLOT = "<slot:name>"
FIXED_SLOTS = (BRAND_SLOT, CATEGORY_SLOT, MODEL_SLOT, NAME_SLOT)
KEY_SLOT_PREFIX = "<key:"
MIN_SLOT_ITEMS = 2  # a key gets a slot token when at least this many items have it
MAX_SLOT_KEYS = 2000  # the most common keys only, so a messy catalog cannot flood the vocabulary
_SENTENCE_START = re.compile(r"(?:^|[.!?]\s+|\n)\s*$")


def key_slot(key: str) -> str:
    return f"{KEY_SLOT_PREFIX}{normalize(key)}>"


def category_leaf(category: str | None) -> str:
    """The last level of a category path (`数码 > 耳机` -> `耳机`): what a description calls the product."""
    return (category or "").split(" > ")[-1].strip()


@dataclass(frozen=True)
class Facts:
    """One item's slots: slot id -> the text it stands for, and key slot id -> the attribute's name."""

    values: dict[int, str] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SlotVocab:
    """The slot tokens of a tokenizer: slot name -> token id."""

    by_name: Mapping[str, int]  # FIXED_SLOTS / key_slot(k) -> token id

    @classmethod
    def of(cls, tokenizer) -> SlotVocab:
        added = tokenizer.tk.get_added_tokens_decoder()
        names = {getattr(t, "content", str(t)): i for i, t in added.items()}
        return cls({n: i for n, i in names.items() if n in FIXED_SLOTS or n.startswith(KEY_SLOT_PREFIX)})

    def __bool__(self) -> bool:
        return bool(self.by_name)

    @property
    def ids(self) -> list[int]:
        return sorted(self.by_name.values())

    @property
    def name_id(self) -> int | None:
        return self.by_name.get(NAME_SLOT)

    def facts(
        self, brand: str | None, category: str | None, attributes: Iterable[tuple[str, str]], title: str | None = None
    ) -> Facts:
        """The slots this vocabulary has for one item."""
        values: dict[int, str] = {}
        names: dict[int, str] = {}
        attributes = [(k, v) for k, v in attributes if k and v]
        for k, v in attributes:
            i = self.by_name.get(key_slot(k))
            if i is not None and i not in values:
                values[i], names[i] = v, k
        model = model_name(title, [brand or "", *(v for _, v in attributes)], category)
        for name, value in ((BRAND_SLOT, brand), (CATEGORY_SLOT, category_leaf(category)), (MODEL_SLOT, model)):
            if value and name in self.by_name:
                values[self.by_name[name]] = value
        return Facts(values, names)


def slot_keys(
    attributes: Iterable[Iterable[tuple[str, str]] | Mapping | None],
    min_items: int = MIN_SLOT_ITEMS,
    max_keys: int = MAX_SLOT_KEYS,
) -> list[str]:
    """The normalised keys that deserve a slot: had by at least `min_items` items, the `max_keys` most common."""
    counts: Counter = Counter()
    for attrs in attributes:
        pairs = attrs.items() if isinstance(attrs, Mapping) else (attrs or ())
        counts.update({normalize(k) for k, v in pairs if k and v and normalize(k)})
    common = sorted((k for k, n in counts.items() if n >= min_items), key=lambda k: (-counts[k], k))
    return common[:max_keys]


def add_slot_tokens(tokenizer, keys: Sequence[str]) -> int:
    """Append the slot tokens the tokenizer lacks (the fixed ones, one per key), in a fixed order; returns how
    many were added. Existing ids never change."""
    have = set(SlotVocab.of(tokenizer).by_name)
    wanted = [*FIXED_SLOTS, *sorted(key_slot(k) for k in keys)]
    new = [t for t in dict.fromkeys(wanted) if t not in have]
    if new:
        tokenizer.tk.add_special_tokens(new)
    return len(new)


def delexicalize(text: str, facts: Facts, name_slot: int | None = None) -> list[str | int]:
    """`text` cut into plain pieces and slot ids: every whole-word mention of a fact becomes its slot (the
    longest wins where they overlap; an attribute value wins over an equal brand or category), and with
    `name_slot` every attribute name bound to its own value becomes `name_slot`."""
    surfaces: dict[str, tuple[str, int]] = {}
    for slot, value in facts.values.items():
        surfaces.setdefault(normalize(value), ("value", slot))
    if name_slot is not None:
        for slot, key in facts.names.items():
            surfaces.setdefault(normalize(key), ("name", slot))
    found = find_surfaces(text, surfaces)
    spans = [(a, b) for a, b, _ in found]
    is_value = [kind == "value" for _, _, (kind, _) in found]
    out: list[str | int] = []
    pos = 0
    for n, (start, end, (kind, slot)) in enumerate(found):
        if kind == "name":
            bound = bound_neighbour(text, spans, n, is_value)
            if bound is None or found[bound][2][1] != slot:
                continue  # a name not written beside its own value stays text
        if start > pos:
            out.append(text[pos:start])
        out.append(slot if kind == "value" else name_slot)
        pos = end
    if pos < len(text):
        out.append(text[pos:])
    return out


def realize(
    ids: Sequence[int], facts: Facts, decode, name_slot: int | None = None, capitalize: bool = False
) -> tuple[str, int]:
    """Generated ids -> (text, unbound names): runs of text tokens decoded, each value slot replaced by its
    value, each name slot by the name of the value slot it is bound to (counted and left out when none is).
    With `capitalize`, a fill that starts a sentence starts with a capital letter."""
    parts: list[tuple[str, str, int | None]] = []  # (text, 'text' | 'value' | 'name', slot)
    run: list[int] = []
    for i in ids:
        if i in facts.values or (name_slot is not None and i == name_slot):
            if run:
                parts.append((decode(run), "text", None))
                run = []
            parts.append((facts.values.get(i, ""), "value" if i in facts.values else "name", i))
        else:
            run.append(i)
    if run:
        parts.append((decode(run), "text", None))
    slots = [k for k, p in enumerate(parts) if p[1] != "text"]
    unbound = 0
    # positions as if every name were empty: a name's gaps to its neighbours hold text only
    texts = [p[0] if p[1] != "name" else "" for p in parts]
    starts = [sum(len(t) for t in texts[:k]) for k in range(len(parts))]
    spans = [(starts[k], starts[k] + len(texts[k])) for k in slots]
    flat = "".join(texts)
    is_value = [parts[k][1] == "value" and parts[k][2] in facts.names for k in slots]
    for n, k in enumerate(slots):
        if parts[k][1] != "name":
            continue
        bound = bound_neighbour(flat, spans, n, is_value)
        if bound is None:
            unbound += 1
        else:
            texts[k] = facts.names[parts[slots[bound]][2]]
    if capitalize:
        for k in slots:
            if texts[k] and _SENTENCE_START.search("".join(texts[:k])):
                texts[k] = texts[k][:1].upper() + texts[k][1:]
    return "".join(texts), unbound


class SlotConstraint:
    """Constrained decoding of slots, one state per row (a `logits_processor` for GPT.generate), so that every
    value comes from the item and every attribute name is bound to a value by the rule `realize` and the
    faithfulness check use (the neighbouring slot, a value, within BIND_GAP characters of the same clause):

    - a row may emit only its item's value slots, each once;
    - `<slot:name>` right after a value (within BIND_GAP characters of text, no other slot or clause end
      between), or when an attribute value is left to follow it; never twice before a value;
    - after a name that no value preceded, only a value of the item's attributes may be the next slot, and
      no text that would end the clause or take the gap past BIND_GAP characters (nor the end of the text).

    slot_ids (S,) every slot token (the name slot among them or not); allowed (B, S) each row's value slots;
    keyed (B, S) those that are attribute values (they take a name); clause_end (n_text,) the text tokens
    that end a clause; chars (n_text,) each text token's length in characters (at least 1)."""

    def __init__(
        self,
        slot_ids: Sequence[int],
        allowed: torch.Tensor,
        keyed: torch.Tensor,
        name_id: int | None,
        clause_end: torch.Tensor,
        eos_id: int,
        chars: torch.Tensor | None = None,
    ):
        value_cols = torch.tensor([i != name_id for i in slot_ids], dtype=torch.bool)
        # the name slot is ruled by its own state below, not by the rows' value slots
        self.ids = torch.as_tensor(list(slot_ids), dtype=torch.long)[value_cols]
        self.allowed, self.keyed = allowed[:, value_cols].clone(), keyed[:, value_cols]
        self.name = name_id
        self.clause_end = clause_end.clone()
        self.clause_end[eos_id] = True
        self.chars = chars if chars is not None else torch.ones(len(clause_end), dtype=torch.long)
        B = allowed.size(0)
        self.unnamed = torch.zeros(B, dtype=torch.bool)  # a value slot was emitted and no name followed yet
        self.pending = torch.zeros(B, dtype=torch.bool)  # a name was emitted and no value followed yet
        self.gap = torch.zeros(B, dtype=torch.long)  # characters of text since the last slot

    def __call__(self, logits: torch.Tensor, previous: torch.Tensor | None) -> None:
        if previous is not None:
            self._update(previous.cpu())
        device = logits.device
        ids = self.ids.to(device)
        if len(self.ids):
            logits[:, ids] = logits[:, ids].masked_fill(~self.allowed.to(device), float("-inf"))
        if self.name is None:
            return
        keys_left = (self.allowed & self.keyed).any(1)
        ok = (self.unnamed | keys_left) & ~self.pending
        logits[:, self.name] = logits[:, self.name].masked_fill(~ok.to(device), float("-inf"))
        if self.pending.any():
            rows = self.pending.to(device)
            V = logits.size(1)
            blocked = self.clause_end[:V].clone() | (self.gap[:, None] + self.chars[None, :V] > BIND_GAP)
            blocked[:, ids] = ~self.keyed  # of the slots, only an attribute value (the allowed ones, above)
            logits[rows] = logits[rows].masked_fill(blocked.to(device)[rows], float("-inf"))

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only these rows' state (the generator dropped the finished rows from its batch)."""
        self.allowed, self.keyed = self.allowed[rows], self.keyed[rows]
        self.unnamed, self.pending, self.gap = self.unnamed[rows], self.pending[rows], self.gap[rows]

    def _update(self, tok: torch.Tensor) -> None:
        hit = tok.unsqueeze(1) == self.ids.unsqueeze(0)  # (B, S)
        value = (hit & self.keyed).any(1)
        self.allowed &= ~hit
        if self.name is None:
            return
        name = tok == self.name
        text = ~hit.any(1) & ~name
        self.gap = torch.where(text, self.gap + self.chars[tok.clamp(max=len(self.chars) - 1)], 0)
        ends = self.clause_end[tok.clamp(max=len(self.clause_end) - 1)]
        unnamed, pending = self.unnamed, self.pending
        # a value pairs with a name before it (pending) or waits for one after it (unnamed)
        self.unnamed = torch.where(value, ~pending, unnamed & text & ~ends & (self.gap <= BIND_GAP))
        self.pending = torch.where(value, torch.zeros_like(pending), pending | (name & ~unnamed))


def clause_end_tokens(tokenizer) -> torch.Tensor:
    """(n_text,) bool: the text tokens whose text ends a clause (what binding never crosses)."""
    vocab = tokenizer.tk.get_vocab(with_added_tokens=True)
    out = torch.zeros(tokenizer.n_text, dtype=torch.bool)
    for i in vocab.values():
        if i < tokenizer.n_text and CLAUSE_END.search(tokenizer.tk.decode([i], skip_special_tokens=True) or ""):
            out[i] = True
    return out


def token_chars(tokenizer) -> torch.Tensor:
    """(n_text,) long: each text token's length in characters as decoded alone (at least 1, so a piece of a
    character counts as one: the gap is never underestimated)."""
    out = torch.ones(tokenizer.n_text, dtype=torch.long)
    for i in range(tokenizer.n_text):
        out[i] = max(1, len(tokenizer.tk.decode([i], skip_special_tokens=True) or ""))
    return out
