"""The interactive explorer (ckptlens.plots.explorer) in a real headless browser (Chromium): the
page loads without an error, the menus change what is drawn, hovering a heatmap cell shows the
layer, step and value of the table, and a click on a row draws that series with its change points
and the training loss under it. Nothing is fetched: the page is opened from a file with the network
of the browser off (--host-resolver-rules maps every name to nowhere)."""

from __future__ import annotations

import html
import json
import re
import subprocess

import numpy as np
import pandas as pd
import pytest

from ckptlens.plots.explorer import explorer_html
from tests.workflow.test_report import find_chromium

PROBE = r"""
window.__errors = [];
window.addEventListener("error", (e) => window.__errors.push(String(e.message)));
window.addEventListener("load", async function () {
  const out = { errors: window.__errors, steps: [] };
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const $ = (id) => document.getElementById(id);
  const set = (id, v) => { $(id).value = v; $(id).dispatchEvent(new Event("change")); };
  const state = () => ({
    metric: $("metric").value, kind: $("kind").value, run: $("run").value,
    kinds: Array.from($("kind").options).map((o) => o.value),
    canvases: Array.from(document.querySelectorAll("canvas")).map((c) => [c.dataset.run, c.width, c.height]),
    titles: Array.from(document.querySelectorAll(".panel h2")).map((h) => h.textContent),
  });
  const hover = (canvas, fx, fy) => {
    const r = canvas.getBoundingClientRect();
    const ev = { clientX: r.left + fx * r.width, clientY: r.top + fy * r.height, bubbles: true };
    canvas.dispatchEvent(new MouseEvent("mousemove", ev));
    const t = $("tip");
    return { shown: t.style.display, layer: t.dataset.layer, step: t.dataset.step, value: t.dataset.value, text: t.textContent };
  };
  try {
    await sleep(300);
    out.first = state();
    set("metric", "rank"); await sleep(50);
    out.rank = state();
    set("kind", "per-head OV"); await sleep(50);
    out.ov = state();
    const c = document.querySelector("canvas");
    out.ov_pixel = Array.from(c.getContext("2d").getImageData(1, 1, 1, 1).data);
    // the cell of the 3rd row, 2nd column: centre of that cell
    const rows = out.ov.titles[0].match(/\((\d+) series × (\d+) checkpoints/);
    const nr = +rows[1], nc = +rows[2];
    out.hover = hover(c, (1 + 0.5) / nc, (2 + 0.5) / nr);
    c.dispatchEvent(new MouseEvent("click", { clientX: c.getBoundingClientRect().left + (1.5 / nc) * c.getBoundingClientRect().width,
      clientY: c.getBoundingClientRect().top + (2.5 / nr) * c.getBoundingClientRect().height, bubbles: true }));
    await sleep(50);
    out.trace = {
      layer: $("trace").dataset.layer,
      charts: Array.from(document.querySelectorAll("#trace svg")).map((s) => s.id),
      points: Array.from(document.querySelectorAll("#trace svg#series polyline")).map((p) => p.getAttribute("points").split(" ").length),
      cps: Array.from(document.querySelectorAll("#trace svg#series line.cp")).map((l) => +l.dataset.step),
      headings: Array.from(document.querySelectorAll("#trace h2")).map((h) => h.textContent),
    };
    set("norm", "on"); $("norm").checked = true; $("norm").dispatchEvent(new Event("change")); await sleep(50);
    out.norm_scale = document.querySelector(".scale").textContent;
    set("run", "*"); await sleep(50);
    out.both = state();
  } catch (err) { out.errors.push(String((err && err.stack) || err)); }
  const pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
"""


def table_and_events():
    steps = list(range(0, 300, 20))  # 15 checkpoints
    rows = []
    for run, shift in (("a", 0.0), ("b", 1.0)):
        for b in range(3):
            for h in range(4):
                for p in ("ov", "qk"):
                    for s in steps:
                        rows.append((run, s, f"blocks.{b}.attn.head{h}.{p}", "rank", 10 * b + h + shift + s / 1000))
            for s in steps:
                rows.append((run, s, f"blocks.{b}.attn.o_proj", "rank", 5.0 + b + s / 100))
                rows.append((run, s, f"blocks.{b}", "cka", 0.5 + 0.1 * b))
    table = pd.DataFrame(rows, columns=["run", "step", "layer", "metric", "value"])
    events = pd.DataFrame(
        [{"run": "a", "metric": "rank", "layer": "blocks.0.attn.head2.ov", "kind": "change_point", "step": 120}]
    )
    log = pd.DataFrame({"step": np.arange(0, 300, 10), "loss": np.linspace(4.0, 1.0, 30)})
    return table, events, {"a": log}


def probe(tmp_path, page: str) -> dict:
    browser = find_chromium()
    if browser is None:
        pytest.skip("no Chromium (apt-get install -y chromium)")
    end = page.rfind("</body>")
    path = tmp_path / "explorer.html"
    path.write_text(page[:end] + "<script>" + PROBE + "</script>" + page[end:], encoding="utf-8")
    proc = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--window-size=1400,1000",
            "--virtual-time-budget=20000",
            "--dump-dom",
            path.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    m = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert m, proc.stderr[-3000:]
    return json.loads(html.unescape(m.group(1)))


def test_explorer_loads_the_menus_redraw_hover_shows_the_table_and_a_click_draws_the_series(tmp_path):
    table, events, logs = table_and_events()
    page = explorer_html(table, events, logs, title="explorer test")
    assert "<script src" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    seen = probe(tmp_path, page)
    assert seen["errors"] == []
    # first view: the first metric (cka) and its one kind, run a
    assert seen["first"]["metric"] == "cka" and seen["first"]["kinds"] == ["block output"]
    assert seen["first"]["canvases"][0][0] == "a"
    # choosing the metric changes the kinds offered and what is drawn
    assert seen["rank"]["kinds"] == ["attention output", "per-head OV", "per-head QK"]
    assert "attention output (3 series × 15 checkpoints)" in seen["rank"]["titles"][0]
    assert "per-head OV (12 series × 15 checkpoints)" in seen["ov"]["titles"][0]
    assert seen["ov"]["canvases"][0][2] != seen["rank"]["canvases"][0][2]  # 12 rows, not 3
    assert seen["ov_pixel"][3] == 255  # drawn
    # hover: row 3 of the per-head OV rows in (block, head) order is blocks.0.attn.head2.ov
    hover = seen["hover"]
    assert hover["shown"] == "block" and hover["layer"] == "blocks.0.attn.head2.ov" and hover["step"] == "20"
    want = table.query("run == 'a' and metric == 'rank' and layer == 'blocks.0.attn.head2.ov' and step == 20")
    assert float(hover["value"]) == pytest.approx(float(want["value"].iloc[0]), rel=1e-3)
    assert hover["text"].startswith("blocks.0.attn.head2.ov · step 20 · ")
    # click: that series over its 15 checkpoints, its change point at 120, the loss under it
    trace = seen["trace"]
    assert trace["layer"] == "blocks.0.attn.head2.ov"
    assert trace["charts"] == ["series", "log-loss"] and trace["points"] == [15] and trace["cps"] == [120]
    assert "change points at 120" in trace["headings"][0]
    assert "÷ its median" in seen["norm_scale"]
    # all runs side by side: one heatmap per run
    assert [c[0] for c in seen["both"]["canvases"]] == ["a", "b"]
