"""Training the demo model for real (slow): deterministic, checkpoints saved, induction heads form."""

import math

import numpy as np
from safetensors.numpy import load_file

from ckptlens.sources.trained.induction import InductionTaskConfig
from ckptlens.sources.trained.train import train_induction
from ckptlens.sources.trained.transformer import ToyModelConfig


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
