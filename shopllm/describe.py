"""Product descriptions: prompt, grounded generation with the KV cache, the publishing gate, fallback text.

Plain Python + torch, no Beam (`pipelines/score.py` wires `describe_batch` into RunInference).

The model writes the shop's voice with the item's facts as slot tokens (shopllm.slots): decoding may emit
only the slots of the item's own brand, category and keys, each once, and the values are filled in from the
item's record. An attribute the shop's descriptions usually name but the text left out gets a plain
sentence of its own. The text is then checked (shopllm.faithfulness) and published only when it is not
degenerate (empty, too short, looping, the wrong script for the item's language), names no value the item
lacks, no other brand, no value under the wrong attribute, and covers what the shop's own descriptions
usually name. Otherwise a clean text is built from the item's own attributes and flagged `is_fallback`,
with the reason; a description is never published blank.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from shopllm.cleaning import chinese_punctuation
from shopllm.faithfulness import Findings, Item, Lexicon, check, normalize
from shopllm.hashing import source_hash_of
from shopllm.ranking import length_buckets, pad_left
from shopllm.sequences import attribute_text, describe_prompt
from shopllm.slots import Facts, SlotConstraint, SlotVocab, clause_end_tokens, realize, token_chars
from shopllm.text_metrics import cjk_share, repeated_ngram_rate, units
from shopllm.vocab import EOS_ID, SPECIAL_ID

# every control token except <eos> (which ends a description) is banned from generation
BANNED_IDS = tuple(i for tok, i in SPECIAL_ID.items() if i != EOS_ID)

MIN_UNITS = 4  # fewer words / CJK characters than this is "too short"
MAX_REPEATED_4GRAM = 0.5  # more than this share of repeated 4-grams is a loop
MIN_SCRIPT_SHARE = 0.5  # zh text must be mostly CJK, en text mostly Latin
MIN_COVERAGE = 0.5  # a text naming fewer of the values the shop's descriptions usually name is not published

# why a text was not published (summary keys); the faithfulness error kinds are reasons too
EMPTY, TOO_SHORT, REPETITIVE, WRONG_SCRIPT, LOW_COVERAGE, UNKNOWN_ITEM, UNBOUND_NAME = (
    "empty",
    "too_short",
    "repetitive",
    "wrong_script",
    "low_coverage",
    "unknown_item",
    "unbound_name",
)


class DescribeRequest(NamedTuple):
    item_id: str
    language: str  # 'zh' | 'en'
    title: str
    category: str | None
    brand: str | None
    attributes: tuple[tuple[str, str], ...]  # sorted (key, value) pairs


class DescribeResult(NamedTuple):
    description: str  # what is published
    is_fallback: bool
    reason: str | None = None  # why the fallback was used
    model_text: str | None = None  # the model's text (values filled in, left-out attributes added), before the gate
    flags: tuple[str, ...] = ()  # the faithfulness errors found in model_text (shopllm.faithfulness kinds)


def attribute_pairs(attributes) -> tuple[tuple[str, str], ...]:
    """A map column as read by pyarrow (dict) or by Beam (list of pairs) -> sorted pairs."""
    if not attributes:
        return ()
    pairs = attributes.items() if isinstance(attributes, Mapping) else attributes
    return tuple(sorted((str(k), str(v)) for k, v in pairs if k is not None and v is not None))


def request_of(item: Mapping) -> DescribeRequest:
    """A curated ITEMS row (dict) -> DescribeRequest."""
    return DescribeRequest(
        item["item_id"],
        item.get("language") or "en",
        item.get("title") or "",
        item.get("category"),
        item.get("brand"),
        attribute_pairs(item.get("attributes")),
    )


def needs_generation(item: Mapping, previous: Mapping | None) -> bool:
    """True when the item is new since the last published descriptions or its inputs changed."""
    return previous is None or previous.get("source_hash") != source_hash_of(item)


# ---- the gate and the fallback ------------------------------------------------------------------
def degenerate_reason(text: str, language: str, findings: Findings | None = None) -> str | None:
    """Why `text` is not fit to publish as a description in `language`, or None when it is. With the
    faithfulness `findings` of the text: a blocking error (contradiction, wrong brand, misbinding,
    unsupported value) or too low a coverage of what the shop's descriptions usually name."""
    if not text or not text.strip():
        return EMPTY
    if len(units(text)) < MIN_UNITS:
        return TOO_SHORT
    if repeated_ngram_rate(text, 4) > MAX_REPEATED_4GRAM:
        return REPETITIVE
    share = cjk_share(text)
    if (language == "zh" and share < MIN_SCRIPT_SHARE) or (language != "zh" and share > 1 - MIN_SCRIPT_SHARE):
        return WRONG_SCRIPT
    if findings is not None:
        if findings.blocking:
            return findings.blocking[0]
        if findings.coverage is not None and findings.coverage < MIN_COVERAGE:
            return LOW_COVERAGE
    return None


