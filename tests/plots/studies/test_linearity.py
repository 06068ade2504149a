"""The linearity study figure (ckptlens.plots.studies.linearity)."""

from __future__ import annotations

import numpy as np
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgba

from ckptlens.plots.studies import linearity
from tests.plots.studies.helpers import assert_png, assert_readable, axes_by_label, data_lines, line_of, linearity_data

# --------------------------------------------------------------------------------------------
# 3. linearity study
# --------------------------------------------------------------------------------------------


def test_linearity_panels_values_and_bands():
    table = linearity_data(n_layers=4, prefix="blocks.")
    fig = linearity._figure_linearity_study(table)
    axes = axes_by_label(fig)
    pairs = [f"blocks.{i}~blocks.{i + 1}" for i in range(3)]
    assert set(axes) == {"score", "activation_norm"} | {
        f"{m}|{p}" for m in ("linearity_per_sample", "consecutive_cosine") for p in pairs
    }
    ax = axes["score"]
    pair = "blocks.1~blocks.2"
    sub = table[(table["layer"] == pair)]
    solid = line_of(ax, "1 → 2|linearity_score")
    dashed = line_of(ax, "1 → 2|linearity_score_no_residual")
    np.testing.assert_allclose(solid.get_ydata(), sub[sub["metric"] == "linearity_score"]["value"])
    np.testing.assert_allclose(dashed.get_ydata(), sub[sub["metric"] == "linearity_score_no_residual"]["value"])
    assert solid.get_linestyle() == "-" and dashed.get_linestyle() == "--"
    assert to_rgba(solid.get_color()) == to_rgba(dashed.get_color())
    # small multiples: per pair two bands (p5-p95, p25-p75) and the median = p50
    ax = axes[f"linearity_per_sample|{pair}"]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert sorted(c.get_gid() for c in bands) == ["band_p25_p75", "band_p5_p95"]
    med = line_of(ax, "1 → 2")
    np.testing.assert_allclose(med.get_ydata(), sub[sub["metric"] == "linearity_per_sample.p50"]["value"])
    p25 = sub[sub["metric"] == "linearity_per_sample.p25"]["value"].to_numpy()
    inner = [c for c in bands if c.get_gid() == "band_p25_p75"][0]
    assert np.isclose(inner.get_paths()[0].vertices[:, 1].min(), p25.min())
    assert to_rgba(med.get_color()) == to_rgba(solid.get_color())  # a pair's colour is the same everywhere
    assert (
        axes[f"consecutive_cosine|{pair}"]
        .get_shared_y_axes()
        .joined(axes[f"consecutive_cosine|{pair}"], axes[f"consecutive_cosine|{pairs[0]}"])
    )
    # activation norm per layer
    ax = axes["activation_norm"]
    assert len(data_lines(ax)) == 4
    assert ax.get_xscale() == "linear"  # 0, 10, ..., 60
    assert_readable(fig)


def test_linearity_many_pairs_and_missing_metrics(tmp_path, no_data_calls):
    fig = linearity._figure_linearity_study(linearity_data(n_layers=12))
    axes = axes_by_label(fig)
    shown = [name for name in axes if name.startswith("consecutive_cosine|")]
    assert len(shown) == linearity.MAX_BAND_PAIRS
    assert shown[0].endswith("layer.0~bert.encoder.layer.1") and shown[-1].endswith("layer.10~bert.encoder.layer.11")
    assert any("6 of 11 layer pairs" in sf._suptitle.get_text() for sf in fig.subfigs if sf._suptitle)
    assert_readable(fig)
    # only the scores: one panel, no crash
    only = linearity_data(per_sample=False, cosine=False, norm=False, no_residual=False)
    fig = linearity._figure_linearity_study(only, title="scores only")
    assert set(axes_by_label(fig)) == {"score"} and fig._suptitle.get_text().startswith("scores only")
    # no scores and no norms: only the band rows
    bands = linearity_data(n_layers=3, norm=False)
    bands = bands[~bands["metric"].str.startswith("linearity_score")]
    assert set(axes_by_label(linearity._figure_linearity_study(bands))) == {
        f"{m}|bert.encoder.layer.{i}~bert.encoder.layer.{i + 1}"
        for m in ("linearity_per_sample", "consecutive_cosine")
        for i in range(2)
    }
    p = linearity.plot_linearity_study(only[only["metric"] == "nothing"], tmp_path / "l.png")
    assert_png(p)
    assert no_data_calls == [p]
