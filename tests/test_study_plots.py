"""ckptlens.plots.studies: the study figures draw the table values, keep run colours, and stay readable.

The figures are checked through the ``_figure_*`` functions, which return the Figure: lines'
data are compared with the table, panels counted, colours and scales read back. The public
wrappers are checked for an atomic PNG write and the "no data" figure on empty input.
``render_all`` draws every figure from realistic synthetic data (run this file as a script to
write them to /tmp/study_plots for a look).
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgba

from ckptlens.plots import _style, studies
from ckptlens.plots.studies import _common, compare, gradient_pca, induction, linearity, model_size, rotary_sweep

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LOG_STEPS = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 4000, 8000]
RUNS = ("pool 256", "pool 4096", "unbounded")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def assert_png(path: Path) -> np.ndarray:
    path = Path(path)
    assert path.is_file() and path.read_bytes()[:8] == PNG_MAGIC
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    return img


def assert_no_leftovers(directory: Path) -> None:
    for p in Path(directory).rglob("*"):
        assert not p.name.startswith(".") and not p.name.endswith(".tmp"), p


@pytest.fixture
def no_data_calls(monkeypatch) -> list[Path]:
    calls: list[Path] = []
    original = _style.no_data

    def spy(path, *args, **kwargs):
        calls.append(Path(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(_style, "no_data", spy)
    return calls


def axes_by_label(fig) -> dict:
    return {ax.get_label(): ax for ax in fig.axes if ax.get_label()}


def data_lines(ax) -> list:
    """Lines drawn from data (not event / baseline / reference lines)."""
    return [ln for ln in ax.get_lines() if ln.get_gid() is None]


def step_lines(ax) -> list:
    """The per-checkpoint lines of a rotary-sweep panel."""
    return [ln for ln in ax.get_lines() if (ln.get_gid() or "").startswith("step=")]


def line_of(ax, label: str):
    found = [ln for ln in ax.get_lines() if ln.get_label() == label]
    assert len(found) == 1, (label, [ln.get_label() for ln in ax.get_lines()])
    return found[0]


def event_steps(ax) -> list[float]:
    return sorted(float(ln.get_xdata()[0]) for ln in ax.get_lines() if ln.get_gid() == "change_point")


def assert_readable(fig) -> None:
    """Layout check after drawing: no two panels (with their titles, labels and tick labels)
    overlap, the title and the figure legends overlap no panel, and no two tick labels of one
    axis overlap."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    boxes = [(ax.get_label(), ax.get_tightbbox(r)) for ax in fig.axes if ax.get_visible()]
    boxes = [(name, b) for name, b in boxes if b is not None]
    page = fig.bbox.padded(1)
    for name, b in boxes:  # nothing cut off at the edge of the figure
        assert page.contains(b.x0, b.y0) and page.contains(b.x1, b.y1), name
    for i, (na, a) in enumerate(boxes):
        for nb, b in boxes[i + 1 :]:
            assert not a.shrunk(0.99, 0.99).overlaps(b.shrunk(0.99, 0.99)), (na, nb)
    extras = [fig._suptitle] if fig._suptitle is not None else []
    extras += list(fig.legends)
    for artist in extras:
        e = artist.get_window_extent(r)
        for name, b in boxes:
            assert not e.overlaps(b.shrunk(0.99, 0.99)), (artist, name)
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        for axis in (ax.xaxis, ax.yaxis):
            labels = [t.label1 for t in axis._update_ticks() if t.label1.get_visible() and t.label1.get_text()]
            ext = [lab.get_window_extent(r) for lab in labels]
            for i in range(len(ext)):
                for j in range(i + 1, len(ext)):
                    assert not ext[i].overlaps(ext[j]), (ax.get_label(), labels[i].get_text(), labels[j].get_text())


