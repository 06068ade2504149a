"""The analysis tables of a run as small, self-contained HTML pages, for the Snakemake report.

The report's viewer shows HTML items inline (in an iframe) but offers CSV and Parquet files only as
downloads, so the findings — the PCA of the metrics, the metric-pair correlations, when each layer's
metric settles and where it jumps — would otherwise stay hidden behind the figures. Each page:

* is plain HTML with its CSS inline: no script, no external asset, nothing fetched (the report embeds
  it as a ``data:`` URI, where relative links could not resolve anyway);
* is bounded: at most :data:`MAX_ROWS` table rows in all (the most telling first: the largest
  loadings, the strongest correlations, the largest jumps), and it says how many rows were left
  out and which CSV file has them all;
* rounds numbers to :data:`DIGITS` significant digits (steps and counts stay integers), names each
  metric with its label, orders layers by depth, and shows what is undefined as "–".

:func:`pca_page`, :func:`correlation_page`, :func:`dynamics_page` and :func:`metrics_page` (a
preview of the tidy table) return the page's text; :func:`study_page` / :func:`study_fragment` is the report's landing
page (every run, the headline figures, the strongest correlations, the convergence table);
:func:`write_page` writes one atomically. Imports pandas only when called.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

#: table rows a page shows at most, over all its tables
MAX_ROWS = 2000
#: loadings shown per (matrix, component): the largest in absolute value
MAX_LOADINGS = 20
#: significant digits of the numbers shown
DIGITS = 4

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;font-size:14px;color:#1f2328;margin:16px 20px}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:22px 0 6px} h3{font-size:14px;margin:14px 0 4px}
p{margin:4px 0 8px;max-width:60em;line-height:1.4} .note{color:#57606a}
table{border-collapse:collapse;margin:4px 0 10px} th,td{padding:3px 9px;border-bottom:1px solid #d0d7de;text-align:left}
th{background:#f6f8fa;font-weight:600;position:sticky;top:0} td.num{text-align:right;font-variant-numeric:tabular-nums}
td.label{color:#57606a;font-size:12px} .bar{display:inline-block;height:9px;background:#54aeff;vertical-align:middle}
ul.notes{color:#57606a;font-size:12px;max-width:70em} code{font-size:12px;background:#f6f8fa;padding:0 3px}
"""


# ------------------------------------------------------------------------------------ formatting
def fmt(value, digits: int = DIGITS, zero: float = 0.0) -> str:
    """A number for a table cell: integers as they are, floats to ``digits`` significant digits,
    NaN/None as "–"; ``|value| < zero`` (round-off, e.g. the variance of a PCA's last component)
    as 0."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in "iu"):
        return str(int(value))
    try:
        x = float(value)
    except (TypeError, ValueError):
        return html.escape(str(value))
    if math.isnan(x):
        return "–"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if abs(x) < zero:
        return "0"
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.{digits}g}"


def _metric_cell(name: str) -> str:
    """A metric's name, with its label where it has one."""
    from .labels import metric_label

    label = metric_label(name)
    extra = f' <span class="note">({html.escape(label)})</span>' if label != name else ""
    return f"<code>{html.escape(name)}</code>{extra}"


#: the PCA's matrices (``analysis.pca``), in words
MATRIX_NAMES = {"layer_mean": "metrics averaged over layers", "layer_metric": "one column per (layer, metric)"}


def _color(r) -> str:
    """A background for a correlation r in [-1, 1]: blue for positive, red for negative."""
    try:
        r = float(r)
    except (TypeError, ValueError):
        return ""
    if math.isnan(r):
        return ""
    a = min(1.0, abs(r)) * 0.55
    rgb = "9,105,218" if r > 0 else "207,34,46"
    return f' style="background:rgba({rgb},{a:.2f})"'


