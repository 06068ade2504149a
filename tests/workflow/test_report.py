"""The whole Snakemake report checked in a real headless browser (Chromium): it loads, every figure and
table of every run is listed, each one opens in the viewer, every image decodes and every table
page parses.

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

import pytest

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
    out.landing = document.body.innerText.slice(0, 20000);
    out.landing_images = Array.from(document.querySelectorAll(".ckptlens-study img")).map((i) => i.naturalWidth);
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
        // the results listed in the menu (not the tables of the study page in the opening view)
        for (const tr of Array.from(document.querySelectorAll("table tbody tr")).filter((t) => !t.closest(".ckptlens-study"))) {
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
        // what would be fetched: a script or image from elsewhere, a stylesheet (inlined data: and inline scripts are not)
        rec.fetches = doc.querySelectorAll("script[src],[src]:not([src^='data:']),link[href]").length;
        rec.inline_scripts = doc.querySelectorAll("script:not([src])").length;
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
            assert item["fetches"] == 0, (path, item)
            if "explorer" in item["labels"]["figure"]:  # the interactive explorer: its data and script inlined
                assert item["inline_scripts"] >= 1, (path, item)
            else:
                assert item["tables"] >= 1 and item["inline_scripts"] == 0, (path, item)


def test_the_report_in_a_real_browser(small_project, chromium, tmp_path):
    from workflow_helpers import snakemake

    snakemake(small_project)  # `rule all` makes the landing page (rule report_study) too
    assert (small_project / "results/figures/study.html").is_file()
    snakemake(small_project, "--report", "report.html")
    for run in ("small", "imported"):
        for table in ("pca", "correlation", "dynamics", "metrics"):
            page = small_project / f"results/runs/{run}/report/{table}.html"
            assert page.is_file() and page.stat().st_size < 1_000_000
    seen = browse_report(chromium, small_project / "report.html", tmp_path)
    assert_report_complete(seen, ["small", "imported"], study="ckptlens")
    pages = {p: i for p, i in seen["items"].items() if p.endswith(".html") and "/runs/" in p}
    tables = {p: i for p, i in pages.items() if i["labels"]["figure"].endswith("(table)")}
    assert len(tables) == 8 and len(pages) == 10  # 4 tables and the explorer per run
    assert seen["items"]["results/runs/small/report/explorer.html"]["labels"]["figure"] == "interactive explorer"
    # the tidy table is previewed, not only a Parquet file that shows nothing
    preview = seen["items"]["results/runs/small/report/metrics.html"]
    assert preview["h1"] == "Metrics table — small" and preview["tables"] >= 2
    # the report opens on the study: its runs, headline figures, correlations and convergence
    landing = seen["landing"]
    assert "ckptlens: the study at a glance" in landing, landing[:2000]
    for heading in (
        "Runs",
        "Headline figures",
        "Strongest correlations between metrics",
        "Convergence and change points",
    ):
        assert heading in landing, heading
    assert "small" in landing and "imported" in landing
    assert seen["landing_images"] and all(w > 0 for w in seen["landing_images"])
    assert seen["items"]["results/figures/study.html"]["h1"] == "ckptlens: the study at a glance"
