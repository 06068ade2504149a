"""The correlation heatmap (ckptlens.plots.correlation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ckptlens.plots import (
    _style,
    plot_correlation,
)
from tests.plots.helpers import assert_no_leftovers, assert_png


def test_correlation_plot_small_and_large(tmp_path):
    rng = np.random.default_rng(1)

    def corr(n_layers):
        rows = []
        for x, y in (("a", "b"), ("a", "c"), ("b", "c")):
            rs = rng.uniform(-1, 1, n_layers)
            rs[0] = np.nan  # an undefined cell
            for i, r in enumerate(rs):
                rows.append(
                    {
                        "run": "r",
                        "x_metric": x,
                        "y_metric": y,
                        "layer": f"gpt_neox.layers.{i}.mlp",
                        "pearson_r": r,
                        "r_squared": r * r,
                        "slope": 1.0,
                        "intercept": 0.0,
                        "n_steps": 27,
                    }
                )
            rows.insert(
                0,
                {
                    "run": "r",
                    "x_metric": x,
                    "y_metric": y,
                    "layer": "mean",
                    "pearson_r": np.nanmean(rs),
                    "r_squared": np.nan,
                    "slope": np.nan,
                    "intercept": np.nan,
                    "n_steps": pd.NA,
                },
            )
        return pd.DataFrame(rows)

    small = assert_png(plot_correlation(corr(4), tmp_path / "small.png"))
    large = assert_png(plot_correlation(corr(40), tmp_path / "large.png"))
    assert large.shape[0] > small.shape[0]  # the figure grows with the number of layers
    assert_no_leftovers(tmp_path)


def test_correlation_plot_summary_rows_last_and_labelled(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(_style, "save", lambda fig, path: seen.append(fig) or Path(path))
    rows = [
        {"run": "r", "x_metric": "a", "y_metric": "b", "layer": layer, "pearson_r": r}
        for layer, r in (("mean", 0.5), ("blocks.1", 0.4), ("blocks.0", 0.6))
    ]
    rows.append({"run": "r", "x_metric": "a", "y_metric": "c", "layer": "layer_mean", "pearson_r": -0.3})
    plot_correlation(pd.DataFrame(rows), tmp_path / "c.png")
    ax = seen[0].axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1", "mean over layers", "layer-mean trajectories"]
    grid = ax.images[0].get_array()
    assert grid[3, 1] == pytest.approx(-0.3) and np.ma.is_masked(grid[3, 0]) and grid[2, 0] == pytest.approx(0.5)

    # only a summary row (metrics on different layers, e.g. layer pairs vs layers): still a figure
    seen.clear()
    plot_correlation(pd.DataFrame(rows[-1:]), tmp_path / "d.png")
    assert [t.get_text() for t in seen[0].axes[0].get_yticklabels()] == ["layer-mean trajectories"]


def test_one_colour_convention_positive_r_is_blue_in_heatmaps_and_tables(tmp_path, monkeypatch):
    """The correlation table's caption says "blue: they rise and fall together": the heatmaps
    draw positive r in blue and negative r in red too."""
    from ckptlens.plots import tables

    seen = []
    monkeypatch.setattr(_style, "save", lambda fig, path: seen.append(fig) or Path(path))
    rows = [
        {"run": "r", "x_metric": "a", "y_metric": "b", "layer": "blocks.0", "pearson_r": 0.9},
        {"run": "r", "x_metric": "a", "y_metric": "b", "layer": "blocks.1", "pearson_r": -0.9},
    ]
    plot_correlation(pd.DataFrame(rows), tmp_path / "c.png")
    (image,) = seen[0].axes[0].get_images()
    pos, neg = image.to_rgba(np.array([0.9, -0.9]))
    assert pos[2] > pos[0] and neg[0] > neg[2]  # +0.9 blue, -0.9 red
    assert "9,105,218" in tables._color(0.9) and "207,34,46" in tables._color(-0.9)  # blue, red
    page = tables.correlation_page(
        pd.DataFrame([{**rows[0], "r_squared": 0.81, "slope": 1.0, "intercept": 0.0, "n_steps": 5}]), "r"
    )
    assert "blue: they rise and fall together" in page and "rgba(9,105,218" in page


def test_a_tall_strip_is_capped_to_one_screen_and_says_what_it_left_out(tmp_path, monkeypatch):
    """156 layers (MiniLM's default targets) × one pair: at most MAX_LAYER_ROWS rows."""
    from ckptlens.plots import correlation

    seen = []
    monkeypatch.setattr(_style, "save", lambda fig, path: seen.append(fig) or Path(path))
    rng = np.random.default_rng(0)
    rows = [
        {"run": "r", "x_metric": "a", "y_metric": "b", "layer": f"encoder.layer.{i}", "pearson_r": rng.uniform(-1, 1)}
        for i in range(156)
    ]
    plot_correlation(pd.DataFrame(rows), tmp_path / "c.png")
    fig = seen[0]
    assert len(fig.axes[0].get_yticklabels()) == correlation.MAX_LAYER_ROWS
    assert fig.get_figheight() <= 12.0  # 1800 pixels: one screen, not a strip to scroll
    text = fig._suptitle.get_text()
    assert f"{correlation.MAX_LAYER_ROWS} of 156 layers shown" in text and "correlation.csv" in text
