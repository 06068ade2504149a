"""The task-vector figures: values drawn are the table's (PC1 share per block and kind, median and
band over heads, total variance), checked on task vectors whose PCA is computed here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ckptlens.plots import _style
from ckptlens.plots import task_vectors as tvp
from ckptlens.task_vectors.pca import task_vector_pca


@pytest.fixture
def captured(monkeypatch):
    figs = []
    monkeypatch.setattr(_style, "save", lambda fig, path: figs.append(fig) or path)
    return figs


def pca_table(seed=0, n_runs=3):
    """Task-vector PCA rows of a 3-block model: per block two heads' OV, a query, and a head on top."""
    rng = np.random.default_rng(seed)
    names = [f"enc.layer.{i}.attn.head{h}.ov" for i in range(3) for h in range(2)]
    names += [f"enc.layer.{i}.attn.query" for i in range(3)] + ["classifier"]
    base = {n: rng.normal(size=(4, 4)) for n in names}
    runs = [
        {n: w + rng.normal(scale=0.1 * (1 + k), size=w.shape) for k, (n, w) in enumerate(base.items())}
        for _ in range(n_runs)
    ]
    return pd.DataFrame(task_vector_pca(base, runs, n_components=3, run="tv"))


def test_layer_kind():
    assert tvp.layer_kind("bert.encoder.layer.3.attention.head7.ov") == (
        3.0,
        "bert.encoder.layer.{i}.attention.head*.ov",
    )
    assert tvp.layer_kind("blocks.0.linear") == (0.0, "blocks.{i}.linear")
    assert tvp.layer_kind("head") == (None, "head")


def test_pca_per_layer_values(captured, tmp_path):
    table = pca_table()
    tvp.plot_task_vectors(table, tmp_path / "tv.png", title="t")
    fig = captured[0]
    ax_share, ax_total = fig.axes[:2]
    pc1 = table[table.metric == "task_vector_pca_evr.pc1"].set_index("layer").value
    total = table[table.metric == "task_vector_pca_variance.sum"].set_index("layer").value
    lines = {ln.get_label(): ln for ln in ax_share.get_lines()}
    heads = next(ln for label, ln in lines.items() if label.startswith("head*.ov"))
    assert "median, band: min–max over 2" in heads.get_label()
    np.testing.assert_allclose(heads.get_xdata(), [0, 1, 2])
    np.testing.assert_allclose(
        heads.get_ydata(), [np.median([pc1[f"enc.layer.{i}.attn.head{h}.ov"] for h in range(2)]) for i in range(3)]
    )
    np.testing.assert_allclose(lines["query"].get_ydata(), [pc1[f"enc.layer.{i}.attn.query"] for i in range(3)])
    # the index-less classifier is a point at the right end, its tick named
    np.testing.assert_allclose(lines["classifier"].get_xdata(), [3])
    assert [t.get_text() for t in ax_share.get_xticklabels()] == ["0", "1", "2", "classifier"]
    # 3 runs, centred: two directions with variance; isotropic share 1/2
    iso = lines["isotropic: 1/2 per direction"]
    assert iso.get_ydata()[0] == pytest.approx(0.5)
    # the band over heads spans their min and max
    band = ax_share.collections[0].get_paths()[0].vertices[:, 1]
    h0 = [pc1[f"enc.layer.{i}.attn.head{h}.ov"] for i in range(3) for h in range(2)]
    assert band.min() == pytest.approx(min(h0)) and band.max() == pytest.approx(max(h0))
    tot = {ln.get_label(): ln for ln in ax_total.get_lines()}
    np.testing.assert_allclose(tot["query"].get_ydata(), [total[f"enc.layer.{i}.attn.query"] for i in range(3)])
    assert ax_total.get_yscale() == "log"
    assert fig._suptitle.get_text() == "t"


def test_pca_per_layer_without_rows_is_a_no_data_figure(tmp_path):
    path = tvp.plot_task_vectors(pd.DataFrame(columns=["layer", "metric", "value"]), tmp_path / "e.png")
    assert path.stat().st_size > 0


def test_samples_figure_values(captured, tmp_path):
    table = pd.DataFrame(
        {
            "kind": ["base", "finetuned", "finetuned", "mean", "sample", "sample"],
            "name": ["base", "r_seed0", "r_seed1", "mean", "s0", "s1"],
            "loss": [0.7, 0.10, 0.11, 0.105, 0.102, 0.108],
            "accuracy": [0.4, 1.0, 0.98, 1.0, 0.99, 1.0],
        }
    )
    tvp.plot_task_vector_samples(table, tmp_path / "s.png")
    fig = captured[0]
    assert len(fig.axes) == 3  # the base's loss would squash the others: a zoomed third panel
    acc = fig.axes[0]
    points = [c for c in acc.collections if type(c).__name__ == "PathCollection"]
    ys = [list(np.asarray(c.get_offsets())[:, 1]) for c in points]
    assert ys == [[0.4], [1.0, 0.98], [1.0], [0.99, 1.0]]  # base, runs, their mean, samples
    assert [t.get_text() for t in acc.texts] == ["seed0", "seed1"]
