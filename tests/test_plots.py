"""ckptlens.plots: every function writes a readable PNG, atomically, also for empty input."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
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

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PYTHIA_STEPS = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 3000] + list(range(13000, 143001, 10000))


def assert_png(path: Path) -> np.ndarray:
    path = Path(path)
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_MAGIC
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 0 and img.shape[1] > 0
    return img


def assert_no_leftovers(directory: Path) -> None:
    """Only final PNGs: no temporary (dot-prefixed or .tmp) files survive."""
    for p in Path(directory).rglob("*"):
        assert not p.name.startswith("."), p
        assert not p.name.endswith(".tmp"), p


@pytest.fixture
def no_data_calls(monkeypatch) -> list[Path]:
    """Records the paths for which the "no data" figure was drawn."""
    calls: list[Path] = []
    original = _style.no_data

    def spy(path, *args, **kwargs):
        calls.append(Path(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(_style, "no_data", spy)
    return calls


def tidy(runs=("run-a",), metrics=("weight_norm", "grad/cos sim"), layers=4, steps=PYTHIA_STEPS):
    rng = np.random.default_rng(0)
    rows = []
    for run in runs:
        for m in metrics:
            for i in range(layers):
                for kind in ("attn.q_proj", "mlp.fc1"):
                    for s in steps:
                        rows.append(
                            {
                                "run": run,
                                "step": s,
                                "layer": f"blocks.{i}.{kind}",
                                "metric": m,
                                "value": rng.normal() + np.log1p(s),
                            }
                        )
    df = pd.DataFrame(rows)
    df.loc[5, "value"] = np.nan  # a gap
    return df


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


# ------------------------------------------------------------------------------ each figure


def test_trajectories_one_png_per_metric_with_runs_as_panels(tmp_path, no_data_calls):
    out = tmp_path / "new" / "dir"  # parents are created
    paths = plot_metric_trajectories(tidy(runs=("run-a", "run-b")), out)
    names = sorted(p.name for p in paths)
    assert names == ["trajectory_grad_cos_sim.png", "trajectory_weight_norm.png"]
    for p in paths:
        assert_png(p)
    assert not no_data_calls
    assert sorted(p.name for p in out.iterdir()) == names
    assert_no_leftovers(tmp_path)


def test_trajectories_legend_for_few_layers_and_colorbar_for_many(tmp_path):
    few = plot_metric_trajectories(tidy(metrics=("m",), layers=2), tmp_path / "few")
    many = plot_metric_trajectories(tidy(metrics=("m",), layers=12, steps=range(0, 500, 25)), tmp_path / "many")
    assert_png(few[0])
    assert_png(many[0])
    assert_no_leftovers(tmp_path)


def test_training_curves(tmp_path, no_data_calls):
    steps = np.array(PYTHIA_STEPS)
    log = pd.DataFrame(
        {
            "step": steps,
            "loss": 5 * np.exp(-steps / 3e4) + 1,
            "id_error": np.linspace(0.9, 0.1, steps.size),
            "ood_error": np.linspace(0.95, 0.4, steps.size),
        }
    )
    log.loc[2, "ood_error"] = np.nan
    both = assert_png(plot_training_curves(log, tmp_path / "curves.png"))
    # errors missing or all NaN: only the loss panel (a narrower figure)
    loss_only = assert_png(plot_training_curves(log[["step", "loss"]], tmp_path / "loss.png"))
    nan_err = assert_png(plot_training_curves(log.assign(id_error=np.nan, ood_error=np.nan), tmp_path / "nan.png"))
    assert loss_only.shape[1] < both.shape[1] and nan_err.shape == loss_only.shape
    assert not no_data_calls
    assert_no_leftovers(tmp_path)


def test_pca_plot(tmp_path):
    rows = []
    for matrix, ratios in (("layer_mean", [0.7, 0.2, 0.1]), ("layer_metric", [0.5, 0.3, 0.1, 0.06, 0.04])):
        for k, (r, c) in enumerate(zip(ratios, np.cumsum(ratios))):
            rows.append(
                {"run": "r", "matrix": matrix, "component": k + 1, "explained_variance_ratio": r, "cumulative": c}
            )
    assert_png(plot_pca(pd.DataFrame(rows), tmp_path / "sub" / "pca.png"))
    assert_no_leftovers(tmp_path)


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


def test_all_nan_metric_gives_no_data_figure_under_its_name(tmp_path, no_data_calls):
    df = tidy(metrics=("ok", "broken"), layers=1)
    df.loc[df.metric == "broken", "value"] = np.nan
    paths = plot_metric_trajectories(df, tmp_path)
    assert sorted(p.name for p in paths) == ["trajectory_broken.png", "trajectory_ok.png"]
    assert no_data_calls == [tmp_path / "trajectory_broken.png"]


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


def test_every_registered_metric_has_a_readable_axis_label():
    from ckptlens.metrics import METRICS  # importing the package registers every metric
    from ckptlens.plots.labels import axis_label, metric_label

    assert len(METRICS) > 30 and sorted(name for name, m in METRICS.items() if not m.label) == []
    assert metric_label("cka_to_final") == "linear CKA to the final checkpoint"
    assert metric_label("qk_ov_token_mismatch.k8") == "token mismatch ratio (k8)"
    assert metric_label("my_own.metric") == "my_own.metric"
    assert axis_label("gradient_norm", log=True) == "gradient norm ‖∇W‖_F (log scale)"
    assert all(len(line) <= 40 for line in axis_label("relative_update_norm_initial", True).splitlines())


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
