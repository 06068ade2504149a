"""The gradient-PCA study figure (ckptlens.plots.studies.gradient_pca)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba

from ckptlens.plots.studies import gradient_pca
from tests.plots.studies.helpers import (
    assert_png,
    assert_readable,
    axes_by_label,
    data_lines,
    gradient_pca_data,
    line_of,
)

# --------------------------------------------------------------------------------------------
# 4. gradient PCA
# --------------------------------------------------------------------------------------------


def test_expected_abs_cosine():
    assert gradient_pca.expected_abs_cosine(2) == pytest.approx(2 / math.pi)
    assert gradient_pca.expected_abs_cosine(3) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 20000, 32))
    mc = np.mean(np.abs(np.sum(a * b, 1)) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))
    assert gradient_pca.expected_abs_cosine(32) == pytest.approx(mc, abs=0.005)


def test_gradient_pca_rows_values_and_reference():
    table = gradient_pca_data(depth=3)
    fig = gradient_pca._figure_gradient_pca_study(table, dims={"blocks.0.linear": 32, "blocks.1.linear": 32})
    axes = axes_by_label(fig)
    assert len(axes) == 6  # 3 layers x 2
    ax = axes["blocks.1.linear|evr"]
    assert len(data_lines(ax)) == 3 * 2
    sub = table[(table["layer"] == "blocks.1.linear|out1") & (table["metric"] == "gradient_pca_evr.pc2")]
    ln = line_of(ax, "PC2|out1")
    np.testing.assert_allclose(ln.get_ydata(), sub["value"])
    assert ln.get_linestyle() == "--" and line_of(ax, "PC2|out0").get_linestyle() == "-"
    assert to_rgba(ln.get_color()) == to_rgba(line_of(ax, "PC2|out0").get_color())
    ax = axes["blocks.1.linear|cosine"]
    sub = table[
        (table["layer"] == "blocks.1.linear|out0~blocks.1.linear|out1") & (table["metric"] == "gradient_pca_cosine.pc1")
    ]
    np.testing.assert_allclose(line_of(ax, "PC1|out0 vs out1").get_ydata(), sub["value"])
    ref = [ln for ln in ax.get_lines() if ln.get_gid() == "random"]
    assert len(ref) == 1 and ref[0].get_ydata()[0] == pytest.approx(gradient_pca.expected_abs_cosine(32))
    # no width for blocks.2: no reference line there
    assert not [ln for ln in axes["blocks.2.linear|cosine"].get_lines() if ln.get_gid() == "random"]
    assert ax.get_xscale() == "symlog"
    assert_readable(fig)


def test_gradient_pca_without_dims_or_cosine(tmp_path, no_data_calls):
    table = gradient_pca_data(depth=1)
    fig = gradient_pca._figure_gradient_pca_study(table[table["metric"].str.startswith("gradient_pca_evr")])
    axes = axes_by_label(fig)
    assert not axes["blocks.0.linear|cosine"].get_lines()
    assert "not computed" in axes["blocks.0.linear|cosine"].texts[0].get_text()
    p = gradient_pca.plot_gradient_pca_study(pd.DataFrame(), tmp_path / "g.png")
    assert_png(p)
    assert no_data_calls == [p]
