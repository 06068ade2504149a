"""The induction-head study at its authors' scale, ckptlens against the study's own loop, cold, in
one run on this machine.

    .venv/bin/python bench/bench_scale.py [--checkout PATH] [--steps 2000 --save-every 20] [--cores 2]

Five data settings (training pools of 256, 740, 750 and 2048 sequences, and unbounded) × 101
checkpoints of the demo transformer (2,000 steps, one every 20), trained once by the workflow (not
timed), then measured twice on the same checkpoint files:

* ckptlens (``snakemake --cores N``, cold: every extraction, metric, table, analysis and figure
  job): QK–OV and embedding–OV matching at ranks 2/4/8/16 with random baselines, token z-score and
  mismatch, ScreeNOT ranks, the rotary sweep over offsets 0–35 step 5; no correlation pairs;
* the study's loop, as it ran: one process, one core, numpy, one checkpoint at a time, one pass
  over every setting and checkpoint per rotary offset (the position-free measurements recomputed
  in each pass), straightforward linear algebra (full SVDs per head pair, the vocab × vocab token
  matrices formed, the screenot package, a 100-draw random baseline at every call), its four figures
  per setting and pass. That costs about 70 ms a checkpoint and pass here, as the study's own loop
  did (37 s per pass over its 505 checkpoints);
* the same loop with the random baseline computed once per (d, k) and reused (it does not depend on
  the checkpoint): what a careful notebook would do, a stricter reference than the study's own.

Printed: wall and CPU seconds (the process and its children), jobs, peak memory (ckptlens: per
rule, the largest resident set any of its jobs reached, sampled every 0.2 s; the loop: its peak
RSS), the no-op rerun, and the largest difference between the two sides' values. ``--checkout``
measures another version of ckptlens (e.g. a clone of an older commit), with this loop.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
POOLS = {"pool_256": 256, "pool_740": 740, "pool_750": 750, "pool_2048": 2048, "unbounded": None}
KS = [2, 4, 8, 16]
OFFSETS = list(range(0, 36, 5))


# --------------------------------------------------------------------------------------------- config
def study_config(steps: int, save_every: int, layout: str) -> dict:
    toy = {
        "type": "train_toy",
        "model": {"vocab_size": 64, "d_model": 64, "n_layers": 2, "n_heads": 1},
        "train": {"steps": steps, "save_every": save_every, "batch_size": 64, "lr": 0.002, "log_every": 10, "seed": 0},
    }
    targets = {
        "weights": [
            "embed",
            "blocks.*.attn.head*.qk",
            "blocks.*.attn.head*.ov",
            "blocks.*.attn.head*.q",
            "blocks.*.attn.head*.k",
        ]
    }
    runs = {}
    for name, pool in POOLS.items():
        task = {"seq_len": 32, "min_segment": 4, "max_segment": 12, "ood_segment": 16, "pool_size": pool, "seed": 0}
        runs[name] = {"source": {**toy, "task": task}, "targets": targets}
    labels = {name: name.replace("_", " ") for name in POOLS}
    return {
        "study": "induction heads at scale",
        "runs": runs,
        "metrics": {
            "qk_ov_overlap_max": {"ks": KS},
            "embed_ov_overlap_max": {"ks": KS},
            "qk_ov_token_diag_zscore": {"ks": KS},
            "qk_ov_token_mismatch": {"ks": KS},
            "screenot_rank": {},
            "qk_ov_rotary_sweep": {"ks": KS, "offsets": OFFSETS},
        },
        "figures": {
            "induction_circuits": {"kind": "induction", "runs": labels, "ks": KS},
            "induction_rotary_sweep": {"kind": "rotary_sweep", "runs": labels},
        },
    }


# --------------------------------------------------------------------------------------------- the loop
def _heads(w: dict, layer: int, n_heads: int):
    """[(W_Q, W_K, W_V, W_O)] per head of one layer of the demo model ([d_head, d], ..., [d, d_head])."""
    q, k, v, o = (w[f"blocks.{layer}.attn.{p}_proj.weight"].astype(np.float64) for p in "qkvo")
    dh = q.shape[0] // n_heads
    return [
        (q[h * dh : (h + 1) * dh], k[h * dh : (h + 1) * dh], v[h * dh : (h + 1) * dh], o[:, h * dh : (h + 1) * dh])
        for h in range(n_heads)
    ]


_BASELINES: dict = {}
#: the study recomputed the baseline at every call; the "cached" loop sets this
CACHE_BASELINES = False


def _random_baseline(d: int, k: int, rng) -> float:
    """The study's baseline: 100 pairs of random k-frames of R^d, mean largest principal cosine
    (with CACHE_BASELINES: computed once per (d, k))."""
    if CACHE_BASELINES and (d, k) in _BASELINES:
        return _BASELINES[(d, k)]
    vals = []
    for _ in range(100):
        a = np.linalg.qr(rng.standard_normal((d, k)))[0]
        b = np.linalg.qr(rng.standard_normal((d, k)))[0]
        vals.append(np.linalg.svd(a.T @ b, compute_uv=False).max())
    _BASELINES[(d, k)] = float(np.mean(vals))
    return _BASELINES[(d, k)]


def _zscore(m: np.ndarray) -> float:
    sd = m.std()
    return float((np.mean(np.diag(m)) - m.mean()) / sd) if sd > 0 else 0.0


def _mismatch(m: np.ndarray) -> float:
    return float(np.mean(np.diag(m) < m.max(axis=1)))


def _rotate(w_k: np.ndarray, offset: float, base: float = 10000.0) -> np.ndarray:
    """R(-offset·ω)·W_K, pairs (2i, 2i+1) of the head's features (the demo model's rotary layout)."""
    dh = w_k.shape[0]
    ang = -offset * base ** (-np.arange(0, dh, 2) / dh)
    c, s = np.cos(ang)[:, None], np.sin(ang)[:, None]
    out = np.empty_like(w_k)
    out[0::2] = c * w_k[0::2] - s * w_k[1::2]
    out[1::2] = s * w_k[0::2] + c * w_k[1::2]
    return out


def _truncate(u, s, vt, k):
    return u[:, :k] @ np.diag(s[:k]) @ vt[:k]


def study_measurements(w: dict, offset: int, rng) -> dict[str, float]:
    """Every measurement of one checkpoint at one rotary offset, written out plainly."""
    from screenot.ScreeNOT import adaptiveHardThresholding

    out = {}
    e = w["embed.weight"].astype(np.float64)
    ((q1, k1, _, _),) = _heads(w, 1, 1)
    ((q0, k0, v0, o0),) = _heads(w, 0, 1)
    dh = q1.shape[0]
    qk1 = q1.T @ k1 / math.sqrt(dh)
    ov0 = o0 @ v0
    u1, s1, vt1 = np.linalg.svd(qk1)
    u2, s2, vt2 = np.linalg.svd(ov0)
    _, _, vte = np.linalg.svd(e, full_matrices=False)
    d = qk1.shape[0]
    for k in KS:
        out[f"qk_ov_overlap_max.k{k}"] = float(np.linalg.svd(vt1[:k] @ u2[:, :k], compute_uv=False).max())
        out[f"qk_ov_overlap_max.k{k}_random"] = _random_baseline(d, k, rng)
        out[f"embed_ov_overlap_max.k{k}"] = float(np.linalg.svd(vte[:k] @ u2[:, :k], compute_uv=False).max())
        out[f"embed_ov_overlap_max.k{k}_random"] = _random_baseline(d, k, rng)
        t = e @ _truncate(u1, s1, vt1, k) @ _truncate(u2, s2, vt2, k) @ e.T  # vocab × vocab
        out[f"qk_ov_token_diag_zscore.k{k}"] = _zscore(t)
        out[f"qk_ov_token_mismatch.k{k}"] = _mismatch(t)
    t = e @ qk1 @ ov0 @ e.T
    out["qk_ov_token_diag_zscore.full"] = _zscore(t)
    out["qk_ov_token_mismatch.full"] = _mismatch(t)
    pieces = {"embed": e, "blocks.1.attn.head0.qk": qk1, "blocks.0.attn.head0.ov": ov0}
    ((q, kk, v, o),) = _heads(w, 0, 1)
    pieces["blocks.0.attn.head0.qk"] = q.T @ kk / math.sqrt(dh)
    pieces["blocks.1.attn.head0.ov"] = _heads(w, 1, 1)[0][3] @ _heads(w, 1, 1)[0][2]
    for layer in (0, 1):
        ((q, kk, _, _),) = _heads(w, layer, 1)
        pieces[f"blocks.{layer}.attn.head0.q"], pieces[f"blocks.{layer}.attn.head0.k"] = q, kk
    for name, m in pieces.items():
        p = min(m.shape)
        out[f"screenot_rank|{name}"] = float(adaptiveHardThresholding(m, max(1, p // 4))[2])
    qk_r = q1.T @ _rotate(k1, offset) / math.sqrt(dh)
    ur, sr, vtr = np.linalg.svd(qk_r)
    for k in KS:
        out[f"qk_ov_rotary_sweep.k{k}_r{offset}"] = float(np.linalg.svd(vtr[:k] @ u2[:, :k], compute_uv=False).max())
    out[f"qk_ov_rotary_sweep.zscore_r{offset}"] = _zscore(e @ qk_r @ ov0 @ e.T)
    return out


def run_loop(checkpoints: dict[str, list[tuple[int, str]]], out_dir: Path) -> dict:
    """The study's loop over every offset, setting and checkpoint; four figures per setting and
    pass. Returns {setting: {step: {measurement: value}}} of the last pass plus the rotary values of
    every pass (for the comparison with ckptlens)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from safetensors.numpy import load_file

    rng = np.random.default_rng(0)
    values: dict = {s: {} for s in checkpoints}
    out_dir.mkdir(parents=True, exist_ok=True)
    for offset in OFFSETS:
        for setting, ckpts in checkpoints.items():
            rows = []
            for step, path in ckpts:
                m = study_measurements(load_file(path), offset, rng)
                values[setting].setdefault(step, {}).update(m)
                rows.append((step, m))
            steps = [s for s, _ in rows]
            for name, keys in (
                ("matching", [f"qk_ov_overlap_max.k{k}" for k in KS]),
                ("zscore", [f"qk_ov_token_diag_zscore.k{k}" for k in KS]),
                ("mismatch", [f"qk_ov_token_mismatch.k{k}" for k in KS]),
                ("rotary", [f"qk_ov_rotary_sweep.k{k}_r{offset}" for k in KS]),
            ):
                fig, ax = plt.subplots(figsize=(5, 3.5))
                for key in keys:
                    ax.plot(steps, [m[key] for _, m in rows], label=key)
                ax.legend(fontsize=6)
                fig.savefig(out_dir / f"{setting}_{name}_r{offset}.png", dpi=100)
                plt.close(fig)
    return values


