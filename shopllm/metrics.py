"""Ranking and language-model metrics (generative-recommenders naming: `hr@10`, `ndcg@10`, `mrr`).

Ranking is full: every item is a candidate, the subject's history is masked before ranking (the
target itself is never masked, so a re-bought item can still be found). Ties are counted
pessimistically: an item scoring exactly the target's score ranks above it, so a model that
scores everything alike gets the worst rank, never a lucky one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch

NEG_INF = float("-inf")


def history_mask(history: Sequence[Sequence[int]], n_items: int, device=None) -> torch.Tensor:
    """(B, n_items) bool, True at each row's history item indices (0-based item indices)."""
    mask = torch.zeros(len(history), n_items, dtype=torch.bool, device=device)
    rows = [r for r, h in enumerate(history) for _ in h]
    cols = [c for h in history for c in h]
    if cols:
        mask[torch.tensor(rows, device=device), torch.tensor(cols, device=device)] = True
    return mask


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """1-based rank of each target among the unmasked items, ties pessimistic.

    scores (B, N) float; targets (B,) item indices; mask (B, N) bool, True = excluded.
    Returns (B,) long.
    """
    scores = scores.float()
    if mask is not None:
        mask = mask.clone()
        mask[torch.arange(len(targets)), targets] = False  # the target is always a candidate
        scores = scores.masked_fill(mask, NEG_INF)
    target_score = scores.gather(1, targets.view(-1, 1))  # (B, 1)
    return (scores >= target_score).sum(dim=1)  # counts the target itself, so rank >= 1


def metrics_from_ranks(ranks: torch.Tensor, ks: Iterable[int] = (10,)) -> dict[str, float]:
    """hr@k, ndcg@k and mrr@k per k, plus full mrr, averaged over the rows."""
    ranks = ranks.double()
    out: dict[str, float] = {}
    for k in ks:
        hit = ranks <= k
        out[f"hr@{k}"] = hit.double().mean().item()
        out[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(ranks + 1.0), 0.0).mean().item()
        out[f"mrr@{k}"] = torch.where(hit, 1.0 / ranks, 0.0).mean().item()
    out["mrr"] = (1.0 / ranks).mean().item()
    return out


def rank_metrics(
    scores: torch.Tensor, targets: torch.Tensor, history: torch.Tensor | None = None, ks: Iterable[int] = (10,)
) -> dict[str, float]:
    """Full-ranking metrics of one batch: scores (B, N), targets (B,), history (B, N) bool mask."""
    return metrics_from_ranks(target_ranks(scores, targets, history), ks)


@torch.no_grad()
def perplexity(model, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """exp(mean cross-entropy per target token) over (idx, targets) batches; -1 targets are ignored."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for idx, targets in batches:
        n = int((targets >= 0).sum())
        if n == 0:
            continue
        total += float(model(idx, targets)[1]) * n
        count += n
    model.train(was_training)
    return math.exp(total / count) if count else float("nan")


@torch.no_grad()
def evaluate_rows(
    model,
    rows,
    *,
    batch_size: int = 256,
    ks: Iterable[int] = (10,),
    device: str | torch.device = "cpu",
    autocast_dtype=None,
) -> dict[str, float]:
    """Ranking metrics of held-out prompts (per kind; `history` unprefixed, others prefixed by kind)
    and `valid_loss` (mean -log p(target item)), plus `valid_ppl` of the full text sequences if any.

    `rows` is a shopllm.data.EvalRows; the model needs `hidden`, `item_logits` and `config.n_text`.
    """
    from shopllm.data import crop, pad_right
    from shopllm.ranking import next_item_logprobs

    was_training = model.training
    model.eval()
    n_text, block = model.config.n_text, model.config.block_size
    ranks = {}
    nll = []
    order = np.argsort([len(p) for p in rows.prompts], kind="stable")  # similar lengths batch together
    for start in range(0, len(order), batch_size):
        sel = order[start : start + batch_size]
        with _autocast(device, autocast_dtype):
            logprobs = next_item_logprobs(model, [crop(rows.prompts[i], block).tolist() for i in sel], device)
        targets = torch.as_tensor(rows.targets[sel] - n_text, device=device)
        mask = history_mask([rows.histories[i] - n_text for i in sel], logprobs.size(1), device)
        nll.append(-logprobs.gather(1, targets.view(-1, 1)).squeeze(1).cpu())
        r = target_ranks(logprobs, targets, mask).cpu()
        for i, rank in zip(sel, r.tolist()):
            ranks.setdefault(rows.kinds[i], []).append(rank)
    out: dict[str, float] = {}
    for kind, rk in sorted(ranks.items()):
        prefix = "" if kind == "history" else f"{kind}_"
        out.update({prefix + k: v for k, v in metrics_from_ranks(torch.tensor(rk), ks).items()})
        out[prefix + "n"] = len(rk)
    if nll:
        out["valid_loss"] = torch.cat(nll).mean().item()
    if rows.sequences:
        batches = []
        for start in range(0, len(rows.sequences), batch_size):
            idx, targets = pad_right(rows.sequences[start : start + batch_size], block)
            batches.append((idx.to(device), targets.to(device)))
        out["valid_ppl"] = perplexity(model, batches)
    model.train(was_training)
    return out


def _autocast(device, dtype):
    import contextlib

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