# --------------------------------------------------------------------------------------------
# synthetic data
# --------------------------------------------------------------------------------------------


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def induction_data(
    steps=LOG_STEPS, runs=RUNS, ks=(1, 2, 4, 8), heads=2, token_ks=False, seed=0, log_every=10, total=8000
):
    """Tables, logs and events of an induction study: the circuit forms at a run-specific step
    in one head pair; the smallest pool memorises (OOD error stays high)."""
    rng = np.random.default_rng(seed)
    onsets = dict(zip(runs, (600.0, 1500.0, 2500.0, 4000.0)))
    baseline = {1: 0.11, 2: 0.19, 4: 0.31, 8: 0.46}
    tables, logs, events = {}, {}, []
    s = np.asarray(steps, dtype=float)
    for i, run in enumerate(runs):
        t_c = onsets[run]
        grow = _sigmoid((np.log1p(s) - np.log1p(t_c)) * 4)
        rows = []
        pairs = [f"blocks.1.attn.head{h}.qk~blocks.0.attn.head{g}.ov" for h in range(heads) for g in range(heads)]
        embeds = [f"embed~blocks.0.attn.head{g}.ov" for g in range(heads)]
        for k in ks:
            for j, layer in enumerate(pairs):
                best = j == 1
                v = baseline.get(k, 0.3) + (0.9 - baseline.get(k, 0.3)) * grow * (1.0 if best else 0.1)
                v = np.clip(v + rng.normal(0, 0.02, s.size), 0, 1)
                rows += [(run, st, layer, f"qk_ov_overlap_max.k{k}", x) for st, x in zip(steps, v)]
                rows += [(run, st, layer, f"qk_ov_overlap_max.k{k}_random", baseline.get(k, 0.3)) for st in steps]
            for j, layer in enumerate(embeds):
                v = baseline.get(k, 0.3) + (0.7 - baseline.get(k, 0.3)) * grow * (1.0 if j == 0 else 0.2)
                v = np.clip(v + rng.normal(0, 0.02, s.size), 0, 1)
                rows += [(run, st, layer, f"embed_ov_overlap_max.k{k}", x) for st, x in zip(steps, v)]
                rows += [(run, st, layer, f"embed_ov_overlap_max.k{k}_random", baseline.get(k, 0.3)) for st in steps]
        suffixes = [f".k{k}" for k in ks] if token_ks else [""]
        for suffix in suffixes:
            for j, layer in enumerate(pairs):
                best = j == 1
                z = 0.2 + 9 * grow * (1.0 if best else 0.05) + rng.normal(0, 0.2, s.size)
                mm = np.clip(0.97 - 0.9 * grow * (1.0 if best else 0.05) + rng.normal(0, 0.01, s.size), 0, 1)
                rows += [(run, st, layer, f"qk_ov_token_diag_zscore{suffix}", x) for st, x in zip(steps, z)]
                rows += [(run, st, layer, f"qk_ov_token_mismatch{suffix}", x) for st, x in zip(steps, mm)]
        tables[run] = pd.DataFrame(rows, columns=["run", "step", "layer", "metric", "value"])
        ls = np.arange(0, total + 1, log_every, dtype=float)
        g = _sigmoid((ls - t_c) / (0.15 * t_c))
        memorise = i == 0
        logs[run] = pd.DataFrame(
            {
                "step": ls.astype(int),
                "loss": 3.4 * (1 - g) + 0.06 + 0.03 * np.abs(rng.normal(size=ls.size)),
                "id_error": np.clip(0.92 * (1 - g) + 0.02 + rng.normal(0, 0.01, ls.size), 0, 1),
                "ood_error": np.clip((0.95 - (0.25 if memorise else 0.9) * g) + rng.normal(0, 0.01, ls.size), 0, 1),
                "seconds": ls * 0.01,
            }
        )
        events.append((run, "loss", "model", "change_point", t_c, 1.0, 5.0))
        events.append((run, "loss", "model", "converged", 1.5 * t_c, 0.1, 1.0))
        events.append((run, f"qk_ov_overlap_max.k{ks[0]}", pairs[1], "change_point", t_c * 0.9, 0.5, 3.0))
    events = pd.DataFrame(events, columns=["run", "metric", "layer", "kind", "step", "value", "score"])
    return tables, logs, events


