"""The model-size study figure (ckptlens.plots.studies.model_size)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ckptlens.plots.studies import model_size
from tests.plots.studies.helpers import (
    PYTHIA_SIZES,
    assert_png,
    assert_readable,
    axes_by_label,
    line_of,
    model_size_data,
)


@pytest.mark.parametrize(
    "name, size",
    [
        ("pythia-70m-deduped", 70e6),
        ("pythia-1.4b-deduped", 1.4e9),
        ("EleutherAI/pythia-2.8b", 2.8e9),
        ("bert-110M", 110e6),
        ("gpt2-1t", 1e12),
        ("minilm_seed0", None),
        ("resnet50", None),
        ("model-v1.5", None),
    ],
)
def test_parse_model_size(name, size):
    from ckptlens.plots.studies.model_size import parse_model_size

    assert parse_model_size(name) == (pytest.approx(size) if size else None)


# --------------------------------------------------------------------------------------------
# 5. model size
# --------------------------------------------------------------------------------------------


def test_model_size_values_ticks_and_components():
    explained, correlation = model_size_data()
    fig = model_size._figure_model_size_study(explained, correlation, PYTHIA_SIZES)
    axes = axes_by_label(fig)
    assert set(axes) == {"pc1", "n90", "pearson_r", "r_squared"}
    for ax in axes.values():
        assert ax.get_xscale() == "log"
    fig.canvas.draw()
    ticks = [t.get_text() for t in axes["pc1"].get_xticklabels()]
    assert ticks == ["70M", "160M", "410M", "1B", "1.4B", "2.8B"]
    sizes = np.array(list(PYTHIA_SIZES.values()))
    pc1 = explained[(explained["matrix"] == "layer_mean") & (explained["component"] == 1)]
    ln = line_of(axes["pc1"], "steps × metrics (mean over layers)")
    np.testing.assert_allclose(ln.get_xdata(), sizes)
    np.testing.assert_allclose(ln.get_ydata(), pc1.set_index("run").loc[list(PYTHIA_SIZES)]["explained_variance_ratio"])
    # components for 90 %: first component whose cumulative reaches 0.9
    for run in PYTHIA_SIZES:
        one = explained[(explained["run"] == run) & (explained["matrix"] == "layer_metric")]
        expected = int(np.argmax(one["cumulative"].to_numpy() >= 0.9)) + 1
        assert model_size.components_for(one) == expected
    n90 = line_of(axes["n90"], "steps × (layer, metric)").get_ydata()
    assert list(n90) == [
        model_size.components_for(explained[(explained["run"] == r) & (explained["matrix"] == "layer_metric")])
        for r in PYTHIA_SIZES
    ]
    assert model_size.components_for(pd.DataFrame({"component": [1, 2], "cumulative": [0.5, 0.8]})) != 2  # NaN
    # Pearson r: mean line per pair (name "x vs y") + single-layer points
    ax = axes["pearson_r"]
    mean = line_of(ax, "weight_norm vs update_norm")
    want = correlation[(correlation["layer"] == "mean") & (correlation["x_metric"] == "weight_norm")]
    np.testing.assert_allclose(mean.get_ydata(), want["pearson_r"])
    pts = [c for c in ax.collections if c.get_gid() == "layers|weight_norm vs update_norm"][0]
    n_layers = ((correlation["layer"] != "mean") & (correlation["x_metric"] == "weight_norm")).sum()
    assert len(pts.get_offsets()) == n_layers
    assert len([ln for ln in axes["r_squared"].get_lines() if ln.get_gid().startswith("mean|")]) == 3
    assert [t.get_text() for t in fig.legends[0].get_texts()][:3] == [
        "weight_norm vs update_norm",
        "effective_rank vs cka_to_final",
        "gradient_norm vs update_norm",
    ]
    assert_readable(fig)


def test_model_size_partial_and_empty(tmp_path, no_data_calls):
    explained, correlation = model_size_data()
    sizes = dict(list(PYTHIA_SIZES.items())[:3])
    fig = model_size._figure_model_size_study(explained, None, sizes)  # no correlations; runs without a size
    axes = axes_by_label(fig)
    assert len(line_of(axes["pc1"], "steps × metrics (mean over layers)").get_xdata()) == 3
    assert "no correlation result" in axes["pearson_r"].texts[0].get_text()
    assert "pythia-2.8b" in fig._suptitle.get_text()
    p = model_size.plot_model_size_study(pd.DataFrame(), pd.DataFrame(), {}, tmp_path / "m.png")
    assert_png(p)
    assert no_data_calls == [p]
