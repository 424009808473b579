"""The token layouts of the three kinds of sequence, shared by training (prepare) and serving (score).

    history   <bos> <hist> item item ... item <eos>
    search    <bos> <query> text... <rec> item <eos>
    describe  <bos> item <attr> title · category · brand · k: v; ... <desc> description... <eos>
              <bos> item <attr> title · category · brand · k: v; ...   (an item without a description)

Serving uses the same prefixes without what follows: ranking reads the next-token distribution over
item tokens after `<hist> items` or after `<rec>`; describing generates text after `<desc>`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from shopllm.vocab import ATTR_ID, BOS_ID, DESC_ID, EOS_ID, HIST_ID, QUERY_ID, REC_ID

ATTR_SEPARATOR = " · "


def history_prompt(item_tokens: Sequence[int]) -> list[int]:
    return [BOS_ID, HIST_ID, *item_tokens]


def history_sequence(item_tokens: Sequence[int]) -> list[int]:
    return [BOS_ID, HIST_ID, *item_tokens, EOS_ID]


def search_prompt(query_tokens: Sequence[int]) -> list[int]:
    return [BOS_ID, QUERY_ID, *query_tokens, REC_ID]


def search_sequence(query_tokens: Sequence[int], item_token: int) -> list[int]:
    return [*search_prompt(query_tokens), item_token, EOS_ID]


def attribute_text(
    title: str,
    category: str | None,
    brand: str | None,
    attributes: Mapping[str, str] | Sequence[tuple[str, str]] | None,
) -> str:
    """The text a description is generated from: title · category · brand · k: v; k: v (sorted keys)."""
    pairs = attributes.items() if isinstance(attributes, Mapping) else (attributes or [])
    attrs = "; ".join(f"{k}: {v}" for k, v in sorted(pairs) if k and v)
    return ATTR_SEPARATOR.join(p for p in (title, category, brand, attrs) if p)


def describe_prompt(item_token: int, attr_tokens: Sequence[int]) -> list[int]:
    return [BOS_ID, item_token, ATTR_ID, *attr_tokens, DESC_ID]


def attribute_sequence(item_token: int, attr_tokens: Sequence[int], max_len: int) -> list[int]:
    """An item without a description: its attribute text alone ties the item token to its words, and
    without `<desc>` nothing teaches the model that a description can be empty."""
    return [BOS_ID, item_token, ATTR_ID, *attr_tokens][:max_len]


def describe_sequence(
    item_token: int, attr_tokens: Sequence[int], desc_tokens: Sequence[int], max_len: int
) -> list[int]:
    """Prompt + description + <eos>, cut to max_len (the <eos> is dropped when cut)."""
    seq = [*describe_prompt(item_token, attr_tokens), *desc_tokens, EOS_ID]
    return seq[:max_len]
