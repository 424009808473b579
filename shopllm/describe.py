"""Product descriptions: prompt, generation with the KV cache, degenerate-output checks, fallback text.

Plain Python + torch, no Beam (`pipelines/score.py` wires `describe_batch` into RunInference).
A description is never published blank: when the model's text is empty or degenerate (too short,
mostly repeated n-grams, the wrong script for the item's language) a clean text is built from the
item's own attributes instead and flagged `is_fallback`.
"""
from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from typing import Mapping, NamedTuple, Sequence

import torch

from shopllm.ranking import length_buckets, pad_left
from shopllm.sequences import attribute_text, describe_prompt
from shopllm.text_metrics import attribute_coverage, cjk_share, repeated_ngram_rate, units
from shopllm.vocab import EOS_ID, SPECIAL_ID

# every control token except <eos> (which ends a description) is banned from generation
BANNED_IDS = tuple(i for tok, i in SPECIAL_ID.items() if i != EOS_ID)

MIN_UNITS = 4  # fewer words / CJK characters than this is "too short"
MAX_REPEATED_4GRAM = 0.5  # more than this share of repeated 4-grams is a loop
MIN_SCRIPT_SHARE = 0.5  # zh text must be mostly CJK, en text mostly Latin
MIN_ATTRIBUTE_COVERAGE = 0.5  # a description naming fewer of the item's attribute values is not trusted

# degenerate-output reasons (summary keys)
EMPTY, TOO_SHORT, REPETITIVE, WRONG_SCRIPT, UNFAITHFUL, UNKNOWN_ITEM = (
    "empty", "too_short", "repetitive", "wrong_script", "unfaithful", "unknown_item")


class DescribeRequest(NamedTuple):
    item_id: str
    language: str  # 'zh' | 'en'
    title: str
    category: str | None
    brand: str | None
    attributes: tuple[tuple[str, str], ...]  # sorted (key, value) pairs


class DescribeResult(NamedTuple):
    description: str
    is_fallback: bool
    reason: str | None = None  # why the fallback was used


def attribute_pairs(attributes) -> tuple[tuple[str, str], ...]:
    """A map column as read by pyarrow (dict) or by Beam (list of pairs) -> sorted pairs."""
    if not attributes:
        return ()
    pairs = attributes.items() if isinstance(attributes, Mapping) else attributes
    return tuple(sorted((str(k), str(v)) for k, v in pairs if k is not None and v is not None))


def request_of(item: Mapping) -> DescribeRequest:
    """A curated ITEMS row (dict) -> DescribeRequest."""
    return DescribeRequest(item["item_id"], item.get("language") or "en", item.get("title") or "",
                           item.get("category"), item.get("brand"), attribute_pairs(item.get("attributes")))


def source_hash(item: Mapping) -> str:
    """The item's `source_hash` from ingest; computed from the attribute text when ingest left it empty."""
    if item.get("source_hash"):
        return item["source_hash"]
    text = attribute_text(item.get("title") or "", item.get("category"), item.get("brand"),
                          attribute_pairs(item.get("attributes")))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def needs_generation(item: Mapping, previous: Mapping | None) -> bool:
    """True when the item is new since the last published descriptions or its inputs changed."""
    return previous is None or previous.get("source_hash") != source_hash(item)


# ---- checks and fallback ------------------------------------------------------------------------
def degenerate_reason(text: str, language: str, attributes: Mapping[str, str] | None = None) -> str | None:
    """Why `text` is not fit to publish as a description in `language`, or None when it is.

    With `attributes`, a text that names fewer than MIN_ATTRIBUTE_COVERAGE of their values is
    "unfaithful": a small model that drifts to another product must not be published as this one."""
    if not text or not text.strip():
        return EMPTY
    if len(units(text)) < MIN_UNITS:
        return TOO_SHORT
    if repeated_ngram_rate(text, 4) > MAX_REPEATED_4GRAM:
        return REPETITIVE
    share = cjk_share(text)
    if (language == "zh" and share < MIN_SCRIPT_SHARE) or (language != "zh" and share > 1 - MIN_SCRIPT_SHARE):
        return WRONG_SCRIPT
    coverage = attribute_coverage(text, attributes)
    if coverage is not None and coverage < MIN_ATTRIBUTE_COVERAGE:
        return UNFAITHFUL
    return None


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
    """Model, tokenizer and item vocabulary, loaded once per worker, plus the decoding options."""

    model: "torch.nn.Module"
    tokenizer: object  # shopllm.tokenizer.TextTokenizer
    items: object  # shopllm.vocab.ItemVocab
    device: str = "cpu"
    max_new_tokens: int = 96
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0
    use_cache: bool = True
    no_repeat_ngram: int = 0  # > 0: never produce the same n-gram of new tokens twice

    def prompt(self, req: DescribeRequest) -> list[int]:
        n_text = self.model.config.n_text
        block = self.model.config.block_size
        room = block - min(self.max_new_tokens, block // 2) - 4  # <bos> item <attr> ... <desc>
        attr = self.tokenizer.encode(attribute_text(req.title, req.category, req.brand, req.attributes))
        return describe_prompt(self.items.token_id(req.item_id, n_text), attr[:max(room, 0)])

    def generator(self, reqs: Sequence[DescribeRequest]) -> torch.Generator | None:
        """Sampling only: a generator seeded from `seed` and the batch's items (reproducible per batch)."""
        if self.temperature <= 0:
            return None
        g = torch.Generator(device=self.device)
        g.manual_seed(self.seed ^ zlib.crc32("\n".join(r.item_id for r in reqs).encode()))
        return g

    def generate_ids(self, prompts: Sequence[list[int]], reqs: Sequence[DescribeRequest]) -> list[list[int]]:
        """New token ids per prompt (up to and excluding <eos>), one generate call per length bucket."""
        out: list[list[int]] = [[] for _ in prompts]
        for length, rows in length_buckets([len(p) for p in prompts], self.model.config.block_size).items():
            ids, mask = pad_left([prompts[r] for r in rows], length)
            new = self.model.generate(
                ids.to(self.device), self.max_new_tokens, attention_mask=mask.to(self.device), eos_id=EOS_ID,
                banned_ids=BANNED_IDS, temperature=self.temperature, top_p=self.top_p,
                generator=self.generator([reqs[r] for r in rows]), use_cache=self.use_cache,
                no_repeat_ngram=self.no_repeat_ngram,
            ).cpu().tolist()
            for r, toks in zip(rows, new):
                out[r] = toks[: toks.index(EOS_ID)] if EOS_ID in toks else toks
        return out


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
            text = describer.tokenizer.decode(toks).strip()
            reason = degenerate_reason(text, requests[r].language, dict(requests[r].attributes))
            results[r] = (DescribeResult(text, False, None) if reason is None
                          else DescribeResult(fallback_text(requests[r]), True, reason))
    return results  # type: ignore[return-value]
