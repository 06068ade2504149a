"""A tidy table from per-layer trajectories, for the analysis tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

LAYERS = ["blocks.0.attn", "blocks.1.attn", "blocks.2.attn", "blocks.10.attn"]
STEPS = list(range(0, 40, 2))


def make_table(metrics: dict[str, np.ndarray], layers=LAYERS, steps=STEPS, run="toy") -> pd.DataFrame:
    """Tidy table from {metric: array[step, layer]}."""
    rows = [
        {"run": run, "step": s, "layer": layer, "metric": m, "value": float(v[i, j])}
        for m, v in metrics.items()
        for i, s in enumerate(steps)
        for j, layer in enumerate(layers)
    ]
    return pd.DataFrame(rows)