def rotary_data(
    runs=("pool 256", "unbounded"), steps=LOG_STEPS, ks=(1, 2, 4), offsets=(0, 1, 2, 4, 8, 16), heads=2, seed=1
):
    rng = np.random.default_rng(seed)
    tables = {}
    for i, run in enumerate(runs):
        rows = []
        for st in steps:
            grow = _sigmoid((math.log1p(st) - math.log1p(1500 * (i + 1))) * 4)
            for h in range(heads):
                for g in range(heads):
                    layer = f"blocks.1.attn.head{h}.qk~blocks.0.attn.head{g}.ov"
                    best = (h, g) == (0, 1)
                    for r in offsets:
                        peak = math.exp(-((r - 1) ** 2) / 1.5)
                        for k in ks:
                            base = 0.1 + 0.1 * math.log2(k)
                            v = base + (0.85 - base) * grow * peak * (1 if best else 0.1) + rng.normal(0, 0.01)
                            rows.append((run, st, layer, f"qk_ov_rotary_sweep.k{k}_r{r}", float(np.clip(v, 0, 1))))
                        rows.append(
                            (
                                run,
                                st,
                                layer,
                                f"qk_ov_rotary_sweep.zscore_r{r}",
                                0.2 + 8 * grow * peak * (1 if best else 0.05) + rng.normal(0, 0.1),
                            )
                        )
            for k in ks:
                rows.append(
                    (
                        run,
                        st,
                        "blocks.1.attn.head0.qk~blocks.0.attn.head1.ov",
                        f"qk_ov_overlap_max.k{k}_random",
                        0.1 + 0.1 * math.log2(k),
                    )
                )
        tables[run] = pd.DataFrame(rows, columns=["run", "step", "layer", "metric", "value"])
    return tables


def linearity_data(
    n_layers=6,
    steps=(0, 10, 20, 30, 40, 50, 60),
    prefix="bert.encoder.layer.",
    seed=2,
    per_sample=True,
    cosine=True,
    norm=True,
    no_residual=True,
):
    rng = np.random.default_rng(seed)
    rows = []
    qs = {"p5": -1.645, "p25": -0.674, "p50": 0.0, "p75": 0.674, "p95": 1.645}
    for i in range(n_layers - 1):
        pair = f"{prefix}{i}~{prefix}{i + 1}"
        for st in steps:
            score = 0.985 - 0.004 * i - 0.00008 * st + rng.normal(0, 0.0005)
            rows.append(("minilm", st, pair, "linearity_score", score))
            if no_residual:
                rows.append(("minilm", st, pair, "linearity_score_no_residual", score - 0.25 - 0.02 * i))
            if per_sample:
                for q, zq in qs.items():
                    rows.append(("minilm", st, pair, f"linearity_per_sample.{q}", score + 0.01 * zq * (1 + 0.2 * i)))
                rows.append(("minilm", st, pair, "linearity_per_sample.mean", score))
            if cosine:
                c = 0.9 - 0.03 * i - 0.0005 * st
                for q, zq in qs.items():
                    rows.append(("minilm", st, pair, f"consecutive_cosine.{q}", c + 0.04 * zq))
                rows.append(("minilm", st, pair, "consecutive_cosine.mean", c))
    if norm:
        for i in range(n_layers):
            for st in steps:
                rows.append(("minilm", st, f"{prefix}{i}", "activation_norm", 10 + 2 * i + 0.02 * st))
    return pd.DataFrame(rows, columns=["run", "step", "layer", "metric", "value"])


