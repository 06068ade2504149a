"""ckptlens.plots: what every figure shares — the step axis, log-y labels, an atomic PNG write, a
"no data" figure for empty input — and the package's lazy exports."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from ckptlens.plots import (
    _style,
    is_log_spaced,
    plot_correlation,
    plot_metric_trajectories,
    plot_pca,
    plot_training_curves,
    step_axis,
)
from tests.plots.helpers import PYTHIA_STEPS, assert_no_leftovers, assert_png

# ------------------------------------------------------------------------------- step axis


def test_step_axis_symlog_for_log_spaced_steps():
    ax = Figure().add_subplot()
    assert step_axis(ax, PYTHIA_STEPS) == "symlog"
    assert ax.get_xscale() == "symlog"
    assert ax.get_xlabel() == "training step (symlog scale)"
    assert ax.get_xlim()[0] == 0  # step 0 is on the axis
    assert step_axis(Figure().add_subplot(), [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024])


def test_step_axis_linear_for_even_steps():
    ax = Figure().add_subplot()
    assert step_axis(ax, range(0, 1000, 50)) == "linear"
    assert ax.get_xscale() == "linear"
    assert ax.get_xlabel() == "training step"
    # a wide but evenly spaced range is not log-spaced either
    assert not is_log_spaced(range(0, 100001, 100))
    assert not is_log_spaced([])


# ------------------------------------------------------------------------------ empty input


def test_empty_inputs_give_no_data_pngs(tmp_path, no_data_calls):
    empty_tidy = pd.DataFrame(columns=["run", "step", "layer", "metric", "value"])
    paths = plot_metric_trajectories(empty_tidy, tmp_path / "traj")
    assert [p.name for p in paths] == ["trajectory_no_data.png"]
    written = paths + [
        plot_training_curves(pd.DataFrame(columns=["step", "loss"]), tmp_path / "curves.png"),
        plot_pca(
            pd.DataFrame(columns=["run", "matrix", "component", "explained_variance_ratio", "cumulative"]),
            tmp_path / "pca.png",
        ),
        plot_correlation(
            pd.DataFrame(columns=["run", "x_metric", "y_metric", "layer", "pearson_r"]), tmp_path / "corr.png"
        ),
    ]
    assert no_data_calls == written
    for p in written:
        img = assert_png(p)
        assert img.shape[:2] == (450, 750)  # the 5 x 3 in "no data" figure at 150 dpi
    assert_no_leftovers(tmp_path)


# ------------------------------------------------------------------------------- atomicity


def test_failed_write_leaves_neither_png_nor_temp_file(tmp_path, monkeypatch):
    def boom(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        plot_pca(pd.DataFrame(), tmp_path / "pca.png")
    assert list(tmp_path.iterdir()) == []


def test_existing_png_is_replaced_whole(tmp_path):
    target = tmp_path / "pca.png"
    target.write_bytes(b"old, half-written")
    plot_pca(pd.DataFrame(), target)
    assert_png(target)
    assert_no_leftovers(tmp_path)


@pytest.mark.parametrize(
    "low, high, labels",
    [
        (0.15, 4.2, {"0.2", "0.5", "1", "2"}),  # one to two decades: 2 and 5 times powers of ten
        (0.3, 0.9, {"0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"}),  # within a decade: every tick
    ],
)
def test_log_y_labels_enough_ticks_over_few_decades(low, high, labels):
    fig = Figure()
    ax = fig.subplots()
    values = np.geomspace(low, high, 20)
    ax.plot(np.arange(20), values)
    _style.log_y(ax, values)
    fig.canvas.draw()
    shown = {
        t.get_text()
        for t in ax.get_yticklabels(minor=True) + ax.get_yticklabels()
        if t.get_text() and low <= t.get_position()[1] <= high
    }
    assert labels <= shown


def test_lazy_exports_of_the_plots_package():
    import ckptlens.plots as plots

    assert plots.plot_pca.__module__ == "ckptlens.plots.pca"
    assert plots.plot_task_vector_samples.__module__ == "ckptlens.plots.task_vectors"
    assert plots.step_axis is _style.step_axis and "plot_correlation" in dir(plots)
    with pytest.raises(AttributeError):
        plots.no_such_name  # noqa: B018
