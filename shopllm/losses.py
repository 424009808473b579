"""The training loss of the one model: next-token cross-entropy over the joint vocabulary.

Each target is scored over its own part of the vocabulary: an item target over the item tokens, a text
target over the text tokens (a description's next word is never in competition with the catalog). The
recommender options act on item targets only: label smoothing, the history mask (`mask_seen_items`) and
the extra term for the items further ahead (`future_items`).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def next_token_loss(
    model, h, targets, label_smoothing: float = 0.0, future_items: int = 1, future_weight: float = 0.5, seen_idx=None
):
    """Mean cross-entropy over the non-ignored targets (-1 = ignore) of hidden states h (B, T, C).

    `model` gives `item_logits`, `text_logits` and `config.n_text` / `config.n_items`.
    label_smoothing spreads that share of each item target's mass over the items; text targets are not
    smoothed (the faithful word of a description should stay sharp).
    future_items > 1 adds, at every position whose next token is an item, the mean cross-entropy of
    the items 2..future_items tokens ahead (scored by the same next-item distribution), weighted by
    future_weight: a user's next few items are all plausible answers, and when several are rated
    or bought at once their order is noise.
    seen_idx: the input ids (B, T); when given, an item target is scored over the items not already in
    its row up to that position (the target itself always stays), as ranking with the history masked
    does at serving time.
    """
    n_text = model.config.n_text
    flat_h = h.reshape(-1, h.size(-1))  # (B*T, C)
    flat_t = targets.reshape(-1)  # (B*T,)
    is_item = flat_t >= n_text
    is_text = (flat_t >= 0) & ~is_item
    count = is_item.sum() + is_text.sum()
    total = flat_h.new_zeros(())
    future = flat_h.new_zeros(())
    if is_item.any():
        logits = model.item_logits(flat_h[is_item]).float()  # (N_item, n_items)
        item_t = flat_t[is_item] - n_text
        if seen_idx is None:
            total = total + F.cross_entropy(logits, item_t, reduction="sum", label_smoothing=label_smoothing)
        else:
            seen = seen_items(seen_idx, is_item, item_t, n_text, model.config.n_items)
            total = total + unseen_nll(logits, item_t, seen, label_smoothing).sum()
        if future_items > 1:  # over all items, masked or not: an item further ahead may repeat a seen one
            future = future_loss(F.log_softmax(logits, -1), targets, is_item, future_items, n_text)
    if is_text.any():
        logits = model.text_logits(flat_h[is_text])  # (N_text, n_text)
        total = total + F.cross_entropy(logits.float(), flat_t[is_text], reduction="sum")
    return total / count.clamp(min=1) + future_weight * future


def unseen_nll(logits, item_t, seen, label_smoothing: float):
    """Cross-entropy (N_item,) of each item target over the items not `seen` (N_item, n_items) in its row."""
    logp = F.log_softmax(logits.masked_fill(seen, float("-inf")), -1)
    nll = -logp.gather(1, item_t.unsqueeze(1)).squeeze(1)
    if label_smoothing:
        spread = -logp.masked_fill(seen, 0.0).sum(-1) / (~seen).sum(-1)
        nll = (1 - label_smoothing) * nll + label_smoothing * spread
    return nll


def seen_items(idx, is_item, item_targets, n_text: int, n_items: int):
    """(N_item, n_items) bool: for each item-target position (flattened `is_item`), the items of its row
    of `idx` at or before it, other than its own target."""
    B, T = idx.shape
    ar = torch.arange(T, device=idx.device)
    rows = torch.arange(B, device=idx.device).repeat_interleave(T)[is_item]  # (N_item,)
    pos = ar.repeat(B)[is_item]  # (N_item,)
    cols = idx[rows] - n_text  # (N_item, T); text tokens fall outside [0, n_items)
    keep = (cols >= 0) & (cols < n_items) & (ar.unsqueeze(0) <= pos.unsqueeze(1)) & (cols != item_targets.unsqueeze(1))
    seen = torch.zeros(len(rows), n_items + 1, dtype=torch.bool, device=idx.device)
    return seen.scatter_(1, torch.where(keep, cols, n_items), True)[:, :n_items]  # column n_items: the rest


def future_loss(logp, targets, is_item, future_items: int, n_text: int):
    """Mean -log p(item j tokens ahead), j = 2..future_items, at the item positions `is_item`."""
    B, T = targets.shape
    losses = []
    for j in range(1, future_items):
        ahead = torch.full_like(targets, -1)
        ahead[:, : T - j] = targets[:, j:]  # (B, T): the token j + 1 places ahead
        ahead = ahead.reshape(-1)[is_item]  # (N_item,)
        ok = ahead >= n_text
        if ok.any():
            losses.append(-logp[ok].gather(1, (ahead[ok] - n_text).unsqueeze(1)).mean())
    return torch.stack(losses).mean() if losses else logp.new_zeros(())