def gradient_pca_data(steps=LOG_STEPS, depth=2, n_pc=3, seed=3):
    rng = np.random.default_rng(seed)
    rows = []
    s = np.asarray(steps, dtype=float)
    sep = _sigmoid((np.log1p(s) - np.log1p(300)) * 2)
    for i in range(depth):
        layer = f"blocks.{i}.linear"
        for o, out in enumerate(("out0", "out1")):
            for pc in range(1, n_pc + 1):
                v = (0.6 / pc) * (1 + 0.3 * sep * (1 if pc == 1 else -1)) + rng.normal(0, 0.01, s.size) + 0.02 * o
                rows += [("mlp", st, f"{layer}|{out}", f"gradient_pca_evr.pc{pc}", x) for st, x in zip(steps, v)]
        for pc in range(1, n_pc + 1):
            v = np.clip(0.95 - 0.85 * sep + rng.normal(0, 0.02, s.size), 0, 1)
            rows += [
                ("mlp", st, f"{layer}|out0~{layer}|out1", f"gradient_pca_cosine.pc{pc}", x) for st, x in zip(steps, v)
            ]
    return pd.DataFrame(rows, columns=["run", "step", "layer", "metric", "value"])


PYTHIA_SIZES = {
    "pythia-70m": 70e6,
    "pythia-160m": 160e6,
    "pythia-410m": 410e6,
    "pythia-1b": 1.0e9,
    "pythia-1.4b": 1.4e9,
    "pythia-2.8b": 2.8e9,
}


def model_size_data(
    sizes=PYTHIA_SIZES,
    pairs=(("weight_norm", "update_norm"), ("effective_rank", "cka_to_final"), ("gradient_norm", "update_norm")),
    seed=4,
):
    rng = np.random.default_rng(seed)
    ex, co = [], []
    for j, (run, n) in enumerate(sizes.items()):
        for matrix, decay in (("layer_mean", 0.45 + 0.03 * j), ("layer_metric", 0.6 + 0.04 * j)):
            ratios = (1 - decay) * decay ** np.arange(12)
            ratios = ratios / ratios.sum()
            for c, (r, cum) in enumerate(zip(ratios, np.cumsum(ratios))):
                ex.append((run, matrix, c + 1, r, cum))
        n_layers = 6 + 2 * j
        for p, (x, y) in enumerate(pairs):
            rs = np.clip(0.9 - 0.25 * p - 0.05 * j + rng.normal(0, 0.08, n_layers), -1, 1)
            for li, r in enumerate(rs):
                co.append((run, x, y, f"gpt_neox.layers.{li}.mlp", r, r * r, 1.0, 0.0, 30))
            co.append((run, x, y, "mean", rs.mean(), rs.mean() ** 2, 1.0, 0.0, 30))
    explained = pd.DataFrame(ex, columns=["run", "matrix", "component", "explained_variance_ratio", "cumulative"])
    correlation = pd.DataFrame(
        co, columns=["run", "x_metric", "y_metric", "layer", "pearson_r", "r_squared", "slope", "intercept", "n_steps"]
    )
    return explained, correlation


def comparison_data(runs=("seed 0", "seed 1", "seed 2"), n_layers=6, steps=LOG_STEPS, seed=5):
    rng = np.random.default_rng(seed)
    rows = []
    for i, run in enumerate(runs):
        for li in range(n_layers):
            for st in steps:
                rows.append(
                    (
                        run,
                        st,
                        f"gpt_neox.layers.{li}.attention.dense",
                        "weight_norm",
                        20 + li + 3 * math.log1p(st) * (1 + 0.1 * i) + rng.normal(0, 0.1),
                    )
                )
    return pd.DataFrame(rows, columns=["run", "step", "layer", "metric", "value"])


