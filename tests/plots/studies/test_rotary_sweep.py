"""The rotary-sweep study figure (ckptlens.plots.studies.rotary_sweep)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba

from ckptlens.plots.studies import rotary_sweep
from tests.plots.studies.helpers import assert_png, assert_readable, axes_by_label, rotary_data, step_lines

# --------------------------------------------------------------------------------------------
# 2. rotary sweep
# --------------------------------------------------------------------------------------------


def test_rotary_sweep_lines_per_step_and_max_over_pairs():
    steps = list(range(0, 200, 10))  # 20 evenly spaced checkpoints
    tables = rotary_data(steps=steps, ks=(1, 2), offsets=(0, 1, 2, 4, 8))
    fig = rotary_sweep._figure_rotary_sweep(tables)
    axes = axes_by_label(fig)
    panels = [a for a in axes if "|" in a]
    assert len(panels) == 2 * 3  # 2 runs x (k1, k2, z-score)
    ax = axes["unbounded|k2"]
    lines = step_lines(ax)
    drawn = [int(ln.get_label().split()[-1]) for ln in lines]
    assert len(lines) == 8 and drawn[0] == 0 and drawn[-1] == 190 and drawn == sorted(drawn)
    t = tables["unbounded"]
    sub = t[(t["step"] == 190) & t["metric"].str.startswith("qk_ov_rotary_sweep.k2_r")]
    want = sub.assign(r=sub["metric"].str.extract(r"_r(\d+)$")[0].astype(int)).groupby("r")["value"].max()
    np.testing.assert_array_equal(lines[-1].get_xdata(), want.index.to_numpy(dtype=float))
    np.testing.assert_allclose(lines[-1].get_ydata(), want.to_numpy())
    # colour by step: the colours differ and follow the colormap's order
    assert len({to_rgba(ln.get_color()) for ln in lines}) == 8
    # baseline from qk_ov_overlap_max.k2_random, and the colorbar label
    base = [ln for ln in ax.get_lines() if ln.get_gid() == "random"]
    assert len(base) == 1 and base[0].get_ydata()[0] == pytest.approx(0.2)
    assert any(a.get_ylabel() == "training step" for a in fig.axes)
    assert ax.get_xscale() == "symlog"
    assert "max over 4 head pairs" in ax.get_ylabel()
    # explicit steps and ks
    fig = rotary_sweep._figure_rotary_sweep(tables, ks=[1], steps=[0, 100])
    axes = axes_by_label(fig)
    assert sorted(a for a in axes if "|" in a) == ["pool 256|k1", "pool 256|zscore", "unbounded|k1", "unbounded|zscore"]
    assert [ln.get_label() for ln in step_lines(axes["pool 256|zscore"])] == ["step 0", "step 100"]
    assert_readable(fig)


def test_rotary_sweep_empty(tmp_path, no_data_calls):
    p = rotary_sweep.plot_rotary_sweep(
        {"a": pd.DataFrame({"run": ["a"], "step": [0], "layer": ["x"], "metric": ["other"], "value": [1.0]})},
        tmp_path / "r.png",
    )
    assert_png(p)
    assert no_data_calls == [p]
