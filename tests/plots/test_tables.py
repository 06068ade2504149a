"""The report shows the findings, not only figures: the PCA, correlation and dynamics tables as
self-contained HTML pages (ckptlens.plots.tables). The whole report in a real browser:
tests/workflow/test_report.py."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ckptlens.plots import tables

# --------------------------------------------------------------------------- the pages


def _pca_tables(n_cols=3, matrices=("layer_mean", "layer_metric")):
    pca = pd.DataFrame(
        [
            {"run": "r", "matrix": m, "component": k, "explained_variance_ratio": v, "cumulative": c}
            for m in matrices
            for k, v, c in ((1, 0.912345678, 0.912345678), (2, 0.087654321, 1.0), (3, 2.7e-33, 1.0))
        ]
    )
    loadings = pd.DataFrame(
        [
            {"run": "r", "matrix": m, "component": k, "column": f"layer{i}|metric<{i}>", "loading": (-1) ** i / (i + 1)}
            for m in matrices
            for k in (1, 2)
            for i in range(n_cols)
        ]
    )
    return pca, loadings


def test_pages_are_self_contained_rounded_and_escaped():
    pca, loadings = _pca_tables()
    text = tables.pca_page(pca, loadings, "r<&>", notes=["run 'r': constant column <x> left out"])
    assert text.startswith("<!DOCTYPE html>") and "<style>" in text
    assert not re.search(r"<script|<link|src=|href=|url\(|@import", text)  # nothing to fetch, nothing to run
    assert "0.9123" in text and "0.912345678" not in text  # 4 significant digits
    assert "2.7e-33" not in text and ">0<" in text  # round-off shown as 0
    assert "r&lt;&amp;&gt;" in text and "metric&lt;0&gt;" in text and "<x>" not in text
    assert "metrics averaged over layers" in text and "constant column &lt;x&gt; left out" in text
    assert tables.fmt(float("nan")) == "–" and tables.fmt(12.0) == "12" and tables.fmt(np.int64(7)) == "7"
    assert tables.fmt(123456.789) == "1.235e+05" and tables.fmt(-0.000123456) == "-0.0001235"


def test_pages_are_bounded_and_say_what_was_left_out(monkeypatch):
    monkeypatch.setattr(tables, "MAX_ROWS", 50)
    rows = [
        {
            "run": "r",
            "metric": f"m{i % 3}",
            "layer": f"blocks.{i}",
            "kind": "change_point",
            "step": 10 * i,
            "value": 0.5,
            "score": float(i),
        }
        for i in range(200)
    ] + [
        {"run": "r", "metric": "m0", "layer": f"blocks.{i}", "kind": "converged", "step": 5, "value": 1.0, "score": 0.9}
        for i in range(30)
    ]
    text = tables.dynamics_page(pd.DataFrame(rows), "r")
    assert text.count("<tr>") <= 50 + 3 + 3  # the row budget, plus one header row per table
    assert (
        "of 200 rows left out here (the page shows at most 50); all are in <code>analysis/dynamics.csv</code>" in text
    )
    assert text.index("blocks.199") < text.index("blocks.198")  # largest jumps first
    corr = pd.DataFrame(
        [
            {
                "run": "r",
                "x_metric": "a",
                "y_metric": "b",
                "layer": layer,
                "pearson_r": r,
                "r_squared": r * r,
                "slope": 1.0,
                "intercept": 0.0,
                "n_steps": 5,
            }
            for layer, r in (("blocks.10", 0.5), ("blocks.2", -0.9), ("mean", 0.1))
        ]
    )
    text = tables.correlation_page(corr, "r")
    assert (
        text.index("mean over layers") < text.index("blocks.2") < text.index("blocks.10")
    )  # summary, then depth order
    assert "rgba(207,34,46" in text and "rgba(9,105,218" in text  # negative red, positive blue


def test_empty_analyses_say_so():
    empty_pca = pd.DataFrame(columns=["run", "matrix", "component", "explained_variance_ratio", "cumulative"])
    empty_load = pd.DataFrame(columns=["run", "matrix", "component", "column", "loading"])
    assert "No PCA for this run" in tables.pca_page(empty_pca, empty_load, "r", ["no PCA: needs at least 2 steps"])
    empty = pd.DataFrame(
        columns=["run", "x_metric", "y_metric", "layer", "pearson_r", "r_squared", "slope", "intercept", "n_steps"]
    )
    assert "analysis.correlation_pairs" in tables.correlation_page(empty, "r")
    dyn = pd.DataFrame(columns=["run", "metric", "layer", "kind", "step", "value", "score"])
    assert "No change point" in tables.dynamics_page(dyn, "r")


# ------------------------------------------------------------------------- the tidy table, the study
def tidy_table(run="r", metrics=("rank", "cka"), layers=3, steps=range(0, 100, 10)):
    rng = np.random.default_rng(0)
    rows = [(run, s, f"blocks.{i}", m, rng.uniform()) for m in metrics for i in range(layers) for s in steps]
    df = pd.DataFrame(rows, columns=["run", "step", "layer", "metric", "value"])
    df.loc[0, "value"] = np.nan
    return df


def test_metrics_preview_first_rows_and_per_metric_summary():
    df = tidy_table()
    text = tables.metrics_page(df, "r")
    assert "<script" not in text and "src=" not in text
    assert "60 rows: 2 metric(s) × 3 layer(s) × 10 checkpoint(s) (steps 0 … 90)" in text
    # per metric: layers, checkpoints, finite values / all, min, median, max
    cka = df[df.metric == "cka"]["value"]
    row = re.search(r"<code>cka</code>.*?</tr>", text).group(0)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
    assert cells[0:3] == ["3", "10", "30 / 30"]
    assert cells[3] == tables.fmt(cka.min()) and cells[5] == tables.fmt(cka.max())
    assert "29 / 30" in text  # the NaN of the first row counted
    assert f"The first {tables.PREVIEW_ROWS} rows" in text and "metrics.parquet" in text
    assert tables.metrics_page(df.iloc[:0], "r").count("The table is empty") == 1


def test_study_page_runs_figures_strongest_correlations_and_convergence(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 8), dpi=150)  # 1800 × 1200: thumbnailed
    fig.add_subplot().plot([0, 1], [0, 1])
    png = tmp_path / "traj.png"
    fig.savefig(png)
    corr = pd.DataFrame(
        [
            {"x_metric": "a", "y_metric": "b", "layer": "mean", "pearson_r": 0.95},
            {"x_metric": "a", "y_metric": "c", "layer": "mean", "pearson_r": -0.99},
            {"x_metric": "b", "y_metric": "c", "layer": "mean", "pearson_r": 0.1},
            {"x_metric": "a", "y_metric": "b", "layer": "blocks.0", "pearson_r": 1.0},  # not a summary row
        ]
    )
    dyn = pd.DataFrame(
        [
            {"metric": "a", "layer": "blocks.0", "kind": "converged", "step": 40, "value": 1.0, "score": 0.5},
            {"metric": "a", "layer": "blocks.1", "kind": "converged", "step": 60, "value": 1.0, "score": 0.3},
            {"metric": "a", "layer": "blocks.1", "kind": "change_point", "step": 30, "value": -2.0, "score": 9.0},
        ]
    )
    runs = [
        {"run": "r1", "table": tidy_table("r1"), "correlation": corr, "dynamics": dyn},
        {"run": "r2", "table": tidy_table("r2", steps=range(5)), "correlation": pd.DataFrame(), "dynamics": None},
    ]
    page = tables.study_page("demo", runs, [("r1: rank", str(png)), ("missing", str(tmp_path / "none.png"))])
    assert "demo: the study at a glance" in page and "2 run(s)" in page and "Workflow" in page
    # runs: checkpoints and steps
    assert re.search(r"<code>r1</code></td><td class=num>10</td><td>0 … 90</td>", page)
    assert re.search(r"<code>r2</code></td><td class=num>5</td><td>0 … 4</td>", page)
    # one headline figure (the missing one skipped), inlined and thumbnailed
    imgs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(imgs) == 1
    import base64
    import io

    import matplotlib.image as mpimg

    h, w = mpimg.imread(io.BytesIO(base64.b64decode(imgs[0])), format="png").shape[:2]
    assert max(h, w) <= 900
    # strongest first, summary rows only, positive blue and negative red
    corr_table = page.split("Strongest correlations")[1].split("</table>")[0]
    assert [tables.fmt(float(v), 3) for v in re.findall(r">(-?0\.\d+)</td>", corr_table)] == ["-0.99", "0.95", "0.1"]
    assert "rgba(207,34,46" in corr_table and "rgba(9,105,218" in corr_table
    # convergence: 2 of 2 layers settled, median 50, one layer jumps at 30
    conv = page.split("Convergence and change points")[1]
    assert re.search(r"<code>r1</code></td><td><code>a</code></td><td class=num>2 / 2</td><td class=num>50</td>", conv)
    assert "<td>30</td>" in conv
    # the fragment embedded in the report's opening view: scoped styles, no page wrapper
    frag = tables.study_fragment("demo", runs, [])
    assert frag.startswith('<div class="ckptlens-study"><style>') and "<html" not in frag and "<body" not in frag
    css = frag.split("<style>")[1].split("</style>")[0]
    assert all(rule.strip().startswith(".ckptlens-study") for rule in re.findall(r"(?:^|})([^{}]+)\{", css))


def test_the_reports_opening_view_embeds_the_study_fragment(tmp_path, monkeypatch):
    """workflow/report/workflow.rst, rendered as Snakemake renders the report's description (Jinja
    with ``files``, then docutils): with the study page among the results, the opening view holds
    the study fragment; without it, the plain description."""
    from pathlib import Path

    from docutils.core import publish_parts
    from jinja2 import Environment

    rst = (Path(__file__).resolve().parents[2] / "workflow" / "report" / "workflow.rst").read_text()
    monkeypatch.chdir(tmp_path)
    figures = tmp_path / "results" / "figures"
    figures.mkdir(parents=True)
    runs = [{"run": "r1", "table": tidy_table("r1"), "correlation": pd.DataFrame(), "dynamics": None}]
    (figures / "study.html").write_text(tables.study_page("demo", runs))
    (figures / "study_landing.html").write_text(tables.study_fragment("demo", runs))

    class Result:
        path = Path("results/figures/study.html")

    class Snakemake:
        config = {"runs": {"r1": {}}, "metrics": ["rank"]}

    def render(files):
        text = Environment().from_string(rst).render(snakemake=Snakemake, categories={}, files=files)
        return publish_parts(text, writer="html")["html_body"]

    opening = render([Result()])
    assert '<div class="ckptlens-study">' in opening and "demo: the study at a glance" in opening
    assert "<code>r1</code>" in opening
    assert "ckptlens-study" not in render([])