def render_all(out_dir, light: bool = False, names: Sequence[str] | None = None) -> list[Path]:
    """The study figures (all, or those in ``names``) from realistic synthetic data, written to
    ``out_dir`` (``light``: smaller inputs, for the test suite)."""
    out = Path(out_dir)
    ks = (1,) if light else (1, 2, 4, 8)
    total = 1000 if light else 8000
    cp = pd.DataFrame(
        [("seed 1", "weight_norm", "gpt_neox.layers.0.attention.dense", "change_point", 300, 0, 1)],
        columns=["run", "metric", "layer", "kind", "step", "value", "score"],
    )
    figures = {
        "induction_study": lambda p: induction.plot_induction_study(
            *induction_data(ks=ks, total=total)[:2], p, events=induction_data(ks=ks, total=total)[2]
        ),
        "induction_study_token_ks": lambda p: induction.plot_induction_study(
            *induction_data(ks=ks[:2], token_ks=True, total=total)[:2],
            p,
            events=induction_data(ks=ks[:2], token_ks=True, total=total)[2],
        ),
        "rotary_sweep": lambda p: rotary_sweep.plot_rotary_sweep(rotary_data(), p),
        "linearity_study": lambda p: linearity.plot_linearity_study(linearity_data(n_layers=3 if light else 7), p),
        "gradient_pca_study": lambda p: gradient_pca.plot_gradient_pca_study(gradient_pca_data(), p, dims=32),
        "model_size_study": lambda p: model_size.plot_model_size_study(*model_size_data(), PYTHIA_SIZES, p),
        "run_comparison": lambda p: compare.plot_run_comparison(
            comparison_data(n_layers=3 if light else 16), "weight_norm", p, events=cp
        ),
    }
    return [draw(out / f"{name}.png") for name, draw in figures.items() if names is None or name in names]


# --------------------------------------------------------------------------------------------
# 1. induction study
# --------------------------------------------------------------------------------------------


def small_induction(**kw):
    kw.setdefault("steps", [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 1000])
    kw.setdefault("ks", (1, 2))
    return induction_data(**kw)


def test_induction_values_baseline_colours_and_scale():
    tables, logs, events = small_induction()
    fig = induction._figure_induction_study(tables, logs, events=events)
    axes = axes_by_label(fig)
    # top row (3) + legend + per k: 2 overlap panels; 2 full-rank token panels
    assert set(axes) == {
        "loss",
        "id_error",
        "ood_error",
        "legend",
        "qk_ov.k1",
        "embed_ov.k1",
        "qk_ov.k2",
        "embed_ov.k2",
        "token_zscore",
        "token_mismatch",
    }
    assert axes["token_zscore"].get_title().endswith("(full rank)")
    run = "pool 4096"
    t = tables[run]
    # the max over the 4 head pairs, per step
    want = t[t["metric"] == "qk_ov_overlap_max.k2"].groupby("step")["value"].max()
    ln = line_of(axes["qk_ov.k2"], run)
    np.testing.assert_array_equal(ln.get_xdata(), want.index.to_numpy(dtype=float))
    np.testing.assert_allclose(ln.get_ydata(), want.to_numpy())
    assert "max over 4 head pairs" in axes["qk_ov.k2"].get_ylabel()
    # embed panel: only the embed~ labels
    t_e = t[(t["metric"] == "embed_ov_overlap_max.k1")]
    assert set(t_e["layer"]) == {"embed~blocks.0.attn.head0.ov", "embed~blocks.0.attn.head1.ov"}
    np.testing.assert_allclose(
        line_of(axes["embed_ov.k1"], run).get_ydata(), t_e.groupby("step")["value"].max().to_numpy()
    )
    # mismatch: lower is better -> best pair = min
    t_m = t[t["metric"] == "qk_ov_token_mismatch"]
    np.testing.assert_allclose(
        line_of(axes["token_mismatch"], run).get_ydata(), t_m.groupby("step")["value"].min().to_numpy()
    )
    # baseline: one grey dashed line (same d for every run), at the _random values
    base = [ln for ln in axes["qk_ov.k1"].get_lines() if ln.get_gid() == "random"]
    assert len(base) == 1 and base[0].get_label() == "random subspaces" and base[0].get_linestyle() == "--"
    np.testing.assert_allclose(base[0].get_ydata(), 0.11)
    # training log values
    np.testing.assert_allclose(line_of(axes["ood_error"], run).get_ydata(), logs[run]["ood_error"].to_numpy())
    assert axes["loss"].get_yscale() == "log" and "log scale" in axes["loss"].get_ylabel()
    # one colour per run in every panel; three distinct colours
    colours = {}
    for name, ax in axes.items():
        for ln in data_lines(ax):
            colours.setdefault(ln.get_label(), set()).add(to_rgba(ln.get_color()))
    assert set(colours) == set(tables)
    assert all(len(c) == 1 for c in colours.values()) and len({next(iter(c)) for c in colours.values()}) == 3
    # log-spaced checkpoints: symlog on every step axis, also for the training curves
    for name in ("loss", "ood_error", "qk_ov.k1", "token_mismatch"):
        assert axes[name].get_xscale() == "symlog", name
    assert axes["loss"].get_xlim()[1] >= 8000  # the dense log reaches beyond the last checkpoint
    legend_texts = [t.get_text() for t in axes["legend"].get_legend().get_texts()]
    assert legend_texts[:3] == list(RUNS) and any("random" in x for x in legend_texts)
    assert any("change point of the loss" in x for x in legend_texts)


