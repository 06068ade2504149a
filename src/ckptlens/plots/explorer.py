"""An interactive explorer of a run's metrics (or of a study's runs side by side): ONE self-contained
HTML file, its data and its JavaScript inlined, nothing fetched when it is viewed (it works offline
and on a cluster's login node, and inside the Snakemake report).

What it shows: menus choose the metric, the kind of module (:func:`ckptlens.store.kinds.layer_kind`)
and the run (or every run side by side); the chosen metric and kind is a layer × step heatmap (rows:
series in depth order, per-head pieces by (block, head); columns: checkpoints; its own colour scale,
2nd..98th percentile; a checkbox divides each series by its median); hovering a cell shows layer,
step and value (the value of the table, not the normalised one); a click on a row draws that
series over training with its change points (dashed) and, where the run has a training log, the
loss under it.

Size: values are kept to 4 significant digits; a page larger than ``max_bytes`` (default
:data:`MAX_BYTES`) keeps fewer checkpoints (evenly spaced, first and last kept) and says so at its
top. At Pythia-1.4B scale (840 series per metric, 154 checkpoints, 5 metrics) that is about 4 MB
(tests/plots/test_explorer.py bounds it at 10 MB).
The JavaScript is written here (no plotting library: none is a dependency), with matplotlib's
viridis colour map inlined as a table.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

#: The largest page written (bytes); beyond it fewer checkpoints are kept.
MAX_BYTES = 20_000_000
#: Columns of a training log drawn under a trajectory (those present; plus ``eval_*`` columns).
LOG_COLUMNS = ("loss", "id_error", "ood_error")


def _num(x: float):
    if not math.isfinite(x):
        return None
    return float(f"{x:.4g}")


def _viridis() -> list[str]:
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    return [matplotlib.colors.to_hex(cmap(i / 255)) for i in range(256)]


def explorer_data(
    table: pd.DataFrame,
    events: pd.DataFrame | None = None,
    logs: Mapping[str, pd.DataFrame] | None = None,
    *,
    max_steps: int | None = None,
) -> dict:
    """The explorer's data: ``runs``, ``metrics``, ``kinds`` (per metric, those present),
    ``steps`` (per run), ``series`` (run -> metric -> kind -> {layers, values: one row per layer,
    aligned on the run's steps, null where missing}), ``events`` (run -> metric -> layer -> the
    steps of its change points), ``logs`` (run -> {steps, columns: name -> values}), ``notes``."""
    from ..store.kinds import KINDS, block_and_head, layer_kind
    from ..store.layers import layer_key
    from ._style import even_pick

    df = table.loc[:, ["run", "step", "layer", "metric", "value"]].copy()
    for c in ("run", "layer", "metric"):
        df[c] = df[c].astype(str)
    df["value"] = pd.to_numeric(df["value"], errors="coerce").astype(float)
    notes = []
    runs = sorted(df["run"].unique())
    steps = {}
    for run in runs:
        every = sorted(int(s) for s in df.loc[df["run"] == run, "step"].unique())
        kept = even_pick(every, max_steps) if max_steps else every
        if len(kept) < len(every):
            notes.append(f"run {run}: {len(kept)} of {len(every)} checkpoints kept (evenly spaced) to bound the page")
        steps[run] = kept
    kind_of = {x: layer_kind(x) for x in df["layer"].unique()}

    def order(x):
        b, h = block_and_head(x)
        return (b if b is not None else -1, h if h is not None else -1, *layer_key(x))

    series: dict = {}
    kinds: dict = {}
    for (run, metric), g in df.groupby(["run", "metric"], sort=True):
        wide = g.groupby(["layer", "step"])["value"].mean().unstack("step").reindex(columns=steps[run])
        for kind in KINDS:
            layers = sorted((x for x in wide.index if kind_of[x] == kind), key=order)
            if not layers:
                continue
            kinds.setdefault(metric, [])
            if kind not in kinds[metric]:
                kinds[metric].append(kind)
            values = [[_num(v) for v in row] for row in wide.loc[layers].to_numpy(dtype=float)]
            series.setdefault(run, {}).setdefault(metric, {})[kind] = {"layers": layers, "values": values}
    for metric in kinds:
        kinds[metric] = [k for k in KINDS if k in kinds[metric]]
    ev: dict = {}
    if events is not None and len(events):
        cps = events[events["kind"].astype(str) == "change_point"]
        for r in cps.itertuples():
            ev.setdefault(str(r.run), {}).setdefault(str(r.metric), {}).setdefault(str(r.layer), []).append(int(r.step))
    out_logs: dict = {}
    for run, log in (logs or {}).items():
        if log is None or not len(log) or "step" not in log.columns:
            continue
        cols = [c for c in LOG_COLUMNS if c in log.columns] + [
            c
            for c in log.columns
            if str(c).startswith("eval_") and not str(c).endswith(("_runtime", "_per_second", "_steps_per_second"))
        ]
        if not cols:
            continue
        lg = log.sort_values("step")
        out_logs[str(run)] = {
            "steps": [int(s) for s in lg["step"]],
            "columns": {
                str(c): [_num(float(v)) for v in pd.to_numeric(lg[c], errors="coerce").to_numpy(dtype=float)]
                for c in cols
            },
        }
    return {
        "runs": runs,
        "metrics": sorted(kinds),
        "kinds": kinds,
        "steps": steps,
        "series": series,
        "events": ev,
        "logs": out_logs,
        "notes": notes,
    }


def explorer_html(
    table: pd.DataFrame,
    events: pd.DataFrame | None = None,
    logs: Mapping[str, pd.DataFrame] | None = None,
    *,
    title: str = "ckptlens explorer",
    max_bytes: int = MAX_BYTES,
) -> str:
    """The explorer page of ``table`` (a tidy metrics table, one run or several), with the change
    points of ``events`` (the dynamics table) and the training ``logs`` (run -> log); at most
    ``max_bytes`` (fewer checkpoints beyond, said on the page)."""
    max_steps = None
    while True:
        data = explorer_data(table, events, logs, max_steps=max_steps)
        payload = json.dumps(data, separators=(",", ":"), allow_nan=False)
        text = _page(title, payload)
        longest = max((len(s) for s in data["steps"].values()), default=0)
        if len(text.encode()) <= max_bytes or longest <= 2:
            return text
        ratio = max_bytes / len(text.encode())
        max_steps = max(2, int(longest * ratio * 0.95))


def write_explorer(text: str, path: str | os.PathLike) -> Path:
    """Write the page atomically (parents created)."""
    from ..store.atomic import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return path


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;font-size:13px;color:#1f2328;margin:12px 16px}
h1{font-size:18px;margin:0 0 6px} .note{color:#57606a;font-size:12px} label{margin-right:14px}
select{font-size:13px} #maps{display:flex;flex-wrap:wrap;gap:16px;margin-top:10px}
.panel h2{font-size:13px;margin:4px 0} canvas{image-rendering:pixelated;border:1px solid #d0d7de;cursor:crosshair}
.scale{font-size:11px;color:#57606a} #tip{position:fixed;pointer-events:none;background:#fff;border:1px solid #8c959f;
padding:2px 6px;font-size:12px;display:none;z-index:9} svg text{font-size:10px;fill:#57606a}
#trace h2{font-size:13px;margin:12px 0 2px}
"""

_JS = r"""
const D = JSON.parse(document.getElementById("data").textContent);
const LUT = JSON.parse(document.getElementById("lut").textContent);
const $ = (id) => document.getElementById(id);
const fmt = (v) => (v === null || v === undefined ? "–" : Number(v).toPrecision(4).replace(/\.?0+(e|$)/, "$1"));
function options(sel, items, keep) {
  const old = sel.value;
  sel.innerHTML = "";
  for (const [value, text] of items) {
    const o = document.createElement("option"); o.value = value; o.textContent = text; sel.appendChild(o);
  }
  if (keep && items.some(([v]) => v === old)) sel.value = old;
}
function init() {
  const runs = D.runs.map((r) => [r, r]);
  if (D.runs.length > 1) runs.push(["*", "all runs side by side"]);
  options($("run"), runs);
  menus();
  for (const id of ["metric", "run", "kind", "norm"]) $(id).addEventListener("change", () => {
    if (id === "run") menus(); else if (id === "metric") kinds();
    draw();
  });
  if (D.notes.length) $("notes").textContent = D.notes.join("; ");
  draw();
}
// the menus offer what the chosen run(s) have: its metrics, and that metric's kinds
function chosen() { return $("run").value === "*" ? D.runs : [$("run").value]; }
function menus() {
  const have = new Set(chosen().flatMap((r) => Object.keys(D.series[r] || {})));
  options($("metric"), D.metrics.filter((m) => have.has(m)).map((m) => [m, m]), true);
  kinds();
}
function kinds() {
  const have = new Set(chosen().flatMap((r) => Object.keys((D.series[r] || {})[$("metric").value] || {})));
  options($("kind"), (D.kinds[$("metric").value] || []).filter((k) => have.has(k)).map((k) => [k, k]), true);
}
function block(run) {
  const m = (D.series[run] || {})[$("metric").value] || {};
  return m[$("kind").value];
}
function median(a) { const s = a.filter((v) => v !== null).sort((x, y) => x - y); return s.length ? s[s.length >> 1] : null; }
function shown(b) {
  if (!$("norm").checked) return b.values;
  return b.values.map((row) => { const m = median(row); return row.map((v) => (v === null || !m ? null : v / m)); });
}
function draw() {
  const maps = $("maps"); maps.innerHTML = ""; $("trace").innerHTML = "";
  const runs = chosen();
  for (const run of runs) {
    const b = block(run);
    const div = document.createElement("div"); div.className = "panel"; maps.appendChild(div);
    const h = document.createElement("h2"); div.appendChild(h);
    if (!b) { h.textContent = run + ": no series of this kind"; continue; }
    h.textContent = run + " — " + $("kind").value + " (" + b.layers.length + " series × " + D.steps[run].length + " checkpoints)";
    heatmap(div, run, b, runs.length);
  }
}
function heatmap(div, run, b, n) {
  const steps = D.steps[run], vals = shown(b);
  const flat = vals.flat().filter((v) => v !== null).sort((x, y) => x - y);
  const lo = flat.length ? flat[Math.floor(0.02 * (flat.length - 1))] : 0;
  let hi = flat.length ? flat[Math.ceil(0.98 * (flat.length - 1))] : 1;
  if (!(hi > lo)) hi = lo + (Math.abs(lo) * 1e-6 || 1e-12);
  const width = Math.max(260, Math.floor((window.innerWidth - 80) / n) - 20);
  const cw = Math.max(1, Math.min(64, Math.floor(width / steps.length)));
  const ch = Math.max(1, Math.min(16, Math.floor(640 / b.layers.length)));
  const c = document.createElement("canvas");
  c.width = cw * steps.length; c.height = ch * b.layers.length; c.dataset.run = run;
  div.appendChild(c);
  const g = c.getContext("2d");
  for (let i = 0; i < b.layers.length; i++) for (let j = 0; j < steps.length; j++) {
    const v = vals[i][j];
    g.fillStyle = v === null ? "#d9d9d9" : LUT[Math.max(0, Math.min(255, Math.round(255 * (v - lo) / (hi - lo))))];
    g.fillRect(j * cw, i * ch, cw, ch);
  }
  const s = document.createElement("div"); s.className = "scale";
  s.textContent = "colour: " + fmt(lo) + " (dark) … " + fmt(hi) + " (yellow)" + ($("norm").checked ? ", each series ÷ its median" : "") +
    "; rows: " + b.layers[0] + " … " + b.layers[b.layers.length - 1] + "; columns: steps " + steps[0] + " … " + steps[steps.length - 1];
  div.appendChild(s);
  const cell = (e) => {
    const r = c.getBoundingClientRect();
    const j = Math.floor((e.clientX - r.left) * c.width / r.width / cw), i = Math.floor((e.clientY - r.top) * c.height / r.height / ch);
    return i >= 0 && i < b.layers.length && j >= 0 && j < steps.length ? [i, j] : null;
  };
  c.addEventListener("mousemove", (e) => {
    const t = $("tip"), ij = cell(e);
    if (!ij) { t.style.display = "none"; return; }
    const [i, j] = ij, v = b.values[i][j];
    t.dataset.layer = b.layers[i]; t.dataset.step = steps[j]; t.dataset.value = v === null ? "" : v;
    t.textContent = b.layers[i] + " · step " + steps[j] + " · " + fmt(v);
    t.style.left = e.clientX + 12 + "px"; t.style.top = e.clientY + 12 + "px"; t.style.display = "block";
  });
  c.addEventListener("mouseleave", () => { $("tip").style.display = "none"; });
  c.addEventListener("click", (e) => { const ij = cell(e); if (ij) trace(run, b, ij[0]); });
}
function line(svg, xs, ys, colour) {
  const pts = [];
  xs.forEach((x, k) => { if (ys[k] !== null) pts.push(x.toFixed(1) + "," + ys[k].toFixed(1)); });
  const p = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  p.setAttribute("points", pts.join(" ")); p.setAttribute("fill", "none"); p.setAttribute("stroke", colour); p.setAttribute("stroke-width", "1.5");
  svg.appendChild(p); return p;
}
function chart(parent, title, steps, values, cps, id) {
  const W = 640, H = 180, L = 56, R = 10, T = 8, B = 22;
  const h = document.createElement("h2"); h.textContent = title; parent.appendChild(h);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("width", W); svg.setAttribute("height", H); svg.id = id; parent.appendChild(svg);
  const fin = values.filter((v) => v !== null);
  const lo = Math.min(...fin), hi = Math.max(...fin), span = hi > lo ? hi - lo : 1;
  const x = (k) => L + (W - L - R) * (steps.length > 1 ? k / (steps.length - 1) : 0.5);
  const y = (v) => (v === null ? null : T + (H - T - B) * (1 - (v - lo) / span));
  const text = (tx, ty, s, anchor) => {
    const t = document.createElementNS("http://www.w3.org/2000/svg", "text");
    t.setAttribute("x", tx); t.setAttribute("y", ty); t.setAttribute("text-anchor", anchor || "start"); t.textContent = s; svg.appendChild(t);
  };
  text(L - 4, T + 8, fmt(hi), "end"); text(L - 4, H - B, fmt(lo), "end");
  text(L, H - 6, "step " + steps[0]); text(W - R, H - 6, "step " + steps[steps.length - 1] + " (one point per checkpoint)", "end");
  for (const s of cps || []) {
    const k = steps.indexOf(s); if (k < 0) continue;
    const l = document.createElementNS("http://www.w3.org/2000/svg", "line");
    l.setAttribute("x1", x(k)); l.setAttribute("x2", x(k)); l.setAttribute("y1", T); l.setAttribute("y2", H - B);
    l.setAttribute("stroke", "#cf222e"); l.setAttribute("stroke-dasharray", "4 3"); l.setAttribute("class", "cp"); l.dataset.step = s;
    svg.appendChild(l);
  }
  line(svg, steps.map((_, k) => x(k)), values.map(y), "#0969da").dataset.n = fin.length;
}
function trace(run, b, i) {
  const box = $("trace"); box.innerHTML = "";
  const layer = b.layers[i], metric = $("metric").value;
  const cps = (((D.events[run] || {})[metric] || {})[layer]) || [];
  chart(box, run + " · " + metric + " · " + layer + (cps.length ? " — change points at " + cps.join(", ") : " — no change point"), D.steps[run], b.values[i], cps, "series");
  const log = D.logs[run];
  if (log) for (const [name, vals] of Object.entries(log.columns)) {
    const lcps = (((D.events[run] || {})[name] || {}).model) || [];
    chart(box, run + " · training log: " + name, log.steps, vals, lcps, "log-" + name);
  }
  box.dataset.layer = layer;
}
init();
"""


def _page(title: str, payload: str) -> str:
    # "</" would end the script element early: JSON allows it escaped
    payload = payload.replace("</", "<\\/")
    lut = json.dumps(_viridis())
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        "<p class=note>Choose the metric, the kind of module and the run; hover a cell for its layer, step and "
        "value; click a row for that series over training, its change points (dashed) and the training log under "
        'it. Everything is in this file: nothing is fetched. <span id="notes"></span></p>'
        '<div><label>metric <select id="metric"></select></label><label>kind <select id="kind"></select></label>'
        '<label>run <select id="run"></select></label>'
        '<label><input type="checkbox" id="norm"> each series ÷ its median</label></div>'
        '<div id="maps"></div><div id="trace"></div><div id="tip"></div>'
        f'<script type="application/json" id="data">{payload}</script>'
        f'<script type="application/json" id="lut">{lut}</script>'
        f"<script>{_JS}</script></body></html>\n"
    )


__all__ = ["MAX_BYTES", "explorer_data", "explorer_html", "write_explorer"]
