"""The report shows the findings, not only figures: the PCA, correlation and dynamics tables as
self-contained HTML pages (ckptlens.plots.tables), and the whole Snakemake report checked in a real
headless browser (Chromium): it loads, every figure and table of every run is listed, each one
opens in the viewer, every image decodes and every table page parses.

The browser check injects a script into a copy of report.html that clicks through the report's own
menus (Results -> study -> run -> each item's view button) the way a reader does, and writes what it
saw into the DOM, which ``chromium --headless --dump-dom`` prints once the script has run."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

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


# --------------------------------------------------------------------------- the browser
CHECK_JS = r"""
window.addEventListener("load", async function () {
  const out = { menu: [], subcategories: {}, items: {}, errors: [] };
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const click = (text) => {
    const l = Array.from(document.querySelectorAll("a")).filter((a) => a.textContent.trim() === text);
    if (!l.length) { out.errors.push("no link " + text); return false; }
    l[l.length - 1].click();
    return true;
  };
  try {
    await sleep(1000);
    out.menu = Array.from(document.querySelectorAll("ul a")).map((a) => a.textContent.trim()).filter((t) => t);
    const cats = Object.keys(categories);
    const byUri = {};
    for (const [path, r] of Object.entries(results)) byUri[r.data_uri] = path;
    for (const cat of cats) {
      for (const sub of Object.keys(categories[cat])) {
        const home = document.querySelector("nav ol a");
        if (home) home.click();
        await sleep(200);
        click(cats.length === 1 ? "Results" : cat);
        await sleep(200);
        click(sub);
        await sleep(300);
        const listed = [];
        for (const tr of Array.from(document.querySelectorAll("table tbody tr"))) {
          const row = { text: tr.innerText.replace(/\s+/g, " ").trim(), shown: null };
          const a = tr.querySelector("a");
          const href = a ? a.getAttribute("href") || "" : "";
          if (a && href.startsWith("data:")) {
            row.shown = { download: byUri[href] || null };
          } else if (a) {
            a.click();
            await sleep(300);
            const frame = Array.from(document.querySelectorAll("iframe")).find((f) => byUri[f.getAttribute("src")]);
            const img = Array.from(document.querySelectorAll("img")).find((i) => byUri[i.getAttribute("src")]);
            if (frame) row.shown = { view: "iframe", path: byUri[frame.getAttribute("src")] };
            else if (img) row.shown = { view: "img", path: byUri[img.getAttribute("src")], width: img.naturalWidth };
            else row.shown = { view: null };
          }
          listed.push(row);
        }
        out.subcategories[cat + " / " + sub] = listed;
      }
    }
    for (const [path, r] of Object.entries(results)) {
      const rec = { mime: r.mime_type, caption: (r.caption || "").length, labels: r.labels };
      if (r.mime_type.startsWith("image/")) {
        rec.ok = await new Promise((res) => {
          const img = new Image();
          img.onload = () => res(img.naturalWidth > 0 && img.naturalHeight > 0);
          img.onerror = () => res(false);
          img.src = r.data_uri;
        });
      } else if (r.mime_type === "text/html") {
        const b64 = r.data_uri.slice(r.data_uri.indexOf("base64,") + 7);
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const doc = new DOMParser().parseFromString(new TextDecoder().decode(bytes), "text/html");
        rec.h1 = doc.querySelector("h1") ? doc.querySelector("h1").textContent : null;
        rec.tables = doc.querySelectorAll("table").length;
        rec.fetches = doc.querySelectorAll("script,[src],link[href]").length;
        rec.ok = rec.h1 !== null;
      }
      out.items[path] = rec;
    }
  } catch (err) {
    out.errors.push(String((err && err.stack) || err));
  }
  const pre = document.createElement("pre");
  pre.id = "ckptlens-check";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
"""


def find_chromium() -> str | None:
    """Chromium, installed with apt-get where it is missing and this is root on Debian (as .ci/run
    does); None where neither works."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (
            ["apt-get", "install", "-y", "-q", "chromium"],
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "chromium"],
        ):
            try:
                subprocess.run(cmd, env=env, capture_output=True, timeout=900)
            except (OSError, subprocess.TimeoutExpired):
                return None
            if shutil.which("chromium"):
                return shutil.which("chromium")
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("no Chromium (install Debian's `chromium` package: apt-get install -y chromium; .ci/run does)")
    return path


def browse_report(chromium: str, report: Path, tmp_path: Path) -> dict:
    """What a reader sees in the report, as the injected script records it (see the module docstring)."""
    text = report.read_text(encoding="utf-8", errors="replace")
    end = text.rfind("</body>")
    assert end > 0, f"{report}: no </body>"
    probe = tmp_path / "report_probed.html"
    probe.write_text(text[:end] + "<script>" + CHECK_JS + "</script>" + text[end:], encoding="utf-8")
    proc = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=60000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    m = re.search(r'<pre id="ckptlens-check">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"the report did not run its script in Chromium:\n{proc.stderr[-3000:]}"
    return json.loads(html.unescape(m.group(1)))


def assert_report_complete(seen: dict, runs: list[str], study: str) -> None:
    """Every run lists its figures and tables, every item opens in the viewer and decodes."""
    assert not seen["errors"], seen["errors"]
    assert "Results" in seen["menu"] or study in seen["menu"], seen["menu"]
    for run in runs:
        rows = seen["subcategories"].get(f"{study} / {run}")
        assert rows, f"run {run} is not listed: {list(seen['subcategories'])}"
        texts = [r["text"] for r in rows]
        for figure in (
            "PCA (table)",
            "correlation (table)",
            "convergence and change points (table)",
            "PCA",
            "correlation",
        ):
            assert any(t.endswith(figure) for t in texts), (run, figure, texts)
        assert any(t.startswith("metric trajectories") for t in texts), texts
        for r in rows:
            shown = r["shown"]
            assert shown and (shown.get("download") or shown.get("view")), r  # every button does something
            if shown.get("view"):
                assert shown["path"].startswith(f"results/runs/{run}/"), r
                if shown["path"].endswith(".html"):
                    assert shown["view"] == "iframe", r
                else:
                    assert shown["view"] == "img" and shown["width"] > 0, r
    for path, item in seen["items"].items():
        if item["mime"].startswith("image/") or item["mime"] == "text/html":
            assert item["ok"], (path, item)
            assert item["caption"] > 0, path
        if item["mime"] == "text/html":
            assert item["tables"] >= 1 and item["fetches"] == 0, (path, item)


@pytest.mark.slow
def test_the_report_in_a_real_browser(small_project, chromium, tmp_path):
    from workflow_helpers import snakemake

    snakemake(small_project, "--report", "report.html")
    for run in ("small", "imported"):
        for table in ("pca", "correlation", "dynamics"):
            page = small_project / f"results/runs/{run}/report/{table}.html"
            assert page.is_file() and page.stat().st_size < 1_000_000
    seen = browse_report(chromium, small_project / "report.html", tmp_path)
    assert_report_complete(seen, ["small", "imported"], study="ckptlens")
    pages = {p: i for p, i in seen["items"].items() if p.endswith(".html")}
    assert len(pages) == 6 and all(i["labels"]["figure"].endswith("(table)") for i in pages.values())
