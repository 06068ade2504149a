#!/usr/bin/env python
"""The task-vector study at the scale it was published on: ten fine-tunes of an open_clip ViT-B/16
visual encoder plus the base, as open_clip-style ``.pt`` state dicts (``model.visual.*``, text tower
deleted), through the workflow: task-vector PCA per layer and weights sampled from the components.

    .venv/bin/python bench/bench_vit_task_vectors.py                      # ViT-B/16, 10 seeds (11 × 344 MB)
    .venv/bin/python bench/bench_vit_task_vectors.py --shape tiny --seeds 3   # a smoke run of the bench

The checkpoints are SYNTHETIC (no CIFAR-100 fine-tuning here): the base is random (normal, std
0.02; LayerNorm gains 1, biases 0) in ViT-B/16's shapes (width 768, 12 blocks of 12 heads, patch 16
on 224×224 images, MLP 3072, projection to 512); fine-tune i = base + a low-rank "task" update
shared by every seed (rank 4, the same for all i, scale 0.5 % of the weight) + a seed-specific
low-rank update (rank 4, seeded by i) + i.i.d. noise (std 1e-4), on every matrix (vectors get the
noise only). So each per-layer PCA of the ten task vectors is a 10 × 10 Gram problem with a
known structure (one shared direction, ten seed directions, noise).

Prints, per rule, the jobs, wall seconds (sum and max) and peak RSS (MB) from the rules' benchmark
TSVs (results/runs/*/benchmarks/, results/task_vectors/*/benchmarks/), and the workflow's total
wall time. Leaves the project folder (--workdir, default a temporary one removed afterwards unless
--keep). Timings depend on the machine: run it when it is quiet.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
#: width, blocks, patch, image, MLP width, output dim
SHAPES = {"b16": (768, 12, 16, 224, 3072, 512), "tiny": (64, 2, 8, 32, 256, 32)}
PREFIX = "model.visual."


def visual_shapes(shape: str) -> dict[str, tuple[int, ...]]:
    """The tensors of open_clip's VisionTransformer (no attentional pooler, no layer scale)."""
    d, layers, p, img, mlp, out = SHAPES[shape]
    t = (img // p) ** 2 + 1
    s = {
        "class_embedding": (d,),
        "positional_embedding": (t, d),
        "proj": (d, out),
        "conv1.weight": (d, 3, p, p),
        "ln_pre.weight": (d,),
        "ln_pre.bias": (d,),
        "ln_post.weight": (d,),
        "ln_post.bias": (d,),
    }
    for i in range(layers):
        b = f"transformer.resblocks.{i}."
        s |= {
            b + "ln_1.weight": (d,),
            b + "ln_1.bias": (d,),
            b + "attn.in_proj_weight": (3 * d, d),
            b + "attn.in_proj_bias": (3 * d,),
            b + "attn.out_proj.weight": (d, d),
            b + "attn.out_proj.bias": (d,),
            b + "ln_2.weight": (d,),
            b + "ln_2.bias": (d,),
            b + "mlp.c_fc.weight": (mlp, d),
            b + "mlp.c_fc.bias": (mlp,),
            b + "mlp.c_proj.weight": (d, mlp),
            b + "mlp.c_proj.bias": (d,),
        }
    return {PREFIX + k: v for k, v in s.items()}


def _low_rank(rng, shape, rank, scale):
    m, n = shape[0], int(np.prod(shape[1:]))
    u = rng.standard_normal((m, rank), dtype=np.float32)
    v = rng.standard_normal((rank, n), dtype=np.float32)
    return ((u @ v) * (scale / np.sqrt(rank))).reshape(shape)


def build(shape: str, n_seeds: int, root: Path) -> dict:
    """root/base/step_0.pt and root/seed{i}/step_1000.pt; returns sizes."""
    import torch

    shapes = visual_shapes(shape)
    rng = np.random.default_rng(0)
    base = {}
    for k, s in shapes.items():
        if k.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight")):
            base[k] = np.ones(s, np.float32)
        elif k.endswith("bias") and "ln_" in k:
            base[k] = np.zeros(s, np.float32)
        else:
            base[k] = (rng.standard_normal(s, dtype=np.float32) * 0.02).astype(np.float32)
    (root / "base").mkdir(parents=True, exist_ok=True)
    torch.save({k: torch.from_numpy(v) for k, v in base.items()}, root / "base" / "step_0.pt")
    shared = np.random.default_rng(1)
    task = {k: _low_rank(shared, s, 4, 0.005 * 0.02) for k, s in shapes.items() if len(s) >= 2}
    for i in range(n_seeds):
        r = np.random.default_rng(100 + i)
        ft = {}
        for k, s in shapes.items():
            w = base[k] + r.standard_normal(s, dtype=np.float32) * 1e-4
            if k in task:
                w = w + task[k] + _low_rank(r, s, 4, 0.005 * 0.02)
            ft[k] = torch.from_numpy(w.astype(np.float32))
        (root / f"seed{i}").mkdir(exist_ok=True)
        torch.save(ft, root / f"seed{i}" / "step_1000.pt")
        del ft
    n = sum(int(np.prod(s)) for s in shapes.values())
    return {"params": n, "mb_per_checkpoint": n * 4 / 1e6, "checkpoints": n_seeds + 1}


def config(root: Path, n_seeds: int, n_samples: int) -> dict:
    # the task vectors' layers: every stored matrix (as the adapter yields them: conv1 as [d, 3·p·p],
    # class/position embeddings as [tokens, d], proj as [out, d], the fused in_proj whole), no head pieces
    blocks = PREFIX + "transformer.resblocks.*."
    weights = [PREFIX + m for m in ("conv1", "class_embedding", "positional_embedding", "proj")]
    weights += [blocks + m for m in ("attn.in_proj", "attn.out_proj", "mlp.c_fc", "mlp.c_proj")]
    run = {"targets": {"weights": weights}}
    runs = {"base": {"source": {"type": "local", "path": str(root / "base")}, **run}}
    for i in range(n_seeds):
        runs[f"seed{i}"] = {"source": {"type": "local", "path": str(root / f"seed{i}")}, **run}
    return {
        "study": "vit-b16 task vectors",
        "runs": runs,
        "metrics": {"frobenius_norm": {}},
        "task_vectors": {
            "vit_seeds": {
                "base_run": "base",
                "base_step": 0,
                "runs": [f"seed{i}" for i in range(n_seeds)],
                "sample": {"n_samples": n_samples, "seed": 0},
            }
        },
    }


def per_rule(results: Path) -> dict[str, dict]:
    """rule -> jobs, wall seconds (sum, max), peak RSS in MB, from every benchmark TSV."""
    out: dict[str, dict] = defaultdict(lambda: {"jobs": 0, "s_sum": 0.0, "s_max": 0.0, "rss_mb": 0.0})
    for tsv in results.rglob("benchmarks/**/*.tsv"):
        bench = next(p for p in tsv.parents if p.name == "benchmarks")
        rule = tsv.relative_to(bench).parts[0].removesuffix(".tsv")
        with open(tsv) as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                r = out[rule]
                s, rss = float(row["s"]), float(row["max_rss"]) if row["max_rss"] not in ("", "NA", "-") else 0.0
                r["jobs"] += 1
                r["s_sum"] += s
                r["s_max"] = max(r["s_max"], s)
                r["rss_mb"] = max(r["rss_mb"], rss)
    return dict(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="b16")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--samples", type=int, default=4, help="weights sampled from the components")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args(argv)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_vit_"))
    try:
        t0 = time.perf_counter()
        sizes = build(args.shape, args.seeds, work / "data")
        build_s = time.perf_counter() - t0
        project = work / "project"
        project.mkdir(parents=True, exist_ok=True)
        (project / "config.yaml").write_text(json.dumps(config(work / "data", args.seeds, args.samples)))
        t0 = time.perf_counter()
        subprocess.run(
            [SNAKEMAKE, "--snakefile", str(REPO / "workflow" / "Snakefile"), "--configfile", "config.yaml",
             "--cores", str(args.cores), "--quiet", "all"],
            cwd=project, check=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        )  # fmt: skip
        wall = time.perf_counter() - t0
        rules = per_rule(project / "results")
        tv = project / "results" / "task_vectors" / "vit_seeds" / "task_vectors.csv"
        n_layers = len({r["layer"] for r in csv.DictReader(open(tv))})
        print(
            f"{args.shape}: {sizes['checkpoints']} checkpoints × {sizes['mb_per_checkpoint']:.0f} MB float32 "
            f"({sizes['params'] / 1e6:.1f} M parameters), synthetic fine-tunes (built in {build_s:.0f} s); "
            f"{n_layers} layers in the task-vector PCA; workflow wall {wall:.1f} s on {args.cores} cores"
        )
        print("| rule | jobs | wall s (sum) | wall s (max job) | peak RSS MB |")
        print("|---|---|---|---|---|")
        for rule, r in sorted(rules.items(), key=lambda kv: -kv[1]["s_sum"]):
            print(f"| {rule} | {r['jobs']} | {r['s_sum']:.1f} | {r['s_max']:.1f} | {r['rss_mb']:.0f} |")
        if args.json:
            args.json.write_text(json.dumps({"shape": args.shape, **sizes, "wall_s": wall, "rules": rules}, indent=1))
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
