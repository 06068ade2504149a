"""The demo task (ckptlens.sources.trained.induction): repeated segments of varying length, and the
error of a perfect copier and of a chance model."""

import math

import pytest
import torch

from ckptlens.sources.trained.induction import InductionTask, InductionTaskConfig


def test_task_repeats_a_segment_of_varying_length():
    task = InductionTask(InductionTaskConfig(vocab_size=50, seq_len=20, min_segment=3, max_segment=9, ood_segment=10))
    batch = task.fresh(64, torch.Generator().manual_seed(0))
    lengths = batch[:, -1]
    assert lengths.min() >= 3 and lengths.max() <= 9 and len(set(lengths.tolist())) > 3
    for row in batch:
        tokens, n = row[:-1], int(row[-1])
        assert torch.equal(tokens[20 - n :], tokens[20 - 2 * n : 20 - n])


def test_perfect_copier_has_zero_error_and_chance_model_about_ln_vocab():
    cfg = InductionTaskConfig(vocab_size=16, seq_len=16, min_segment=2, max_segment=6, ood_segment=8)
    task = InductionTask(cfg)
    batch = task.fresh(32, torch.Generator().manual_seed(1))

    class Oracle(torch.nn.Module):  # knows the segment length: predicts the token n positions back + 1
        def forward(self, tokens):
            out = torch.full((*tokens.shape, 16), -10.0)
            for b in range(tokens.shape[0]):
                n = int(batch[b, -1])
                for p in range(16 - n, 15):
                    out[b, p, tokens[b, p - n + 1]] = 10.0
            return out

    assert task.error(Oracle(), batch) == 0.0

    class Uniform(torch.nn.Module):
        def forward(self, tokens):
            return torch.zeros(*tokens.shape, 16)

    assert float(task.loss(Uniform(), batch)) == pytest.approx(math.log(16))
