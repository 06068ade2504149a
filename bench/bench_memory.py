"""Peak memory of weight extraction and of a weight-metric job on a large checkpoint.

    .venv/bin/python bench/bench_memory.py [--workdir DIR] [--keep]

Builds a synthetic GPT-NeoX checkpoint with the shapes of Pythia-410m (random float32 weights,
written tensor by tensor so that building it needs little memory either), then runs, each in a
fresh process: (1) weight extraction of every weight matrix through the GPT-NeoX adapter and
(2) the weight_spectrum metric family (Frobenius/spectral norm, stable and effective rank: one SVD
per matrix) on that extraction. Reports each process's peak RSS against the checkpoint size.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Pythia-410m: 24 layers, hidden 1024, 16 heads, MLP 4096, vocabulary 50304.
LAYERS, D, FF, VOCAB, HEADS = 24, 1024, 4096, 50304, 16


def synthetic_neox(path: Path) -> tuple[int, int]:
    from ckptlens.store.tensors import write_tensors

    shapes = {"gpt_neox.embed_in.weight": (VOCAB, D)}
    for i in range(LAYERS):
        p = f"gpt_neox.layers.{i}"
        shapes |= {
            f"{p}.input_layernorm.weight": (D,),
            f"{p}.input_layernorm.bias": (D,),
            f"{p}.post_attention_layernorm.weight": (D,),
            f"{p}.post_attention_layernorm.bias": (D,),
            f"{p}.attention.query_key_value.weight": (3 * D, D),
            f"{p}.attention.query_key_value.bias": (3 * D,),
            f"{p}.attention.dense.weight": (D, D),
            f"{p}.attention.dense.bias": (D,),
            f"{p}.mlp.dense_h_to_4h.weight": (FF, D),
            f"{p}.mlp.dense_h_to_4h.bias": (FF,),
            f"{p}.mlp.dense_4h_to_h.weight": (D, FF),
            f"{p}.mlp.dense_4h_to_h.bias": (D,),
        }
    shapes |= {
        "gpt_neox.final_layer_norm.weight": (D,),
        "gpt_neox.final_layer_norm.bias": (D,),
        "embed_out.weight": (VOCAB, D),
    }
    rng = np.random.default_rng(0)
    config = {"model_type": "gpt_neox", "num_attention_heads": HEADS, "hidden_size": D, "num_hidden_layers": LAYERS}
    items = ((k, (rng.standard_normal(s, dtype=np.float32) * 0.02)) for k, s in shapes.items())
    write_tensors(items, path, {"config": json.dumps(config)})
    n_params = sum(int(np.prod(s)) for s in shapes.values())
    largest = max(int(np.prod(s)) for s in shapes.values()) * 4
    return n_params, largest


PLAIN = [
    "gpt_neox.embed_in",
    "gpt_neox.layers.*.attention.query_key_value",
    "gpt_neox.layers.*.attention.dense",
    "gpt_neox.layers.*.mlp.*",
    "embed_out",
]


def _anon_mib() -> float:
    """Anonymous resident memory: what the process holds itself. Resident pages of memory-mapped
    files (counted in RSS once read) are page cache the kernel can drop, so they are reported apart."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(task: str, src: str, dst: str) -> None:
    """Runs in a fresh process; prints its peak RSS and peak anonymous RSS (MiB) as JSON."""
    import threading

    import numpy  # noqa: F401  (baseline: interpreter + numpy)

    base = _anon_mib()
    peak_anon = [base]
    done = threading.Event()

    def sample():
        while not done.wait(0.005):
            peak_anon[0] = max(peak_anon[0], _anon_mib())

    threading.Thread(target=sample, daemon=True).start()
    t = time.perf_counter()
    if task == "extract":
        from ckptlens.extract.weights import extract_weights

        n = len(extract_weights(src, PLAIN, dst, adapter="gpt_neox"))
    else:
        from ckptlens.metrics import compute_family
        from ckptlens.store.tensors import TensorFile

        metrics = {m: {} for m in ("frobenius_norm", "spectral_norm", "stable_rank", "effective_rank")}
        n = len(compute_family("weight_spectrum", metrics, TensorFile(src)))
    seconds = time.perf_counter() - t
    done.set()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {"peak_mib": peak, "peak_anon_mib": peak_anon[0], "baseline_mib": base, "items": n, "seconds": seconds}
        )
    )


def run_child(task, src, dst) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", task, src, dst], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--child", nargs=3)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ckptlens-mem-"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt, extracted = work / "neox.safetensors", work / "weights.safetensors"
    try:
        n_params, largest = synthetic_neox(ckpt)
        size = ckpt.stat().st_size / 2**20
        ex = run_child("extract", str(ckpt), str(extracted))
        me = run_child("metrics", str(extracted), "")
        rows = [
            ("synthetic GPT-NeoX (Pythia-410m shapes) parameters", f"{n_params / 1e6:.0f} M"),
            ("checkpoint size (float32)", f"{size:,.0f} MiB"),
            ("largest single tensor", f"{largest / 2**20:,.0f} MiB"),
            ("largest float64 working copy (SVD input)", f"{2 * largest / 2**20:,.0f} MiB"),
            ("python + numpy baseline (anonymous RSS)", f"{ex['baseline_mib']:,.0f} MiB"),
            (
                f"weight extraction, {ex['items']} matrices, {ex['seconds']:.0f} s: peak anonymous RSS",
                f"{ex['peak_anon_mib']:,.0f} MiB",
            ),
            ("   (peak RSS incl. resident pages of the memory-mapped checkpoint)", f"{ex['peak_mib']:,.0f} MiB"),
            (
                f"weight_spectrum metrics, {me['items']} values, {me['seconds']:.0f} s: peak anonymous RSS",
                f"{me['peak_anon_mib']:,.0f} MiB",
            ),
            ("   (peak RSS incl. resident pages of the memory-mapped extraction)", f"{me['peak_mib']:,.0f} MiB"),
        ]
        width = max(len(k) for k, _ in rows)
        for k, v in rows:
            print(f"{k:<{width}}  {v}")
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
