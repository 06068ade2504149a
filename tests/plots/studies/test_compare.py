"""The run-comparison study figure (ckptlens.plots.studies.compare)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import to_rgba

from ckptlens.plots.studies import compare
from tests.plots.studies.helpers import assert_png, assert_readable, comparison_data, data_lines, event_steps, line_of

# --------------------------------------------------------------------------------------------
# 6. run comparison
# --------------------------------------------------------------------------------------------


def test_run_comparison_panels_order_shared_y_and_events():
    table = comparison_data(n_layers=5)
    table = table[~((table["run"] == "seed 2") & (table["layer"].str.contains(r"\.4\.")))]  # layer 4 not common
    events = pd.DataFrame(
        [
            ("seed 1", "weight_norm", "gpt_neox.layers.2.attention.dense", "change_point", 64, 0, 1),
            ("seed 1", "other", "gpt_neox.layers.2.attention.dense", "change_point", 8, 0, 1),
        ],
        columns=["run", "metric", "layer", "kind", "step", "value", "score"],
    )
    fig = compare._figure_run_comparison(table, "weight_norm", runs=["seed 2", "seed 0", "seed 1"], events=events)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_label() for ax in panels] == [f"gpt_neox.layers.{i}.attention.dense" for i in range(4)]
    ax = panels[2]
    assert [ln.get_label() for ln in data_lines(ax)] == ["seed 2", "seed 0", "seed 1"]
    sub = table[(table["run"] == "seed 0") & (table["layer"] == ax.get_label())]
    np.testing.assert_allclose(line_of(ax, "seed 0").get_ydata(), sub["value"])
    assert event_steps(ax) == [64.0] and event_steps(panels[1]) == []
    assert panels[0].get_shared_y_axes().joined(panels[0], panels[3])
    assert ax.get_xscale() == "symlog"
    assert len(fig.legends) == 1 and [t.get_text() for t in fig.legends[0].get_texts()][:3] == [
        "seed 2",
        "seed 0",
        "seed 1",
    ]
    # colours: the run order decides, tab10
    assert to_rgba(line_of(ax, "seed 2").get_color()) == to_rgba("tab:blue")
    assert_readable(fig)


def test_run_comparison_pair_labels_and_readable_axis():
    rows = [
        (run, step, f"blocks.{i}.linear|out0~blocks.{i}.linear|out1", "gradient_pca_cosine.pc1", 0.1 * i + step / 100)
        for run in ("a", "b")
        for step in (0, 50, 100)
        for i in range(2)
    ]
    table = pd.DataFrame(rows, columns=["run", "step", "layer", "metric", "value"])
    fig = compare._figure_run_comparison(table, "gradient_pca_cosine.pc1")
    panels = [ax for ax in fig.axes if ax.get_visible()]
    # long names lose their common prefix, which the title names
    assert [ax.get_title() for ax in panels] == ["0.linear: out0 vs out1", "1.linear: out0 vs out1"]
    assert "layer names after 'blocks.'" in fig._suptitle.get_text()
    assert panels[0].get_ylabel() == "|cos| between the outputs' gradient PCs\n(pc1)"
    assert (
        compare._display_layer("blocks.1.attn.head0.qk~blocks.0.attn.head0.ov")
        == "blocks.1.attn.head0.qk vs blocks.0.attn.head0.ov"
    )
    assert compare._display_layer("blocks.3") == "blocks.3"


def test_run_comparison_max_panels_and_empty(tmp_path, no_data_calls):
    fig = compare._figure_run_comparison(comparison_data(n_layers=24), "weight_norm", max_panels=6)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 6
    assert panels[0].get_label().startswith("gpt_neox.layers.0.") and panels[-1].get_label().startswith(
        "gpt_neox.layers.23."
    )
    assert "6 of 24 layers" in fig._suptitle.get_text()
    p = compare.plot_run_comparison(comparison_data(n_layers=2), "missing", tmp_path / "c.png")
    assert_png(p)
    assert no_data_calls == [p]
