"""Synthetic tables in the shape of each study, and checks that a figure draws the table values and
stays readable. `python -m tests.plots.studies.helpers OUT` renders every figure for a look."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd

from ckptlens.plots.studies import compare, gradient_pca, induction, linearity, model_size, rotary_sweep

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


if __name__ == "__main__":  # write the figures for a look
    for path in render_all(sys.argv[1] if len(sys.argv) > 1 else "/tmp/study_plots"):
        print(path)