class _Budget:
    """The rows a page may still show."""

    def __init__(self, total: int):
        self.left = total

    def take(self, n: int) -> int:
        k = max(0, min(n, self.left))
        self.left -= k
        return k


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[bool]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for cell, num in zip(row, numeric):
            if isinstance(cell, tuple):  # (html, extra attributes)
                cells.append(f"<td{' class=num' if num else ''}{cell[1]}>{cell[0]}</td>")
            else:
                cells.append(f"<td{' class=num' if num else ''}>{cell}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _left_out(shown: int, total: int, csv: str) -> str:
    if shown >= total:
        return ""
    return f'<p class="note">{total - shown} of {total} rows left out here (the page shows at most {MAX_ROWS}); all are in <code>{html.escape(csv)}</code>.</p>'


def _notes(notes: Sequence[str], limit: int = 30) -> str:
    notes = [n for n in notes if n.strip()]
    if not notes:
        return ""
    items = "".join(f"<li>{html.escape(n)}</li>" for n in notes[:limit])
    more = f"<li>… {len(notes) - limit} more in <code>analysis/notes.txt</code></li>" if len(notes) > limit else ""
    return f"<h2>Notes of the analysis</h2><ul class=notes>{items}{more}</ul>"


def page(title: str, intro: str, body: str) -> str:
    """A complete, self-contained HTML page."""
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{intro}</p>{body}</body></html>\n"
    )


def _layer_sorted(df, by: Sequence[str]):
    """Rows sorted by ``by`` with ``layer`` in depth order (summary rows first: the finding)."""
    from ..store.layers import layer_key

    df = df.copy()
    df["_layer"] = df["layer"].map(lambda s: (s not in ("mean", "layer_mean"), layer_key(s)))
    return df.sort_values([c if c != "layer" else "_layer" for c in by], kind="stable").drop(columns="_layer")


# ------------------------------------------------------------------------------------ the pages
def pca_page(pca, loadings, run: str, notes: Sequence[str] = ()) -> str:
    """The explained variance of each PCA matrix, and the largest loadings of its first components."""
    budget = _Budget(MAX_ROWS)
    body = []
    if pca.empty:
        body.append('<p class="note">No PCA for this run (see the notes below).</p>')
    for matrix, group in pca.groupby("matrix", sort=False):
        group = group.sort_values("component")
        what = MATRIX_NAMES.get(str(matrix), str(matrix))
        body.append(f"<h2>Explained variance: {html.escape(what)} (<code>{html.escape(str(matrix))}</code>)</h2>")
        k = budget.take(len(group))
        rows = [
            (
                fmt(r.component),
                fmt(r.explained_variance_ratio, zero=1e-12),
                f'<span class="bar" style="width:{max(0.0, min(1.0, float(r.explained_variance_ratio))) * 200:.0f}px"></span>',
                fmt(r.cumulative, zero=1e-12),
            )
            for r in group.head(k).itertuples()
        ]
        body.append(
            _table(["component", "explained variance ratio", "", "cumulative"], rows, [True, True, False, True])
        )
        body.append(_left_out(k, len(group), "analysis/pca.csv"))
        lm = loadings[loadings["matrix"] == matrix] if not loadings.empty else loadings
        for comp, lg in lm.groupby("component", sort=True):
            lg = lg.reindex(lg["loading"].abs().sort_values(ascending=False).index)
            k = budget.take(min(len(lg), MAX_LOADINGS))
            body.append(f"<h3>Component {fmt(comp)}: the {k} largest loadings (of {len(lg)} columns)</h3>" if k else "")
            rows = [
                (f"<code>{html.escape(str(r.column))}</code>", fmt(r.loading, zero=1e-12))
                for r in lg.head(k).itertuples()
            ]
            if rows:
                body.append(_table(["column (metric, or layer | metric)", "loading"], rows, [False, True]))
    body.append(_notes(notes))
    intro = (
        f"Run <code>{html.escape(run)}</code>. A PCA over training steps of the z-scored step × metric matrix: "
        "<b>mean over layers</b> has one column per metric, <b>per layer</b> one per (layer, metric). If the "
        "first component explains most of the variance, the metrics move together over training (one direction "
        "of change); loadings with the same sign move together, opposite signs move against each other. "
        "Sign convention: each component's largest loading is positive."
    )
    return page(f"PCA of the metrics — {run}", intro, "".join(body))