def test_induction_events_only_where_relevant():
    tables, logs, events = small_induction()
    fig = induction._figure_induction_study(tables, logs, events=events)
    axes = axes_by_label(fig)
    loss_cps = sorted(events[(events["kind"] == "change_point") & (events["metric"] == "loss")]["step"])
    for name in ("loss", "id_error", "ood_error"):
        assert event_steps(axes[name]) == loss_cps  # "converged" rows are not drawn
    # the k1 overlap change points in the k1 panel only, in the run's colour
    metric_cps = sorted(events[events["metric"] == "qk_ov_overlap_max.k1"]["step"])
    assert event_steps(axes["qk_ov.k1"]) == metric_cps
    for name in ("qk_ov.k2", "embed_ov.k1", "token_zscore"):
        assert event_steps(axes[name]) == []
    ev = [ln for ln in axes["qk_ov.k1"].get_lines() if ln.get_gid() == "change_point"]
    run_of = {float(r.step): r.run for r in events[events["metric"] == "qk_ov_overlap_max.k1"].itertuples()}
    for ln in ev:
        run = run_of[float(ln.get_xdata()[0])]
        assert to_rgba(ln.get_color()) == to_rgba(line_of(axes["qk_ov.k1"], run).get_color())
        assert ln.get_linestyle() == "--"
    # an event of another layer of the same metric is not drawn
    other = events.assign(layer="blocks.9.attn.head0.qk~blocks.8.attn.head0.ov")
    fig = induction._figure_induction_study(tables, logs, events=other)
    assert event_steps(axes_by_label(fig)["qk_ov.k1"]) == []


def test_induction_per_k_token_metrics_and_layout():
    tables, logs, events = small_induction(ks=(1, 2, 4), token_ks=True)
    fig = induction._figure_induction_study(tables, logs, ks=[1, 4], events=events)
    axes = axes_by_label(fig)
    assert {"qk_ov.k1", "qk_ov.k4", "token_zscore.k1", "token_zscore.k4", "token_mismatch.k4"} <= set(axes)
    assert "qk_ov.k2" not in axes
    assert sum(1 for ax in fig.axes if ax.get_label() != "legend") == 3 + 2 * 4
    assert "rank k = 4" in axes["token_zscore.k4"].get_title()
    t = tables["unbounded"]
    want = t[t["metric"] == "qk_ov_token_diag_zscore.k4"].groupby("step")["value"].max()
    np.testing.assert_allclose(line_of(axes["token_zscore.k4"], "unbounded").get_ydata(), want.to_numpy())
    assert_readable(fig)


