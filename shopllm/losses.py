"""The training loss of the one model: next-token cross-entropy over the joint vocabulary.

Each target is scored over its own part of the vocabulary: an item target over the item tokens, a text
target over the text tokens (a description's next word is never in competition with the catalog). The
recommender options act on item targets only: label smoothing, the history mask (`mask_seen_items`) and
the extra term for the items further ahead (`future_items`).

A large catalog makes the item softmax the cost of a step ((N_item, n_items) logits). With
`sampled_negatives` > 0 an item target is scored over a sampled candidate set instead (sampled softmax):
the batch's own item targets (in-batch negatives) plus that many shared draws from a sampling
distribution q (uniform unless `log_q` is given), each candidate's logit corrected by the log of its
expected over its observed count (the logQ correction, see `sampled_candidates`).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def next_token_loss(
    model,
    h,
    targets,
    label_smoothing: float = 0.0,
    future_items: int = 1,
    future_weight: float = 0.5,
    seen_idx=None,
    sampled_negatives: int = 0,
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
    sampled_negatives > 0: item targets are scored by sampled softmax over the batch's item targets plus
    that many uniform draws (see `sampled_item_loss`) rather than over every item.
    """
    n_text = model.config.n_text
    flat_h = h.reshape(-1, h.size(-1))  # (B*T, C)
    flat_t = targets.reshape(-1)  # (B*T,)
    is_item = flat_t >= n_text
    is_text = (flat_t >= 0) & ~is_item
    count = is_item.sum() + is_text.sum()
    total = flat_h.new_zeros(())
    future = flat_h.new_zeros(())
    if is_item.any() and sampled_negatives > 0:
        nll, future = sampled_item_loss(
            model, flat_h[is_item], targets, is_item, seen_idx, sampled_negatives, label_smoothing, future_items
        )
        total = total + nll
    elif is_item.any():
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
    """Mean -log p(item j tokens ahead), j = 2..future_items, at the item positions `is_item`.
    logp: (N_item, n_items) log-probabilities of the next item at those positions."""

    def nll_at(ok, items):
        return -logp[ok].gather(1, items.unsqueeze(1)).squeeze(1)

    return ahead_loss(nll_at, targets, is_item, future_items, n_text, logp.new_zeros(()))


def ahead_loss(nll_at, targets, is_item, future_items: int, n_text: int, zero):
    """future_loss over any scorer: nll_at(ok (N_item,) bool, items (n_ok,) item indices) -> (n_ok,) nll."""
    B, T = targets.shape
    losses = []
    for j in range(1, future_items):
        ahead = torch.full_like(targets, -1)
        ahead[:, : T - j] = targets[:, j:]  # (B, T): the token j + 1 places ahead
        ahead = ahead.reshape(-1)[is_item]  # (N_item,)
        ok = ahead >= n_text
        if ok.any():
            losses.append(nll_at(ok, ahead[ok] - n_text).mean())
    return torch.stack(losses).mean() if losses else zero


# ---- sampled softmax ----------------------------------------------------------------------------
def sampled_item_loss(
    model, h, targets, is_item, seen_idx, negatives: int, label_smoothing: float = 0.0, future_items: int = 1
):
    """(summed nll, future term) of the item targets at `is_item` (flattened targets (B, T)) by sampled softmax.

    h: (N_item, C) hidden states of those positions. Candidates: the batch's item targets plus `negatives`
    uniform draws shared by every position (`sampled_candidates`); the history mask (seen_idx given)
    and label smoothing act on the candidates as `unseen_nll` does on every item.
    """
    n_text, n_items = model.config.n_text, model.config.n_items
    item_t = targets.reshape(-1)[is_item] - n_text  # (N_item,)
    cand, correction, col = sampled_candidates(item_t, n_items, negatives)
    logits = F.linear(h, model.item_weight()[cand]).float()  # (N_item, M)
    seen = None if seen_idx is None else seen_candidates(seen_idx, is_item, col, cand, n_text, n_items)
    total = sampled_nll(logits, correction, col, seen, label_smoothing).sum()
    future = logits.new_zeros(())
    if future_items > 1:  # the items ahead are targets of the batch, so candidates too
        lut = candidate_lookup(cand, n_items)

        def nll_at(ok, items):
            return sampled_nll(logits[ok], correction, lut[items])

        future = ahead_loss(nll_at, targets, is_item, future_items, n_text, future)
    return total, future