def correlation_page(corr, run: str, notes: Sequence[str] = ()) -> str:
    """Every metric pair's Pearson r over training, per layer and summarised, strongest pairs first."""
    budget = _Budget(MAX_ROWS)
    body = []
    if corr.empty:
        body.append(
            '<p class="note">No correlation pairs for this run (set <code>analysis.correlation_pairs</code> in the '
            "config, or see the notes below).</p>"
        )
    for (x, y), group in corr.groupby(["x_metric", "y_metric"], sort=False):
        group = _layer_sorted(group, ["layer"])
        body.append(f"<h2>{_metric_cell(str(x))} vs {_metric_cell(str(y))}</h2>")
        k = budget.take(len(group))
        rows = []
        for r in group.head(k).itertuples():
            layer = {"mean": "<b>mean over layers</b>", "layer_mean": "<b>layer-mean trajectories</b>"}.get(
                str(r.layer), f"<code>{html.escape(str(r.layer))}</code>"
            )
            rows.append(
                (layer, (fmt(r.pearson_r), _color(r.pearson_r)), fmt(r.r_squared), fmt(r.slope), fmt(r.n_steps))
            )
        body.append(_table(["layer", "Pearson r", "R²", "slope", "steps"], rows, [False, True, True, True, True]))
        body.append(_left_out(k, len(group), "analysis/correlation.csv"))
    body.append(_notes(notes))
    intro = (
        f"Run <code>{html.escape(run)}</code>. For each configured pair of metrics, the Pearson correlation r over "
        "training steps of the two metrics' trajectories in each layer (blue: they rise and fall together, red: "
        "one rises as the other falls, white: unrelated), and r of the means over layers. "
        "<b>layer-mean trajectories</b> is the only row when the two metrics live on different layers. "
        "r is undefined (–) with fewer than 3 steps or a constant metric; with few steps a large |r| is weak evidence."
    )
    return page(f"Metric correlations — {run}", intro, "".join(body))


def _event_table(events, budget, columns: list[str]) -> list[str]:
    """One row per (metric, layer) event, in the given order, within the page's row budget: metric,
    layer, then step, value and score under ``columns``; plus what was left out."""
    k = budget.take(len(events))
    rows = [
        (
            _metric_cell(str(r.metric)),
            f"<code>{html.escape(str(r.layer))}</code>",
            fmt(r.step),
            fmt(r.value),
            fmt(r.score, 3),
        )
        for r in events.head(k).itertuples()
    ]
    table = _table(["metric", "layer", *columns], rows, [False, False, True, True, True])
    return [table, _left_out(k, len(events), "analysis/dynamics.csv")]