def test_induction_missing_metrics_and_logs_tolerated(tmp_path, no_data_calls):
    tables, logs, _ = small_induction()
    # no token metrics, no embed metrics, one run without a log
    stripped = {r: t[t["metric"].str.startswith("qk_ov_overlap")] for r, t in tables.items()}
    logs = {r: lg for r, lg in logs.items() if r != "unbounded"}
    fig = induction._figure_induction_study(stripped, logs)
    axes = axes_by_label(fig)
    assert "token_zscore" not in axes and not data_lines(axes["embed_ov.k1"])
    assert "not computed" in axes["embed_ov.k1"].texts[0].get_text()
    assert len(data_lines(axes["loss"])) == 2 and len(data_lines(axes["qk_ov.k1"])) == 3
    # only logs, no metrics table
    fig = induction._figure_induction_study({}, logs)
    assert set(axes_by_label(fig)) == {"loss", "id_error", "ood_error", "legend"}
    assert axes_by_label(fig)["loss"].get_xscale() == "linear"  # steps every 10: not log-spaced
    # empty input: "no data" PNG
    p = induction.plot_induction_study({}, {}, tmp_path / "none.png")
    assert_png(p) is not None and no_data_calls == [p]
    with pytest.raises(_common.NoData):
        induction._figure_induction_study({"a": pd.DataFrame()}, {"a": pd.DataFrame()})


def test_induction_nan_values_are_gaps_and_odd_inputs_tolerated():
    tables, logs, events = small_induction()
    tables = {r: d.drop(columns="run").assign(step=d["step"].astype(float)) for r, d in tables.items()}
    t = tables["pool 4096"]
    t.loc[(t["metric"] == "qk_ov_overlap_max.k1") & (t["step"] == 4), "value"] = np.nan  # all pairs: a gap
    t.loc[(t["metric"] == "qk_ov_overlap_max.k1") & (t["step"] == 8) & t["layer"].str.contains("head1.ov"), "value"] = (
        np.nan
    )  # some pairs: the max of the others
    tables["pool 256"].loc[tables["pool 256"]["metric"] == "qk_ov_overlap_max.k2", "value"] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from all-NaN reductions, no layout warning
        fig = induction._figure_induction_study(
            tables, {**logs, "extra": None}, events=events[["run", "metric", "layer", "kind", "step"]]
        )
    axes = axes_by_label(fig)
    y = dict(
        zip(line_of(axes["qk_ov.k1"], "pool 4096").get_xdata(), line_of(axes["qk_ov.k1"], "pool 4096").get_ydata())
    )
    assert np.isnan(y[4.0])
    keep = t[(t["metric"] == "qk_ov_overlap_max.k1") & (t["step"] == 8)]["value"]
    assert y[8.0] == keep.max()
    assert np.isnan(line_of(axes["qk_ov.k2"], "pool 256").get_ydata()).all()
    assert event_steps(axes["loss"]) == sorted(
        events[(events["kind"] == "change_point") & (events["metric"] == "loss")]["step"]
    )


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


# --------------------------------------------------------------------------------------------
# plot_study_figure: the workflow's figure spec
# --------------------------------------------------------------------------------------------


@pytest.fixture
def captured(monkeypatch) -> list:
    """Records (function name, args, kwargs) of the figure functions plot_study_figure calls."""
    calls = []
    for module, name in (
        (induction, "plot_induction_study"),
        (rotary_sweep, "plot_rotary_sweep"),
        (linearity, "plot_linearity_study"),
        (gradient_pca, "plot_gradient_pca_study"),
        (model_size, "plot_model_size_study"),
        (compare, "plot_run_comparison"),
    ):
        monkeypatch.setattr(module, name, lambda *a, _n=name, **k: calls.append((_n, a, k)) or Path(a[-1]))
    return calls


