"""Full-ranking metrics against values worked out by hand."""

import math

import numpy as np
import pytest
import torch

from shopllm.data import EvalRows
from shopllm.metrics import evaluate_rows, history_mask, perplexity, rank_metrics, target_ranks
from shopllm.model import GPT, GPTConfig
from shopllm.ranking import top_k


def test_ranks_mask_history_but_never_the_target():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1, 0.5]])
    mask = history_mask([[0, 2]], 5)
    # target 1: item 0 (0.9) is history, so nothing unmasked beats 0.8 -> rank 1
    assert target_ranks(scores, torch.tensor([1]), mask).tolist() == [1]
    # target 4 (0.5): 0.9 and 0.7 masked, 0.8 above it -> rank 2
    assert target_ranks(scores, torch.tensor([4]), mask).tolist() == [2]
    # a target that is also in the history stays a candidate: item 0 ranks first
    assert target_ranks(scores, torch.tensor([0]), mask).tolist() == [1]


def test_ties_are_pessimistic():
    scores = torch.zeros(1, 100)  # a model that knows nothing
    assert target_ranks(scores, torch.tensor([0])).tolist() == [100]


def test_hand_computed_hr_ndcg_mrr():
    # target ranks 1, 3 and 12 (k = 10)
    scores = torch.tensor(
        [
            [5.0] + [0.0] * 14,
            [3.0, 2.0, 1.0] + [0.0] * 12,
            [float(15 - i) for i in range(15)],
        ]
    )
    m = rank_metrics(scores, torch.tensor([0, 2, 11]), ks=(10,))
    assert m["hr@10"] == pytest.approx(2 / 3)
    assert m["ndcg@10"] == pytest.approx((1.0 + 1.0 / math.log2(4)) / 3)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3) / 3)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 12) / 3)


def test_top_k_excludes_and_breaks_ties_by_index():
    scores = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0]])
    values, ids = top_k(scores, 3, torch.tensor([[False, False, True, False, False]]))
    assert ids.tolist() == [[1, 4, 3]]
    assert values.tolist() == [[3.0, 3.0, 2.0]]


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    class Uniform:
        training = False

        def eval(self):
            pass

        def train(self, mode=True):
            pass

        def __call__(self, idx, targets):
            return None, torch.tensor(math.log(50.0))

    batches = [(torch.zeros(2, 3, dtype=torch.long), torch.tensor([[1, 2, -1], [3, -1, -1]]))]
    assert perplexity(Uniform(), batches) == pytest.approx(50.0)


def test_evaluate_rows_matches_the_models_own_next_item_logprobs():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_text=20, n_items=30, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0)).eval()
    prompts = [np.array([1, 3, 25, 30]), np.array([1, 3, 40, 41, 42, 43])]
    rows = EvalRows(
        prompts, ["history", "history"], np.array([33, 45]), [np.array([25, 30]), np.array([40, 41, 42, 43])], []
    )
    got = evaluate_rows(model, rows, batch_size=2)
    ranks = []
    for p, t, h in zip(prompts, rows.targets, rows.histories):
        lp = model.next_item_logprobs(torch.tensor(p).unsqueeze(0))
        ranks.append(int(target_ranks(lp, torch.tensor([t - 20]), history_mask([h - 20], 30))[0]))
    assert got["mrr"] == pytest.approx(np.mean([1 / r for r in ranks]))
    assert got["n"] == 2 and got["valid_loss"] > 0