def item_of(req: DescribeRequest) -> Item:
    return Item(req.brand, dict(req.attributes), req.title)


def attribute_sentence(key: str, value: str, zh: bool) -> str:
    return f"{key}：{value}。" if zh else f"{key[:1].upper()}{key[1:]}: {value}."


def complete(text: str, req: DescribeRequest, lexicon: Lexicon) -> str:
    """`text` with a plain sentence added for each attribute the shop's descriptions usually name that the
    text leaves out."""
    found = check(text, item_of(req), lexicon)
    missing = [(k, v) for k, v in req.attributes if normalize(k) in found.expected - found.named]
    if not missing:
        return text
    zh = req.language == "zh"
    added = ("" if zh else " ").join(attribute_sentence(k, v, zh) for k, v in missing)
    body = text.rstrip()
    if not body:
        return added
    if body[-1] not in ("。！？" if zh else ".!?"):
        body += "。" if zh else "."
    return body + ("" if zh else " ") + added


def fallback_text(req: DescribeRequest) -> str:
    """A plain description from the attributes, in the item's language; never blank."""
    zh = req.language == "zh"
    parts = [req.title.strip() or req.item_id]
    if req.brand:
        parts.append(f"品牌：{req.brand}" if zh else f"Brand: {req.brand}")
    if req.category:
        parts.append(f"类别：{req.category}" if zh else f"Category: {req.category}")
    if req.attributes:
        parts.append(("，" if zh else ", ").join(f"{k}{'：' if zh else ': '}{v}" for k, v in req.attributes))
    return ("。".join(parts) + "。") if zh else (". ".join(parts) + ".")