def test_study_figure_dispatch(tmp_path, captured, no_data_calls):
    table = comparison_data(runs=("x",), n_layers=3)
    tables = {"a": table.assign(run="a"), "b": table.assign(run="b")}
    dyn = {
        "a": pd.DataFrame(
            [("a", "weight_norm", "gpt_neox.layers.1.attention.dense", "change_point", 8, 0, 1)],
            columns=["run", "metric", "layer", "kind", "step", "value", "score"],
        )
    }
    spec = {
        "kind": "compare",
        "runs": ["b", "a"],
        "labels": {"a": "seed A", "b": "seed B"},
        "metric": "weight_norm",
        "layers": ["gpt_neox.layers.*.attention.dense"],
        "title": "T",
    }
    studies.plot_study_figure(spec, tmp_path / "c.png", {"table": tables, "dynamics": dyn})
    name, args, kw = captured[-1]
    assert name == "plot_run_comparison" and args[1] == "weight_norm"
    assert set(args[0]["run"]) == {"seed A", "seed B"} and kw["runs"] == ["seed B", "seed A"]
    assert kw["layers"] == [f"gpt_neox.layers.{i}.attention.dense" for i in range(3)] and kw["title"] == "T"
    assert list(kw["events"]["run"]) == ["seed A"]
    # a runs mapping gives the labels; logs and ks passed on
    logs = {"a": pd.DataFrame({"step": [0, 10], "loss": [1.0, 0.5]})}
    studies.plot_study_figure(
        {"kind": "induction", "runs": {"a": "pool A", "b": "pool B"}, "ks": [1]},
        tmp_path / "i.png",
        {"table": tables, "log": logs, "dynamics": dyn},
    )
    name, args, kw = captured[-1]
    assert name == "plot_induction_study" and list(args[0]) == ["pool A", "pool B"] and list(args[1]) == ["pool A"]
    assert kw["ks"] == [1] and list(kw["events"]["run"]) == ["pool A"]
    # one-run figures: the first run with a table
    studies.plot_study_figure(
        {"kind": "linearity", "runs": ["none", "b"]}, tmp_path / "l.png", {"table": {"b": tables["b"]}}
    )
    name, args, kw = captured[-1]
    assert name == "plot_linearity_study" and args[0] is tables["b"] and kw["title"].endswith(": b")
    # model size: sizes given or read from the run names
    ex, co = model_size_data(sizes={"pythia-70m": 1, "pythia-1.4b-deduped": 1, "custom": 1})
    pca = {r: d for r, d in ex.groupby("run")}
    corr = {r: d for r, d in co.groupby("run")}
    studies.plot_study_figure(
        {"kind": "model_size", "runs": ["pythia-70m", "pythia-1.4b-deduped", "custom"], "sizes": {"custom": 5e8}},
        tmp_path / "m.png",
        {"pca": pca, "correlation": corr},
    )
    name, args, kw = captured[-1]
    assert name == "plot_model_size_study"
    assert args[2] == {"pythia-70m": 70e6, "pythia-1.4b-deduped": 1.4e9, "custom": 5e8}
    assert set(args[0]["run"]) == set(args[1]["run"]) == {"pythia-70m", "pythia-1.4b-deduped", "custom"}
    # unknown kind, unmatched layer patterns: "no data"
    studies.plot_study_figure({"kind": "nope", "runs": ["a"]}, tmp_path / "n.png", {"table": tables})
    studies.plot_study_figure({**spec, "layers": ["blocks.*"]}, tmp_path / "u.png", {"table": tables})
    assert [p.name for p in no_data_calls] == ["n.png", "u.png"]


def test_study_figure_end_to_end(tmp_path, no_data_calls):
    p = studies.plot_study_figure(
        {"kind": "rotary_sweep", "runs": ["pool 256"]},
        tmp_path / "r.png",
        {"table": rotary_data(runs=("pool 256",), steps=[0, 10, 100])},
    )
    assert_png(p)
    assert not no_data_calls


# --------------------------------------------------------------------------------------------
# PNGs
# --------------------------------------------------------------------------------------------


def test_render_all_writes_pngs_atomically(tmp_path, no_data_calls):
    # three figures only (the test suite must stay fast); every wrapper shares _save
    paths = render_all(tmp_path / "figs", light=True, names=("induction_study", "linearity_study", "run_comparison"))
    assert [p.name for p in paths] == ["induction_study.png", "linearity_study.png", "run_comparison.png"]
    for p in paths:
        assert_png(p)
    assert not no_data_calls
    assert_no_leftovers(tmp_path)


if __name__ == "__main__":  # write the figures for a look
    for path in render_all(sys.argv[1] if len(sys.argv) > 1 else "/tmp/study_plots"):
        print(path)