def dynamics_page(dyn, run: str, notes: Sequence[str] = ()) -> str:
    """When each (metric, layer) settles, and its abrupt changes, largest first."""
    budget = _Budget(MAX_ROWS)
    body = []
    conv = dyn[dyn["kind"] == "converged"] if not dyn.empty else dyn
    cps = dyn[dyn["kind"] == "change_point"] if not dyn.empty else dyn
    if not dyn.empty:
        body.append("<h2>Per metric: how many layers jump, and when they settle</h2>")
        rows = []
        for metric, g in dyn.groupby("metric", sort=True):
            c, j = g[g["kind"] == "converged"], g[g["kind"] == "change_point"]
            steps = c["step"].astype(float)
            rows.append(
                (
                    _metric_cell(str(metric)),
                    fmt(j["layer"].nunique()),
                    ", ".join(fmt(x) for x in sorted(j["step"].unique())[:8]) or "–",
                    fmt(len(c)),
                    fmt(steps.median()) if len(c) else "–",
                    f"{fmt(steps.min())}–{fmt(steps.max())}" if len(c) else "–",
                )
            )
        k = budget.take(len(rows))
        body.append(
            _table(
                [
                    "metric",
                    "layers with a jump",
                    "jump steps",
                    "layers settled",
                    "median settle step",
                    "range",
                ],
                rows[:k],
                [False, True, False, True, True, False],
            )
        )
        body.append(_left_out(k, len(rows), "analysis/dynamics.csv"))
    body.append("<h2>Change points: abrupt changes of level, largest first</h2>")
    if cps.empty:
        body.append('<p class="note">No change point: no trajectory jumps clearly above its noise.</p>')
    else:
        cps = cps.reindex(cps["score"].abs().sort_values(ascending=False).index)
        body += _event_table(cps, budget, ["step (first after the jump)", "jump", "size (× noise σ)"])
    body.append("<h2>Convergence: the step from which each trajectory stays settled</h2>")
    if conv.empty:
        body.append('<p class="note">No trajectory settles before the last checkpoints.</p>')
    else:
        conv = _layer_sorted(conv, ["metric", "layer"])
        body += _event_table(conv, budget, ["settled from step", "value there", "share of the run settled"])
    body.append(_notes(notes))
    intro = (
        f"Run <code>{html.escape(run)}</code>. Per metric and layer: where its trajectory changes level abruptly "
        "(a phase transition: a loss plateau that drops, a CKA that snaps to its final value), with the size of the "
        "jump in units of the trajectory's own noise (4 or more is clearly visible; a jump must also be at least 2 % of "
        "the metric's own scale, and a trajectory of fewer than 10 checkpoints has none), and the step from which it "
        "stays within 5 % of its range around its final value (or past the configured threshold). Layers whose "
        "change points line up at one step changed together. Layer <code>model</code>: the training log."
    )
    return page(f"Training dynamics — {run}", intro, "".join(body))


#: rows of the tidy table shown in its preview
PREVIEW_ROWS = 50
#: the landing page's strongest correlations (over every run) and headline figures
TOP_CORRELATIONS, MAX_HEADLINE_FIGURES = 12, 6


def metrics_page(table, run: str, parquet: str = "metrics.parquet") -> str:
    """The tidy table of a run, previewed: what it holds (rows, steps, layers, metrics), a summary
    per metric (layers, checkpoints, finite values, min, median, max) and its first
    :data:`PREVIEW_ROWS` rows; the Parquet file has every row."""
    import numpy as np

    n = len(table)
    body = []
    if n:
        steps = np.sort(table["step"].unique())
        body.append(
            f"<p>{n} rows: {table['metric'].nunique()} metric(s) × {table['layer'].nunique()} layer(s) × "
            f"{len(steps)} checkpoint(s) (steps {fmt(steps[0])} … {fmt(steps[-1])}).</p>"
        )
        body.append("<h2>Per metric</h2>")
        rows = []
        for metric, g in table.groupby("metric", sort=True):
            v = g["value"].to_numpy(dtype=float)
            fin = v[np.isfinite(v)]
            rows.append(
                (
                    _metric_cell(str(metric)),
                    fmt(g["layer"].nunique()),
                    fmt(g["step"].nunique()),
                    f"{fin.size} / {v.size}",
                    fmt(fin.min()) if fin.size else "–",
                    fmt(float(np.median(fin))) if fin.size else "–",
                    fmt(fin.max()) if fin.size else "–",
                )
            )
        k = min(len(rows), MAX_ROWS - PREVIEW_ROWS)
        body.append(
            _table(
                ["metric", "layers", "checkpoints", "finite values", "min", "median", "max"],
                rows[:k],
                [False, True, True, True, True, True, True],
            )
        )
        body.append(_left_out(k, len(rows), parquet))
        body.append(f"<h2>The first {min(PREVIEW_ROWS, n)} rows</h2>")
        head = table.head(PREVIEW_ROWS)
        body.append(
            _table(
                ["run", "step", "layer", "metric", "value"],
                [
                    (
                        html.escape(str(r.run)),
                        fmt(r.step),
                        f"<code>{html.escape(str(r.layer))}</code>",
                        html.escape(str(r.metric)),
                        fmt(r.value),
                    )
                    for r in head.itertuples()
                ],
                [False, True, False, False, True],
            )
        )
    else:
        body.append('<p class="note">The table is empty.</p>')
    intro = (
        f"Run <code>{html.escape(run)}</code>. The tidy table of every metric value (columns run, step, layer, "
        f"metric, value); every row is in <code>{html.escape(parquet)}</code> "
        "(<code>pandas.read_parquet</code>), beside the run's results."
    )
    return page(f"Metrics table — {run}", intro, "".join(body))


