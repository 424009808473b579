"""The transformer: loss over the right part of the vocabulary, padding, KV cache, warm start."""

import pytest
import torch
import torch.nn.functional as F

from shopllm.model import GPT, GPTConfig


def tiny(**kw) -> GPT:
    torch.manual_seed(0)
    cfg = dict(n_text=20, n_items=10, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg)).eval()


def loss_of(m, idx, targets, **kw) -> torch.Tensor:
    return m(idx, targets, **kw)[1]


def test_forward_gives_the_mean_loss_with_targets_and_last_logits_without():
    m = tiny()
    idx = torch.tensor([[1, 3, 22, 25], [1, 3, 27, 0]])
    targets = torch.tensor([[3, 22, 25, 2], [3, 27, 2, -1]])
    logits, loss = m(idx, targets)
    assert logits is None  # training never builds the (B, T, V) logits
    h = m.hidden(idx)
    nll = [
        -F.log_softmax(m.item_logits(h[b, t]) if y >= 20 else m.text_logits(h[b, t]), -1)[y - 20 if y >= 20 else y]
        for b, row in enumerate(targets.tolist())
        for t, y in enumerate(row)
        if y >= 0
    ]
    assert loss.item() == pytest.approx(torch.stack(nll).mean().item(), abs=1e-5)
    last, none = m(idx)
    assert last.shape == (2, 1, 30) and none is None


def test_item_targets_are_scored_over_items_and_text_over_text():
    m = tiny()
    idx = torch.tensor([[1, 3, 22]])
    targets = torch.tensor([[-1, -1, 25]])  # one item target
    h = m.hidden(idx)[0, -1]
    expected = -F.log_softmax(m.item_logits(h), -1)[25 - 20]
    assert loss_of(m, idx, targets).item() == pytest.approx(expected.item(), abs=1e-5)
    targets = torch.tensor([[-1, -1, 7]])  # one text target
    expected = -F.log_softmax(m.text_logits(h), -1)[7]
    assert loss_of(m, idx, targets).item() == pytest.approx(expected.item(), abs=1e-5)


def test_label_smoothing_is_off_by_default_and_softens_item_targets_only():
    m = tiny()
    idx = torch.tensor([[1, 3, 22, 23]])
    targets = torch.tensor([[3, 22, 23, 24]])
    plain = loss_of(m, idx, targets)
    assert loss_of(m, idx, targets, label_smoothing=0.0).item() == plain.item()
    assert loss_of(m, idx, targets, label_smoothing=0.5).item() != pytest.approx(plain.item())
    text_only = torch.tensor([[3, 4, 5, 6]])
    assert loss_of(m, idx, text_only, label_smoothing=0.5).item() == loss_of(m, idx, text_only).item()


def test_left_padded_prompt_ranks_like_the_unpadded_one():
    m = tiny()
    alone = m.next_item_logprobs(torch.tensor([[1, 3, 22, 25]]))
    padded = m.next_item_logprobs(
        torch.tensor([[0, 0, 1, 3, 22, 25]]), attention_mask=torch.tensor([[0, 0, 1, 1, 1, 1]])
    )
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-5)


def test_generate_with_and_without_kv_cache_agree():
    m = tiny()
    prompt = torch.tensor([[1, 21, 6, 9, 7]])
    assert torch.equal(m.generate(prompt, 6, use_cache=True), m.generate(prompt, 6, use_cache=False))


def test_rows_that_end_leave_the_batch_and_the_rest_decode_as_alone():
    """Greedy decoding drops a row from the batch (and its KV cache) once it emits <eos>: every row's tokens
    are the ones it gets decoded alone, with and without the cache."""
    m = tiny()
    prompts = torch.tensor([[1, 21, 6, 9, 7], [1, 21, 8, 3, 5], [1, 21, 2, 4, 6], [1, 21, 9, 9, 3]])
    eos = int(m.generate(prompts[:1], 3)[0, 1])  # a token row 0 emits second: it ends early
    for use_cache in (True, False):
        batch = m.generate(prompts, 12, eos_id=eos, use_cache=use_cache)
        assert (batch == eos).any(1).sum() >= 1
        for row, prompt in enumerate(prompts):
            alone = m.generate(prompt[None], 12, eos_id=eos, use_cache=use_cache)[0]
            assert torch.equal(batch[row, : len(alone)], alone)
            assert (batch[row, len(alone) :] == eos).all()


