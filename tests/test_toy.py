"""The demo model, task and training."""

import math

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from ckptlens.sources.trained.induction import InductionTask, InductionTaskConfig
from ckptlens.sources.trained.train import train_induction
from ckptlens.sources.trained.transformer import AttnOnlyTransformer, ToyModelConfig, apply_rotary, rotary_cos_sin


def test_rotary_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    dh, t = 8, 12
    q, k = torch.randn(dh), torch.randn(dh)
    cos, sin = rotary_cos_sin(t, dh, 10000.0)
    rq = apply_rotary(q.expand(t, dh), cos, sin)
    rk = apply_rotary(k.expand(t, dh), cos, sin)
    scores = rq @ rk.T  # [query position, key position]
    for offset in range(-3, 4):
        diag = torch.diagonal(scores, offset)
        assert torch.allclose(diag, diag[0].expand_as(diag), atol=1e-5)
    # a rotation: norms are kept
    assert torch.allclose(rq.norm(dim=-1), q.norm().expand(t), atol=1e-5)


def test_attention_is_causal():
    torch.manual_seed(0)
    model = AttnOnlyTransformer(ToyModelConfig(vocab_size=10, d_model=8, n_layers=2, n_heads=2))
    x = torch.randint(0, 10, (1, 9))
    y = x.clone()
    y[0, 6:] = (y[0, 6:] + 1) % 10
    assert torch.allclose(model(x)[0, :6], model(y)[0, :6], atol=1e-6)
    assert not torch.allclose(model(x)[0, 6:], model(y)[0, 6:])


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


@pytest.mark.slow
def test_training_is_deterministic_and_saves_checkpoints(tmp_path):
    kwargs = dict(total_steps=30, save_steps=[0, 10, 30], batch_size=8, lr=3e-3, log_every=10)
    model_cfg = ToyModelConfig(vocab_size=12, d_model=16, n_layers=2, n_heads=1)
    task_cfg = InductionTaskConfig(vocab_size=12, seq_len=12, min_segment=2, max_segment=5, ood_segment=6, pool_size=50)
    logs = []
    for rep in ("a", "b"):
        logs.append(
            train_induction(
                model_cfg,
                task_cfg,
                checkpoint_path=lambda s, r=rep: tmp_path / r / f"step{s}.safetensors",
                log_path=tmp_path / rep / "log.csv",
                **kwargs,
            )
        )
    for s in (0, 10, 30):
        a, b = load_file(tmp_path / "a" / f"step{s}.safetensors"), load_file(tmp_path / "b" / f"step{s}.safetensors")
        assert a.keys() == b.keys()
        assert all(np.array_equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in logs[0]] == [r["loss"] for r in logs[1]]
    w0 = load_file(tmp_path / "a" / "step0.safetensors")["blocks.0.attn.q_proj.weight"]
    w30 = load_file(tmp_path / "a" / "step30.safetensors")["blocks.0.attn.q_proj.weight"]
    assert not np.array_equal(w0, w30)
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.slow
def test_induction_heads_form_in_the_demo_setting(tmp_path):
    """The demo's phase transition is real: the loss on the repeat falls from near ln(vocab) to
    a small fraction of it, and out-of-distribution (longer) segments are copied well above chance."""
    rows = train_induction(
        ToyModelConfig(vocab_size=64, d_model=64, n_layers=2, n_heads=1),
        InductionTaskConfig(vocab_size=64),
        total_steps=500,
        save_steps=[],
        batch_size=64,
        lr=2e-3,
        log_every=50,
        checkpoint_path=lambda s: tmp_path / f"{s}.safetensors",
        log_path=tmp_path / "log.csv",
    )
    losses = {r["step"]: r["loss"] for r in rows}
    assert losses[100] > 0.8 * math.log(64)
    assert losses[500] < 0.25 * math.log(64)
    assert rows[-1]["id_error"] < 0.15 and rows[-1]["ood_error"] < 0.8