def study_page(study: str, runs: Sequence[dict], figures: Sequence[tuple[str, str]] = ()) -> str:
    """The study at a glance as a complete page (:func:`_study_parts`)."""
    title, intro, body = _study_parts(study, runs, figures)
    return page(title, intro, body)


#: the landing fragment's styles, scoped to its own ``div`` (it is embedded in the report's page)
_SCOPED_CSS = """
.ckptlens-study{font-size:14px;color:#1f2328} .ckptlens-study h1{font-size:20px;margin:0 0 4px}
.ckptlens-study h2{font-size:16px;margin:18px 0 6px;font-weight:600} .ckptlens-study .note{color:#57606a}
.ckptlens-study table{border-collapse:collapse;margin:4px 0 10px}
.ckptlens-study th,.ckptlens-study td{padding:3px 9px;border-bottom:1px solid #d0d7de;text-align:left}
.ckptlens-study th{background:#f6f8fa} .ckptlens-study td.num{text-align:right}
.ckptlens-study code{font-size:12px;background:#f6f8fa;padding:0 3px}
"""


def study_fragment(study: str, runs: Sequence[dict], figures: Sequence[tuple[str, str]] = ()) -> str:
    """The study at a glance as one ``<div class="ckptlens-study">`` with its styles scoped to it:
    what the report's opening view embeds (workflow/report/workflow.rst), without restyling the
    report around it."""
    title, intro, body = _study_parts(study, runs, figures)
    return (
        f'<div class="ckptlens-study"><style>{_SCOPED_CSS}</style><h1>{html.escape(title)}</h1>'
        f"<p>{intro}</p>{body}</div>\n"
    )