# --------------------------------------------------------------------------------------------- measuring
class PeakMemory(threading.Thread):
    """The largest RSS of any process running a Snakemake script job, per script, sampled."""

    def __init__(self, period=0.2):
        super().__init__(daemon=True)
        self.period, self.peak, self.stop = period, {}, threading.Event()

    def run(self):
        rx = re.compile(r"\.snakemake/scripts/tmp[^.]*\.(\w+)\.py")
        while not self.stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
                    m = rx.search(cmd)
                    if not m:
                        continue
                    rss = next(
                        int(line.split()[1])
                        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                        if line.startswith("VmRSS:")
                    )
                except (OSError, StopIteration, ValueError):
                    continue
                self.peak[m.group(1)] = max(self.peak.get(m.group(1), 0), rss)
            time.sleep(self.period)


def _copy_checkout(checkout: Path, dest: Path) -> Path:
    files = subprocess.run(["git", "-C", str(checkout), "ls-files", "-z"], check=True, capture_output=True).stdout
    for rel in files.decode().split("\0"):
        if rel and (checkout / rel).is_file() and not (checkout / rel).is_symlink():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes((checkout / rel).read_bytes())
        elif rel and (checkout / rel).is_symlink():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.readlink(checkout / rel), dest / rel)
    return dest


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _snakemake(project: Path, *args, monitor: PeakMemory | None = None) -> tuple[float, float, str]:
    env = {**os.environ, "PYTHONPATH": str(project / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    cpu0, t0 = _children_cpu(), time.perf_counter()
    proc = subprocess.run([snakemake, *args], cwd=project, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if proc.returncode:
        raise SystemExit(f"snakemake {' '.join(args)} failed:\n{proc.stderr[-5000:]}")
    return wall, cpu, proc.stdout + proc.stderr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkout", type=Path, default=REPO, help="the ckptlens version to measure")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--save-every", type=int, default=20)
    ap.add_argument("--cores", default="2")
    ap.add_argument("--skip-loop", action="store_true")
    ap.add_argument("--keep", type=Path, help="keep the project here (default: a temporary folder)")
    args = ap.parse_args()
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="ckptlens-scale-"))
    project = _copy_checkout(args.checkout.resolve(), tmp / "project")
    new_layout = (project / "workflow" / "Snakefile").is_file()
    cfg_path = project / ("config/config.yaml" if new_layout else "config.yaml")
    import yaml

    cfg = study_config(args.steps, args.save_every, "new" if new_layout else "old")
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run_dir = (lambda r: project / "results" / "runs" / r) if new_layout else (lambda r: project / "results" / r)
    logs = [str(run_dir(r).relative_to(project) / "train_log.csv") for r in POOLS]
    t_train, _, _ = _snakemake(project, "--cores", args.cores, *logs)
    print(f"training (not timed below): {t_train:.0f} s", flush=True)

    monitor = PeakMemory()
    monitor.start()
    wall, cpu, out = _snakemake(project, "--cores", args.cores)
    monitor.stop.set()
    jobs = re.findall(r"(\d+) of (\d+) steps \(100%\) done", out)
    noop = min(_snakemake(project, "--cores", args.cores)[0] for _ in range(3))
    result = {
        "ckptlens": {
            "wall_s": wall,
            "cpu_s": cpu,
            "jobs": int(jobs[-1][1]) if jobs else None,
            "noop_s": noop,
            "peak_rss_mib": {k: v / 1024 for k, v in sorted(monitor.peak.items())},
        }
    }
    print(json.dumps(result["ckptlens"], indent=1), flush=True)

    if not args.skip_loop:
        ckpts = {
            r: sorted(
                (int(m.group(1)), str(p))
                for p in run_dir(r).rglob("step*.safetensors")
                if "checkpoints" in p.parts and (m := re.search(r"step(\d+)\.safetensors$", p.name))
            )
            for r in POOLS
        }
        code = (
            "import sys, json, resource, time; sys.path.insert(0, %r); import bench_scale as b; "
            "b.CACHE_BASELINES = %r; "
            "from pathlib import Path; t=time.perf_counter(); v=b.run_loop(json.load(open(%r)), Path(%r)); "
            "w=time.perf_counter()-t; json.dump({'wall_s': w, 'values': v}, open(%r, 'w')); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
        )
        (tmp / "ckpts.json").write_text(json.dumps(ckpts))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        for name, cached in (("loop", False), ("loop_cached_baseline", True)):
            cpu0, t0 = _children_cpu(), time.perf_counter()
            args_ = (str(REPO / "bench"), cached, str(tmp / "ckpts.json"), str(tmp / f"{name}_figures"))
            proc = subprocess.run(
                [sys.executable, "-c", code % (*args_, str(tmp / f"{name}.json"))],
                env=env,
                capture_output=True,
                text=True,
            )
            if proc.returncode:
                raise SystemExit(proc.stderr[-4000:])
            loop_wall, loop_cpu = time.perf_counter() - t0, _children_cpu() - cpu0
            rss = int(proc.stdout.split()[-1]) / 1024
            result[name] = {"wall_s": loop_wall, "cpu_s": loop_cpu, "peak_rss_mib": rss}
            print(name, json.dumps(result[name], indent=1), flush=True)
        loop = json.loads((tmp / "loop.json").read_text())
        import pandas as pd

        worst = 0.0
        for r in POOLS:
            t = pd.read_parquet(run_dir(r) / "metrics.parquet")
            t = t[t["metric"].str.startswith(("qk_ov_overlap_max.k", "embed_ov", "qk_ov_token", "qk_ov_rotary_sweep"))]
            t = t[~t["metric"].str.endswith("_random")]
            for row in t.itertuples():
                want = loop["values"][r][str(row.step)].get(row.metric)
                if want is not None and np.isfinite(want) and np.isfinite(row.value):
                    worst = max(worst, abs(want - row.value))
        result["max_abs_difference"] = worst
        print(f"largest |ckptlens − loop| over the shared values: {worst:.2e}")
        for name in ("loop", "loop_cached_baseline"):
            print(f"ckptlens wall / {name} wall: {wall / result[name]['wall_s']:.2f}")
    (tmp / "result.json").write_text(json.dumps(result, indent=1))
    print(f"result: {tmp / 'result.json'}")


if __name__ == "__main__":
    main()