def sampled_candidates(item_t, n_items: int, negatives: int, log_q=None):
    """The candidate items of a batch of item targets item_t (N,): (cand (M,), correction (M,), col (N,)).

    cand: the distinct items among item_t and `negatives` draws (with replacement) from q — uniform, or
    exp(log_q) (n_items,) — sorted; col: each target's column in cand. correction, subtracted from a
    candidate's logit, is log(expected count / count): with c in-batch copies and s drawn copies of an
    item, log((c + negatives * q) / (c + s)). Given the batch, the corrected exp-logits of the
    candidates other than a target sum, in expectation over the draws, to exactly the sum over all items
    other than the target (importance sampling with both sources), so the loss tends to the full
    cross-entropy as `negatives` grows. Every item a candidate once with expected count 1: correction 0.
    """
    N = item_t.numel()
    if log_q is None:
        draws = torch.randint(n_items, (negatives,), device=item_t.device)
    else:
        draws = torch.multinomial(log_q.exp(), negatives, replacement=True)
    cand, inverse, counts = torch.unique(torch.cat([item_t, draws]), return_inverse=True, return_counts=True)
    in_batch = torch.bincount(inverse[:N], minlength=cand.numel())  # (M,)
    q = torch.full_like(cand, 1, dtype=torch.float32) / n_items if log_q is None else log_q[cand].float().exp()
    correction = (in_batch + negatives * q).log() - counts.float().log()  # (M,)
    return cand, correction, inverse[:N]


def sampled_nll(logits, correction, col, seen=None, label_smoothing: float = 0.0):
    """(N,) sampled cross-entropy of targets at columns col (N,) of candidate logits (N, M).

    The target's own logit is not corrected; every other column is less its `correction` (M,), and
    `seen` (N, M) bool columns are left out. Label smoothing spreads its share over the candidates
    not seen, each weighted by count / expected count (self-normalised, exact when correction is 0).
    """
    rows = torch.arange(logits.size(0), device=logits.device)
    corr = correction.unsqueeze(0).expand_as(logits).index_put((rows, col), correction.new_zeros(()))  # (N, M)
    adj = logits - corr
    if seen is not None:
        adj = adj.masked_fill(seen, float("-inf"))
    logp = F.log_softmax(adj, -1)  # (N, M)
    nll = -logp[rows, col]
    if label_smoothing:
        w = torch.exp(-corr) if seen is None else torch.exp(-corr).masked_fill(seen, 0.0)  # (N, M)
        each = -(logp + corr) if seen is None else -(logp + corr).masked_fill(seen, 0.0)  # est. -log p per item
        nll = (1 - label_smoothing) * nll + label_smoothing * (w * each).sum(-1) / w.sum(-1)
    return nll


def candidate_lookup(cand, n_items: int):
    """(n_items + 1,) long: each item's column in cand, M (no column) for the others and for index n_items."""
    lut = torch.full((n_items + 1,), cand.numel(), dtype=torch.long, device=cand.device)
    lut[cand] = torch.arange(cand.numel(), device=cand.device)
    return lut


def seen_candidates(idx, is_item, col, cand, n_text: int, n_items: int):
    """(N_item, M) bool: for each item-target position (flattened `is_item`), the candidates in its row of
    `idx` (B, T) at or before it, other than its own target (column col). Built from each row's first
    position of each candidate, (B, M), never a (N_item, n_items) matrix."""
    B, T = idx.shape
    M = cand.numel()
    tok = idx - n_text
    tok = torch.where((tok >= 0) & (tok < n_items), tok, n_items)  # (B, T); n_items: not an item
    where = candidate_lookup(cand, n_items)[tok]  # (B, T) column of each input token, M: none
    ar = torch.arange(T, device=idx.device)
    first = torch.full((B, M + 1), T, dtype=torch.long, device=idx.device)
    first = first.scatter_reduce(1, where, ar.expand(B, T), reduce="amin")[:, :M]  # (B, M)
    rows = torch.arange(B, device=idx.device).repeat_interleave(T)[is_item]  # (N_item,)
    pos = ar.repeat(B)[is_item]  # (N_item,)
    seen = first[rows] <= pos.unsqueeze(1)  # (N_item, M)
    return seen.index_put((torch.arange(len(rows), device=idx.device), col), torch.tensor(False, device=idx.device))