# ---- generation -------------------------------------------------------------------------------
@dataclass
class Describer:
    """Model, tokenizer, item vocabulary, slot tokens and the shop's lexicon, loaded once per worker, plus
    the decoding options."""

    model: torch.nn.Module
    tokenizer: object  # shopllm.tokenizer.TextTokenizer
    items: object  # shopllm.vocab.ItemVocab
    device: str = "cpu"
    max_new_tokens: int = 96
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0
    use_cache: bool = True
    no_repeat_ngram: int = 0  # > 0: never produce the same n-gram of new tokens twice
    slots: SlotVocab | None = None  # None: the tokenizer's own slot tokens
    lexicon: Lexicon | None = None  # the shop's values, brands and keys (None: only the item's own)

    _clause_end: torch.Tensor | None = None  # built on first use
    _chars: torch.Tensor | None = None

    def __post_init__(self):
        if self.slots is None:
            self.slots = SlotVocab.of(self.tokenizer) if hasattr(self.tokenizer, "tk") else SlotVocab({})
        if self.lexicon is None:
            self.lexicon = Lexicon({}, ())

    def prompt(self, req: DescribeRequest) -> list[int]:
        n_text = self.model.config.n_text
        block = self.model.config.block_size
        room = block - min(self.max_new_tokens, block // 2) - 4  # <bos> item <attr> ... <desc>
        attr = self.tokenizer.encode(attribute_text(req.title, req.category, req.brand, req.attributes))
        return describe_prompt(self.items.token_id(req.item_id, n_text), attr[: max(room, 0)])

    def facts(self, req: DescribeRequest) -> Facts:
        return self.slots.facts(req.brand, req.category, req.attributes, req.title)

    def constraint(self, reqs: Sequence[DescribeRequest]) -> SlotConstraint:
        """Constrained decoding of the requests' slots (see shopllm.slots.SlotConstraint)."""
        if self._clause_end is None:
            self._clause_end, self._chars = clause_end_tokens(self.tokenizer), token_chars(self.tokenizer)
        ids = self.slots.ids
        facts = [self.facts(r) for r in reqs]
        allowed = torch.tensor([[i in f.values for i in ids] for f in facts], dtype=torch.bool).reshape(
            len(reqs), len(ids)
        )
        keyed = torch.tensor([[i in f.names for i in ids] for f in facts], dtype=torch.bool).reshape(
            len(reqs), len(ids)
        )
        return SlotConstraint(ids, allowed, keyed, self.slots.name_id, self._clause_end, EOS_ID, self._chars)

    def generator(self, reqs: Sequence[DescribeRequest]) -> torch.Generator | None:
        """Sampling only: a generator seeded from `seed` and the batch's items (reproducible per batch)."""
        if self.temperature <= 0:
            return None
        g = torch.Generator(device=self.device)
        g.manual_seed(self.seed ^ zlib.crc32("\n".join(r.item_id for r in reqs).encode()))
        return g

    def generate_ids(self, prompts: Sequence[list[int]], reqs: Sequence[DescribeRequest]) -> list[list[int]]:
        """New token ids per prompt (up to and excluding <eos>), one generate call per length bucket, the slots
        constrained to each row's item."""
        out: list[list[int]] = [[] for _ in prompts]
        for length, rows in length_buckets([len(p) for p in prompts], self.model.config.block_size).items():
            ids, mask = pad_left([prompts[r] for r in rows], length)
            new = (
                self.model.generate(
                    ids.to(self.device),
                    self.max_new_tokens,
                    attention_mask=mask.to(self.device),
                    eos_id=EOS_ID,
                    banned_ids=BANNED_IDS,
                    temperature=self.temperature,
                    top_p=self.top_p,
                    generator=self.generator([reqs[r] for r in rows]),
                    use_cache=self.use_cache,
                    no_repeat_ngram=self.no_repeat_ngram,
                    logits_processor=self.constraint([reqs[r] for r in rows]),
                )
                .cpu()
                .tolist()
            )
            for r, toks in zip(rows, new):
                out[r] = toks[: toks.index(EOS_ID)] if EOS_ID in toks else toks
        return out

    def text_of(self, ids: Sequence[int], req: DescribeRequest) -> tuple[str, int]:
        """Generated ids -> (the text to check, attribute names bound to no value): slots filled in, Chinese
        punctuation in Chinese text, left-out attributes added."""
        zh = req.language == "zh"
        text, unbound = realize(ids, self.facts(req), self.tokenizer.decode, self.slots.name_id, capitalize=not zh)
        text = text.strip()
        if zh:
            text = chinese_punctuation(text)
        return complete(text, req, self.lexicon), unbound

    def review(self, text: str, req: DescribeRequest, unbound: int = 0) -> DescribeResult:
        """The gate: `text` published, or the fallback with the reason."""
        findings = check(text, item_of(req), self.lexicon)
        reason = degenerate_reason(text, req.language, findings) or (UNBOUND_NAME if unbound else None)
        flags = tuple(findings.flags()) + ((UNBOUND_NAME,) if unbound else ())
        if reason is None:
            return DescribeResult(text, False, None, text, flags)
        return DescribeResult(fallback_text(req), True, reason, text, flags)


def describe_batch(describer: Describer, requests: Sequence[DescribeRequest]) -> list[DescribeResult]:
    """Generate (or fall back) a description for every request, in order."""
    results: list[DescribeResult | None] = [None] * len(requests)
    live = []
    for r, req in enumerate(requests):
        if req.item_id in describer.items:
            live.append(r)
        else:  # the model has no token for this item
            results[r] = DescribeResult(fallback_text(req), True, UNKNOWN_ITEM)
    if live:
        reqs = [requests[r] for r in live]
        new_ids = describer.generate_ids([describer.prompt(q) for q in reqs], reqs)
        for r, toks in zip(live, new_ids):
            text, unbound = describer.text_of(toks, requests[r])
            results[r] = describer.review(text, requests[r], unbound)
    return results  # type: ignore[return-value]
