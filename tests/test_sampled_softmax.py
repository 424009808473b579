"""Sampled softmax for item targets (shopllm.losses): exact where every item is a candidate, an unbiased
partition estimate, gradients that tend to the full softmax's, and the model trains with it."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from shopllm.config import TrainConfig
from shopllm.errors import ConfigError
from shopllm.losses import sampled_candidates, sampled_nll, seen_candidates, seen_items, unseen_nll
from shopllm.model import GPT, GPTConfig

N_TEXT, N_ITEMS = 20, 40


def tiny(n_items: int = N_ITEMS) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_text=N_TEXT, n_items=n_items, block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.0))


def batch(seed: int = 1, n_items: int = N_ITEMS):
    """(idx, targets) (3, 16): item histories with a few text tokens and ignored targets mixed in."""
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(N_TEXT, N_TEXT + n_items, (3, 17), generator=g)
    seq[1, 4] = 5  # a text token
    seq[2, 10] = seq[2, 3]  # a repeated item, seen before
    idx, targets = seq[:, :-1].clone(), seq[:, 1:].clone()
    targets[0, :2] = -1
    return idx, targets


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_every_item_a_candidate_once_is_the_full_cross_entropy(label_smoothing):
    torch.manual_seed(0)
    logits, t = torch.randn(9, N_ITEMS), torch.randint(N_ITEMS, (9,))
    every, no_correction = torch.arange(N_ITEMS), torch.zeros(N_ITEMS)
    got = sampled_nll(logits, no_correction, t, label_smoothing=label_smoothing)
    want = F.cross_entropy(logits, t, reduction="none", label_smoothing=label_smoothing)
    torch.testing.assert_close(got, want)
    # with the history mask too: the same as the dense `unseen_nll` over every item
    idx, targets = batch()
    is_item = targets.reshape(-1) >= N_TEXT
    item_t = targets.reshape(-1)[is_item] - N_TEXT
    dense = seen_items(idx, is_item, item_t, N_TEXT, N_ITEMS)
    sparse = seen_candidates(idx, is_item, item_t, every, N_TEXT, N_ITEMS)
    assert torch.equal(sparse, dense) and dense.any()
    logits = torch.randn(len(item_t), N_ITEMS)
    got = sampled_nll(logits, no_correction, item_t, sparse, label_smoothing)
    torch.testing.assert_close(got, unseen_nll(logits, item_t, dense, label_smoothing))


def test_candidates_hold_every_target_once_with_the_logq_correction():
    torch.manual_seed(3)
    item_t = torch.tensor([4, 7, 4, 1, 30, 4])
    cand, correction, col = sampled_candidates(item_t, N_ITEMS, negatives=25)
    assert torch.equal(cand, cand.unique()) and torch.equal(cand[col], item_t)
    # replay the same draws: correction = log((in-batch + 25 / n_items) / (in-batch + drawn))
    torch.manual_seed(3)
    drawn = torch.bincount(torch.randint(N_ITEMS, (25,)), minlength=N_ITEMS)[cand].float()
    in_batch = torch.bincount(item_t, minlength=N_ITEMS)[cand].float()
    torch.testing.assert_close(correction, ((in_batch + 25 / N_ITEMS) / (in_batch + drawn)).log())
    # a popularity distribution instead of uniform
    q = torch.linspace(1, 3, N_ITEMS)
    cand, correction, col = sampled_candidates(item_t, N_ITEMS, 25, log_q=(q / q.sum()).log())
    assert torch.equal(cand[col], item_t) and correction.isfinite().all()


def test_seen_candidates_are_the_dense_mask_restricted_to_the_candidates():
    idx, targets = batch(seed=5)
    is_item = targets.reshape(-1) >= N_TEXT
    item_t = targets.reshape(-1)[is_item] - N_TEXT
    torch.manual_seed(0)
    cand, _, col = sampled_candidates(item_t, N_ITEMS, negatives=8)
    dense = seen_items(idx, is_item, item_t, N_TEXT, N_ITEMS)  # (N_item, n_items)
    assert torch.equal(seen_candidates(idx, is_item, col, cand, N_TEXT, N_ITEMS), dense[:, cand])


def test_the_corrected_partition_estimate_is_unbiased():
    """Given the batch, the corrected exp-logits of the candidates other than the target sum, on average
    over the shared draws, to the sum over every other item (an exact property, checked within 4 standard
    errors over 4000 draws)."""
    torch.manual_seed(0)
    n_items, item_t = 60, torch.tensor([3, 3, 17, 42])
    z = torch.randn(len(item_t), n_items)  # (N, n_items) logits of every item
    rows = torch.arange(len(item_t))
    want = z.exp().sum(-1) - z[rows, item_t].exp()  # (N,)
    estimates = []
    for _ in range(4000):
        cand, correction, col = sampled_candidates(item_t, n_items, negatives=6)
        terms = (z[:, cand] - correction).exp().index_put((rows, col), torch.tensor(0.0))
        estimates.append(terms.sum(-1))
    est = torch.stack(estimates)  # (draws, N)
    stderr = est.std(0) / len(est) ** 0.5
    assert ((est.mean(0) - want).abs() < 4 * stderr + 1e-6).all(), (est.mean(0), want)


def gradient(weight, h, item_t, negatives: int | None):
    """d(mean loss)/d(item table) (n_items, C): full softmax when negatives is None."""
    weight = weight.detach().requires_grad_(True)
    if negatives is None:
        loss = F.cross_entropy(h @ weight.T, item_t)
    else:
        cand, correction, col = sampled_candidates(item_t, weight.size(0), negatives)
        loss = sampled_nll(h @ weight[cand].T, correction, col).mean()
    loss.backward()
    return weight.grad


def test_the_sampled_gradient_tends_to_the_full_softmax_gradient():
    """The logQ-corrected sampled softmax is consistent, not exactly unbiased (the log of an unbiased
    partition estimate is biased): the mean gradient over draws moves to the full cross-entropy's as the
    shared negatives grow, and with many it is within 10%."""
    torch.manual_seed(0)
    n_items, C = 300, 8
    weight, h = torch.randn(n_items, C), torch.randn(24, C)
    item_t = torch.randint(n_items, (24,))
    full = gradient(weight, h, item_t, None)
    errors = []
    for negatives in (8, 64, 1024):
        mean = torch.stack([gradient(weight, h, item_t, negatives) for _ in range(150)]).mean(0)
        errors.append(float((mean - full).norm() / full.norm()))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.1, errors


@pytest.mark.parametrize(
    "options",
    [{}, {"mask_seen_items": True}, {"mask_seen_items": True, "label_smoothing": 0.1, "future_items": 3}],
)
def test_the_model_loss_with_many_negatives_is_close_to_the_full_loss(options):
    model, (idx, targets) = tiny(), batch()
    full = model(idx, targets, **options)[1]
    torch.manual_seed(0)
    _, sampled = model(idx, targets, sampled_negatives=20_000, **options)
    assert sampled.item() == pytest.approx(full.item(), rel=0.02)
    sampled.backward()
    assert model.wte.weight.grad[N_TEXT:].abs().sum() > 0


def test_a_model_trains_with_sampled_softmax():
    """Histories i -> i + 1 over 200 items, 16 shared negatives: the full cross-entropy falls."""
    n_items = 200
    model = tiny(n_items)
    start = torch.randint(n_items, (32, 1), generator=torch.Generator().manual_seed(0))
    seq = N_TEXT + (start + torch.arange(17)) % n_items  # (32, 17)
    idx, targets = seq[:, :-1], seq[:, 1:]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    with torch.no_grad():
        before = float(model(idx, targets)[1])
    torch.manual_seed(1)
    for _ in range(60):
        _, loss = model(idx, targets, sampled_negatives=16, mask_seen_items=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(model(idx, targets)[1])
    assert after < 0.5 * before, (before, after)


def test_config_rejects_negative_sampled_softmax_settings():
    assert TrainConfig().sampled_softmax_above > 0 and TrainConfig().sampled_negatives > 0
    with pytest.raises(ConfigError, match="sampled_negatives"):
        TrainConfig(sampled_negatives=-1)


def test_the_train_job_turns_sampled_softmax_on_above_the_catalog_size():
    from jobs.train import loss_kwargs

    cfg = TrainConfig(sampled_softmax_above=1000, sampled_negatives=64)
    assert loss_kwargs(cfg, 1000).get("sampled_negatives") is None
    assert loss_kwargs(cfg, 1001)["sampled_negatives"] == 64
    assert "sampled_negatives" not in loss_kwargs(TrainConfig(sampled_negatives=0), 10**6)