def test_with_items_keeps_trained_rows():
    m = tiny()
    grown = m.with_items(14)
    assert grown.config.n_items == 14
    torch.testing.assert_close(grown.wte.weight[:30], m.wte.weight)
    idx = torch.tensor([[1, 3, 22]])
    torch.testing.assert_close(grown.hidden(idx), m.hidden(idx))
    with pytest.raises(ValueError):
        m.with_items(5)


@pytest.mark.parametrize("item_share", [1.0, 0.5])
def test_flops_per_token_agrees_with_torchs_flop_counter(item_share):
    """The matmul FLOPs of a training step as torch counts them (CPU attention is not counted by it, so the
    attention term is left out), per target token, item and text targets in the given share."""
    from torch.utils.flop_counter import FlopCounterMode

    c = GPTConfig(n_text=300, n_items=500, block_size=32, n_layer=2, n_head=2, n_embd=64, dropout=0.0)
    m = GPT(c)
    torch.manual_seed(0)
    B, T = 4, 32
    idx = torch.randint(c.n_text, c.n_text + c.n_items, (B, T))
    targets = torch.randint(c.n_text, c.n_text + c.n_items, (B, T))
    n_text_targets = int(B * T * (1 - item_share))
    targets.view(-1)[:n_text_targets] = torch.randint(10, c.n_text, (n_text_targets,))
    with FlopCounterMode(display=False) as counter:
        loss_of(m, idx, targets).backward()
    attention = 12 * c.n_layer * c.n_embd * c.block_size
    assert m.flops_per_token(item_share) - attention == pytest.approx(counter.get_total_flops() / (B * T), rel=0.01)


def test_too_long_sequence_is_refused():
    m = tiny()
    with pytest.raises(ValueError, match="block_size"):
        m.hidden(torch.ones(1, 17, dtype=torch.long))


def test_future_items_adds_the_items_further_ahead():
    m = tiny()
    idx = torch.tensor([[1, 3, 22, 23, 24]])
    targets = torch.tensor([[3, 22, 23, 24, 2]])  # <hist> i22 i23 i24 <eos>
    h = m.hidden(idx)[0]
    logp = F.log_softmax(m.item_logits(h), -1)  # (T, n_items)
    # item positions are 1, 2, 3 (next = 22, 23, 24); two ahead of them: 23, 24, <eos> (not an item)
    future = -(logp[1, 23 - 20] + logp[2, 24 - 20]) / 2
    plain = loss_of(m, idx, targets)
    got = loss_of(m, idx, targets, future_items=2, future_weight=0.5)
    assert got.item() == pytest.approx(plain.item() + 0.5 * future.item(), abs=1e-5)
    assert loss_of(m, idx, targets, future_items=1).item() == pytest.approx(plain.item())


