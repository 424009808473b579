"""Validation ranks a fixed sample of held-out prompts (train.valid_users), the same at every evaluation."""

from __future__ import annotations

import numpy as np

from jobs.train import fixed_sample
from shopllm.data import EvalRows


def rows(n: int) -> EvalRows:
    prompts = [np.array([1, 2, 100 + i]) for i in range(n)]
    kinds = ["history" if i % 3 else "search" for i in range(n)]
    histories = [np.array([100 + i]) for i in range(n)]
    return EvalRows(prompts, kinds, np.arange(1000, 1000 + n), histories, [np.array([1, 5, 6])])


def test_a_fixed_sample_of_the_prompts_with_their_targets_and_histories():
    full = rows(50)
    a, b = fixed_sample(full, 20, seed=3), fixed_sample(full, 20, seed=3)
    assert len(a) == 20 and a.targets.tolist() == b.targets.tolist()
    assert a.targets.tolist() == sorted(set(a.targets.tolist()))  # distinct rows, in their order
    for p, k, t, h in zip(a.prompts, a.kinds, a.targets, a.histories):
        i = int(t) - 1000
        assert p[-1] == 100 + i and h[0] == 100 + i and k == full.kinds[i]
    assert len(a.sequences) == 1  # perplexity rows are kept whole
    assert fixed_sample(full, 0, seed=3) is full and fixed_sample(full, 50, seed=3) is full