def _study_parts(study: str, runs: Sequence[dict], figures: Sequence[tuple[str, str]] = ()):
    """The report's landing page: the study at a glance; ``(title, intro, body)``.

    ``runs``: one dict per run with ``run``, ``table`` (its tidy metrics table), ``correlation``
    and ``dynamics`` (its analysis tables; may be empty). ``figures``: (title, PNG path) of the
    headline figures, shown as thumbnails (inlined, at most :data:`MAX_HEADLINE_FIGURES`).
    Sections: runs (checkpoints, steps, layers, metrics), the strongest correlations over every
    run (positive r blue, negative red, as everywhere), per run and metric when its layers settle
    and how many jump, then the headline figures. The job graph is the report's "Workflow"
    entry."""
    import base64

    import numpy as np
    import pandas as pd

    body = ["<h2>Runs</h2>"]
    rows = []
    for r in runs:
        t = r["table"]
        steps = np.sort(t["step"].unique()) if len(t) else np.array([])
        rows.append(
            (
                f"<code>{html.escape(str(r['run']))}</code>",
                fmt(len(steps)),
                f"{fmt(steps[0])} … {fmt(steps[-1])}" if len(steps) else "–",
                fmt(t["layer"].nunique() if len(t) else 0),
                fmt(t["metric"].nunique() if len(t) else 0),
                fmt(len(t)),
            )
        )
    body.append(
        _table(
            ["run", "checkpoints", "steps", "layers", "metrics", "values"], rows, [False, True, False, True, True, True]
        )
    )
    corr = [r["correlation"].assign(run=str(r["run"])) for r in runs if len(r.get("correlation", ()))]
    body.append("<h2>Strongest correlations between metrics</h2>")
    if corr:
        c = pd.concat(corr, ignore_index=True)
        c = c[c["layer"].isin(["mean", "layer_mean"])] if c["layer"].isin(["mean", "layer_mean"]).any() else c
        c = c[np.isfinite(c["pearson_r"].astype(float))]
        c = c.reindex(c["pearson_r"].abs().sort_values(ascending=False).index).head(TOP_CORRELATIONS)
        body.append(
            _table(
                ["run", "metric x", "metric y", "layer", "Pearson r"],
                [
                    (
                        f"<code>{html.escape(str(x.run))}</code>",
                        _metric_cell(str(x.x_metric)),
                        _metric_cell(str(x.y_metric)),
                        html.escape(str(x.layer)),
                        (fmt(x.pearson_r, 3), _color(x.pearson_r)),
                    )
                    for x in c.itertuples()
                ],
                [False, False, False, False, True],
            )
        )
        body.append(
            '<p class="note">Over training steps; blue: the two rise and fall together, red: one rises as the other '
            "falls (the colours of every correlation heatmap and table). Layer <code>mean</code>: the mean of the "
            "per-layer r; <code>layer_mean</code>: r of the mean-over-layers trajectories.</p>"
        )
    else:
        body.append('<p class="note">No correlation computed.</p>')
    body.append("<h2>Convergence and change points</h2>")
    rows = []
    for r in runs:
        d = r.get("dynamics")
        if d is None or not len(d):
            continue
        for metric, g in d.groupby("metric", sort=True):
            c, j = g[g["kind"] == "converged"], g[g["kind"] == "change_point"]
            rows.append(
                (
                    f"<code>{html.escape(str(r['run']))}</code>",
                    _metric_cell(str(metric)),
                    f"{len(c)} / {g['layer'].nunique()}",
                    fmt(c["step"].astype(float).median()) if len(c) else "–",
                    fmt(j["layer"].nunique()),
                    ", ".join(fmt(x) for x in sorted(j["step"].unique())[:6]) or "–",
                )
            )
    if rows:
        k = min(len(rows), MAX_ROWS)
        body.append(
            _table(
                ["run", "metric", "layers settled", "median settle step", "layers with a jump", "jump steps"],
                rows[:k],
                [False, False, True, True, True, False],
            )
        )
        body.append(_left_out(k, len(rows), "analysis/dynamics.csv"))
    else:
        body.append('<p class="note">No dynamics computed.</p>')
    shown = [(title, path) for title, path in figures if Path(path).is_file()][:MAX_HEADLINE_FIGURES]
    if shown:
        body.append("<h2>Headline figures</h2><div>")
        for title, path in shown:
            data = base64.b64encode(_thumbnail(path)).decode("ascii")
            body.append(
                '<figure style="display:inline-block;margin:0 12px 12px 0;vertical-align:top">'
                f'<img alt="{html.escape(title)}" style="max-width:100%;max-height:420px;border:1px solid #d0d7de" '
                f'src="data:image/png;base64,{data}"><figcaption class=note>{html.escape(title)}</figcaption></figure>'
            )
        body.append("</div>")
    intro = (
        f"Study <code>{html.escape(study)}</code>: {len(runs)} run(s). Every figure and table of each run is under "
        "<b>Results</b>; the job graph that made them under <b>Workflow</b>."
    )
    return f"{study}: the study at a glance", intro, "".join(body)


def _thumbnail(path, max_px: int = 900) -> bytes:
    """A PNG at most ``max_px`` on its longer side (the figure itself if smaller)."""
    import io

    import matplotlib.image as mpimg
    import numpy as np

    raw = Path(path).read_bytes()
    img = mpimg.imread(io.BytesIO(raw), format="png")
    h, w = img.shape[:2]
    if max(h, w) <= max_px:
        return raw
    step = int(np.ceil(max(h, w) / max_px))
    out = io.BytesIO()
    mpimg.imsave(out, img[::step, ::step], format="png")
    return out.getvalue()


def write_page(text: str, path) -> None:
    """Write a page atomically (parents created)."""
    from ..store.atomic import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