def brute_unseen_loss(m, idx, targets, label_smoothing):
    """Reference for mask_seen_items: one position at a time, the seen items masked out densely."""
    h, n_text, total, n = m.hidden(idx), m.config.n_text, 0.0, 0
    for r, t in zip(*torch.nonzero(targets >= 0, as_tuple=True)):
        y = int(targets[r, t])
        if y < n_text:
            total += F.cross_entropy(m.text_logits(h[r, t])[None], torch.tensor([y]))
        else:
            seen = torch.zeros(m.config.n_items, dtype=torch.bool)
            seen[[i - n_text for i in idx[r, : t + 1].tolist() if i >= n_text]] = True
            seen[y - n_text] = False  # a repeated item stays a valid answer
            logp = F.log_softmax(m.item_logits(h[r, t]).masked_fill(seen, float("-inf")), -1)
            spread = -logp.masked_fill(seen, 0.0).sum() / (~seen).sum()
            total += (1 - label_smoothing) * -logp[y - n_text] + label_smoothing * spread
        n += 1
    return total / n


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_mask_seen_items_scores_each_item_over_the_items_not_yet_in_the_row(label_smoothing):
    m = tiny()
    # row 1 repeats item 25 (as target, then as input) and item 22 appears before and after text tokens
    idx = torch.tensor([[1, 3, 22, 23, 24, 0, 0], [1, 3, 25, 25, 22, 7, 22]])
    targets = torch.tensor([[3, 22, 23, 24, 2, -1, -1], [3, 25, 25, 22, 7, 22, 26]])
    got = loss_of(m, idx, targets, label_smoothing=label_smoothing, mask_seen_items=True)
    expected = brute_unseen_loss(m, idx, targets, label_smoothing)
    assert got.item() == pytest.approx(expected.item(), abs=1e-5)
    plain = loss_of(m, idx, targets, label_smoothing=label_smoothing)
    assert got.item() < plain.item()  # the seen items' probability mass went to the rest


def test_mask_seen_items_stays_exact_when_a_seen_item_dominates():
    m = tiny()
    idx = torch.tensor([[1, 3, 22, 23]])
    targets = torch.tensor([[-1, -1, 23, 24]])
    with torch.no_grad():
        m.wte.weight[22] *= 60  # item 22 (seen) now scores far above every other item
    got = loss_of(m, idx, targets, mask_seen_items=True)
    assert got.item() == pytest.approx(brute_unseen_loss(m, idx, targets, 0.0).item(), rel=1e-4)
    assert got.item() > 0.1


def test_mask_seen_items_with_future_items_cannot_go_below_zero():
    m = tiny()
    idx = torch.tensor([[1, 3, 22, 23, 24, 22]])  # item 22 comes back
    targets = torch.tensor([[3, 22, 23, 24, 22, 2]])
    with torch.no_grad():
        m.wte.weight[22] *= 40
    loss = loss_of(m, idx, targets, mask_seen_items=True, future_items=3, future_weight=0.5)
    assert torch.isfinite(loss) and loss.item() > 0


def test_no_repeat_ngram_blocks_loops_and_keeps_cache_equal():
    import torch

    from shopllm.model import GPT, GPTConfig

    torch.manual_seed(0)
    m = GPT(GPTConfig(n_text=40, n_items=5, block_size=64, n_layer=1, n_head=2, n_embd=16, dropout=0.0)).eval()
    idx = torch.randint(9, 40, (3, 5))
    plain = m.generate(idx, 30)
    assert any(len(set(map(tuple, row.unfold(0, 3, 1).tolist()))) < 28 for row in plain)  # it loops
    blocked = m.generate(idx, 30, no_repeat_ngram=3)
    for row in blocked.tolist():
        grams = [tuple(row[i : i + 3]) for i in range(len(row) - 2)]
        assert len(grams) == len(set(grams))
    assert torch.equal(blocked, m.generate(idx, 30, no_repeat_ngram=3, use_cache=False))


def test_untied_items_score_with_their_own_table_and_grow_with_the_catalog():
    m = tiny(tie_items=False)
    idx = torch.tensor([[1, 3, 22]])
    h = m.hidden(idx)[0, -1]
    assert torch.allclose(m.item_logits(h), m.item_out.weight @ h)
    assert not torch.allclose(m.item_logits(h), m.wte.weight[20:] @ h)  # the input rows only read histories
    last, _ = m(idx)
    assert last.shape == (1, 1, 30) and torch.allclose(last[0, 0, 20:], m.item_logits(h), atol=1e-6)
    grown = m.with_items(12)
    assert grown.item_out.weight.shape == (12, 16)
    assert torch.equal(grown.item_out.weight[:10], m.item_out.weight)  # trained rows kept
    loss_of(grown, idx, torch.tensor([[3, 22, 31]])).backward()  # a new item trains like any other
    assert grown.item_out.weight.grad[11].abs().sum() > 0
