"""Change-point detection on a real induction-head training run: the loss sits near ln(vocab) and
then drops when the induction head forms; the detected change must be at that drop."""

import numpy as np
import pandas as pd

from ckptlens.analysis.dynamics import training_log_dynamics
from ckptlens.sources.trained.induction import InductionTaskConfig
from ckptlens.sources.trained.train import train_induction
from ckptlens.sources.trained.transformer import ToyModelConfig


def test_loss_change_point_of_the_demo_induction_run(tmp_path):
    model = ToyModelConfig(vocab_size=64, d_model=64, n_layers=2, n_heads=1)
    task = InductionTaskConfig(vocab_size=64, seq_len=32, min_segment=4, max_segment=12, ood_segment=16)
    rows = train_induction(
        model,
        task,
        total_steps=700,
        save_steps=[],
        checkpoint_path=lambda s: tmp_path / f"{s}",
        log_path=tmp_path / "log.csv",
        batch_size=64,
        lr=0.002,
        log_every=10,
        seed=0,
    )
    log = pd.DataFrame(rows)
    events, _ = training_log_dynamics(log, "demo")
    cps = events.query("kind == 'change_point' and metric == 'loss'")
    assert len(cps) >= 1
    # plain reading of the transition: the first logged step where the loss is below the midpoint
    # of its plateau (first 10 logs) and its final level (last 10 logs)
    loss = log["loss"].to_numpy()
    mid = (np.median(loss[:10]) + np.median(loss[-10:])) / 2
    crossing = int(log["step"][np.argmax(loss < mid)])
    assert loss[:10].mean() > 3.5 and loss[-10:].mean() < 1.0, "the run must show the transition"
    assert min(abs(int(s) - crossing) for s in cps["step"]) <= 40
    # the out-of-distribution error falls at the same transition (an induction head, not memorisation)
    ood = events.query("kind == 'change_point' and metric == 'ood_error'")
    assert len(ood) and min(abs(int(s) - crossing) for s in ood["step"]) <= 60
