"""The live Pythia study at its authors' model sizes: ckptlens end to end beside a plain loop written
as a careful notebook would, on synthetic Pythia-shaped checkpoint series, in one run.

    .venv/bin/python bench/bench_model_scale.py [--sizes 160m 410m] [--checkpoints 3] [--cores 2]
        [--repeats N] [--similarity with_model|own_jobs] [--work DIR] [--json OUT]

Each series: GPT-NeoX (the real transformers code) at a Pythia model's exact shape, random init,
perturbed per checkpoint, saved by ``save_pretrained`` in float16 as the hub serves Pythia
(``step<N>/`` folders, built once into ``--work`` and reused). Both sides compute the study's
metrics (examples/pythia_hf.yaml): activations of ``attention.query_key_value``,
``attention.dense`` and ``mlp.dense_4h_to_h`` of every layer on probe batch 0, CKA to the final
checkpoint, weight gradients of the LM loss on ``--batches`` probe batches (their norms and the
cosine of consecutive batches) and the Frobenius norm of the target weights.

The loop (``--loop``, run as its own process): per checkpoint, load the model, hook the targets
for one forward on batch 0, then per batch one backward with only the target weights requiring
grad, keeping each gradient's norm and its dot with the previous one; CKA at the end. Nothing is
stored. ckptlens: the packaged workflow on the same folders (``snakemake --cores``).

Printed per size: wall of each side (ckptlens also to its tidy table, metrics.parquet: the values
the loop gives; the rest is its analysis, figures and report), peak RSS (the loop's process; ckptlens' largest job, from
the rules' benchmark files), bytes written besides results (everything under results/runs/<run>
but the tidy table, analysis, plots and logs), the checkpoints' bytes, and the largest
difference of each metric between the two.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
SNAKEMAKE = str(Path(PY).with_name("snakemake"))
#: Pythia's shapes (hidden, layers, heads, MLP width); vocabulary 50304, rotary on 25 % of a head
SHAPES = {
    "tiny": (64, 2, 4, 256),  # a smoke run of the bench itself
    "70m": (512, 6, 8, 2048),
    "160m": (768, 12, 12, 3072),
    "410m": (1024, 24, 16, 4096),
    "1.4b": (2048, 24, 16, 8192),
    "2.8b": (2560, 32, 32, 10240),
}
VOCAB = 50304
MODULES = ["attention.query_key_value", "attention.dense", "mlp.dense_4h_to_h"]
TARGETS = [f"gpt_neox.layers.*.{m}" for m in MODULES]
METRICS = ["cka_to_final", "gradient_cosine", "gradient_norm", "frobenius_norm"]
#: what a run keeps as its results (the rest under results/runs/<run> is intermediate)
RESULTS = ("metrics.parquet", "metrics", "analysis", "plots", "report", "logs", "benchmarks", "missing_steps.csv")


def build_series(size: str, n: int, root: Path) -> Path:
    """``root/<size>/step<1000 i>/`` save_pretrained folders in float16, built once."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    out = root / size
    done = out / ".complete"
    if done.is_file() and done.read_text() == str(n):
        return out
    shutil.rmtree(out, ignore_errors=True)
    hidden, layers, heads, mlp = SHAPES[size]
    cfg = GPTNeoXConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=mlp,
        max_position_embeddings=2048,
        rotary_pct=0.25,
        use_parallel_residual=True,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(cfg).to(torch.float16)
    for i in range(n):
        if i:
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * (0.01 * (p.float().std().item() or 1.0)))
        model.save_pretrained(out / f"step{1000 * i}")
    done.write_text(str(n))
    return out


def probe_file(root: Path, rows: int, seq_len: int) -> Path:
    path = root / f"probe_{rows}x{seq_len}.npy"
    if not path.is_file():
        np.save(path, np.random.default_rng(0).integers(0, VOCAB, size=(rows, seq_len)))
    return path


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


# --------------------------------------------------------------------------- the plain loop
def batches(tokens: np.ndarray, batch_size: int, n_batches: int, seed: int) -> list[np.ndarray]:
    """The probe's batches as ckptlens draws them (disjoint slices of one seeded permutation)."""
    order = np.random.default_rng(seed).permutation(len(tokens))
    return [tokens[order[i * batch_size : (i + 1) * batch_size]] for i in range(n_batches)]


def loop(series: Path, probe: Path, batch_size: int, n_batches: int, out: Path) -> None:
    """The notebook's loop: one process, all cores, streaming, nothing stored."""
    import torch
    from transformers import GPTNeoXForCausalLM

    torch.set_grad_enabled(True)
    steps = sorted(int(p.name[4:]) for p in series.glob("step*") if p.is_dir())
    data = [torch.from_numpy(b) for b in batches(np.load(probe), batch_size, n_batches, 0)]
    acts, values = {}, {m: {} for m in METRICS}
    for step in steps:
        model = GPTNeoXForCausalLM.from_pretrained(series / f"step{step}", dtype=torch.float32).eval()
        names = [n for n, _ in model.named_modules() if any(n.endswith(m) for m in MODULES)]
        modules = dict(model.named_modules())
        for p in model.parameters():
            p.requires_grad_(False)
        weights = {n: modules[n].weight for n in names}
        for n, w in weights.items():
            values["frobenius_norm"][(n, step)] = float(torch.linalg.norm(w.double()))
        got = {}
        hooks = [
            modules[n].register_forward_hook(lambda m, i, o, n=n: got.__setitem__(n, o.detach().flatten(0, 1)))
            for n in names
        ]
        with torch.no_grad():
            model(input_ids=data[0])
        for h in hooks:
            h.remove()
        acts[step] = {n: a.double() for n, a in got.items()}
        for w in weights.values():
            w.requires_grad_(True)
        norms = {n: [] for n in names}
        dots = {n: [] for n in names}
        previous = {}
        for batch in data:
            model.zero_grad(set_to_none=True)
            model(input_ids=batch, labels=batch).loss.backward()
            for n, w in weights.items():
                g = w.grad.double()
                norms[n].append(float(torch.linalg.norm(g)))
                if n in previous:
                    dots[n].append(float((previous[n] * g).sum()))
                previous[n] = g
        for n in names:
            nv = np.array(norms[n])
            values["gradient_norm"][(n, step)] = float(nv.mean())
            values["gradient_cosine"][(n, step)] = float(np.mean(np.array(dots[n]) / (nv[:-1] * nv[1:])))
        del model, weights, previous
    final = acts[steps[-1]]
    for step in steps:
        for n, x in acts[step].items():
            y = final[n]
            x, y = x - x.mean(0), y - y.mean(0)
            cross = torch.linalg.norm(y.T @ x) ** 2
            values["cka_to_final"][(n, step)] = float(cross / (torch.linalg.norm(x.T @ x) * torch.linalg.norm(y.T @ y)))
    rows = [{"metric": m, "layer": n, "step": s, "value": v} for m, per in values.items() for (n, s), v in per.items()]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.write_text(json.dumps({"rows": rows, "peak_rss_mb": peak_mb}))


# --------------------------------------------------------------------------- the two sides
def run_loop(series, probe, args, out) -> dict:
    t0 = time.perf_counter()
    cmd = [PY, __file__, "--loop", str(series), str(probe), str(args.batch_size), str(args.batches), str(out)]
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "peak_rss_mb": json.loads(out.read_text())["peak_rss_mb"]}


def run_ckptlens(series, probe, args, project: Path, repo: Path = REPO) -> dict:
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    run = {
        "source": {"type": "local", "path": str(series)},
        "targets": {"weights": TARGETS, "activations": TARGETS, "gradients": TARGETS},
        "probe": {"tokens": str(probe), "batch_size": args.batch_size, "n_batches": args.batches, "seed": 0},
        # as examples/pythia_hf.yaml: a published series does not grow, so CKA's terms come from the
        # model-extraction job, which loads each checkpoint anyway (--similarity own_jobs: apart)
        "similarity_terms": args.similarity,
    }
    config = {"runs": {"series": run}, "metrics": {m: {} for m in METRICS}}
    (project / "config.yaml").write_text(json.dumps(config))
    t0, started = time.perf_counter(), time.time()
    subprocess.run(
        [SNAKEMAKE, "--snakefile", str(repo / "workflow" / "Snakefile"), "--configfile", "config.yaml",
         "--cores", str(args.cores), "--quiet", "all"],
        cwd=project, check=True, env={**os.environ, "PYTHONPATH": str(repo / "src")},
    )  # fmt: skip
    wall = time.perf_counter() - t0
    results = project / "results" / "runs" / "series"
    # what the loop gives is a table of values: when ckptlens's tidy table was written
    to_table = (results / "metrics.parquet").stat().st_mtime - started
    rss = {}
    for tsv in (results / "benchmarks").rglob("*.tsv"):
        lines = tsv.read_text().splitlines()
        header, row = lines[0].split("\t"), lines[1].split("\t")
        rule = tsv.relative_to(results / "benchmarks").parts[0].removesuffix(".tsv")
        rss[rule] = max(rss.get(rule, 0.0), float(row[header.index("max_rss")]))
    written = {p.name: du(p) for p in results.iterdir() if p.name not in RESULTS and p.is_dir()}
    return {
        "wall_s": wall,
        "to_table_s": to_table,
        "peak_rss_mb": max(rss.values()),
        "rss_per_rule_mb": rss,
        "written_bytes": written,
    }


def compare(project: Path, loop_json: Path) -> dict:
    import pandas as pd

    ours = pd.read_parquet(project / "results" / "runs" / "series" / "metrics.parquet")
    theirs = pd.DataFrame(json.loads(loop_json.read_text())["rows"])
    merged = theirs.merge(ours, on=["metric", "layer", "step"], suffixes=("_loop", ""))
    out = {}
    for metric, g in merged.groupby("metric"):
        rel = np.abs(g["value"] - g["value_loop"]) / np.maximum(np.abs(g["value_loop"]), 1e-30)
        out[metric] = {"rows": len(g), "of": int((theirs["metric"] == metric).sum()), "max_rel_diff": float(rel.max())}
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--loop":
        series, probe, bs, nb, out = sys.argv[2:7]
        loop(Path(series), Path(probe), int(bs), int(nb), Path(out))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["160m", "410m"], choices=sorted(SHAPES))
    ap.add_argument("--checkpoints", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--cores", type=int, default=os.cpu_count())
    ap.add_argument("--similarity", choices=["with_model", "own_jobs"], default="with_model")
    ap.add_argument("--repeats", type=int, default=1, help="run both sides this many times, alternating")
    ap.add_argument("--work", type=Path, default=Path("/tmp/ckptlens-model-scale"))
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--before",
        type=Path,
        help="a checkout of an earlier ckptlens (git worktree add DIR REV): run too, for before/after figures",
    )
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    probe = probe_file(args.work, args.batch_size * args.batches, args.seq_len)
    report = {}
    for size in args.sizes:
        series = build_series(size, args.checkpoints, args.work / "series")
        checkpoint_bytes = du(series)
        loop_json = args.work / f"loop_{size}.json"
        ratios = []
        for _ in range(args.repeats):  # alternating sides: the machine's drift hits both alike
            mine = run_ckptlens(series, probe, args, args.work / f"project_{size}")
            theirs = run_loop(series, probe, args, loop_json)
            ratios.append((mine["wall_s"], theirs["wall_s"], mine["to_table_s"]))
        diffs = compare(args.work / f"project_{size}", loop_json)
        written = sum(mine["written_bytes"].values())
        report[size] = {
            "ckptlens": mine,
            "loop": theirs,
            "walls": ratios,
            "checkpoint_bytes": checkpoint_bytes,
            "values": diffs,
        }
        if args.before:
            before = run_ckptlens(series, probe, args, args.work / f"before_{size}", args.before.resolve())
            report[size]["before"] = before
        print(f"\n== Pythia-{size} shape, {args.checkpoints} checkpoints ({checkpoint_bytes / 1e9:.2f} GB), "
              f"probe {args.batch_size}x{args.seq_len}, {args.batches} gradient batches, {args.cores} cores")  # fmt: skip
        for ours, loop_s, table_s in ratios:
            print(f"  wall          ckptlens {ours:7.1f} s   loop {loop_s:7.1f} s   ratio {ours / loop_s:.2f}   "
                  f"(to the tidy table {table_s:.1f} s, ratio {table_s / loop_s:.2f})")  # fmt: skip
        if len(ratios) > 1:
            print(f"  wall ratio, median of {len(ratios)} alternating runs: "
                  f"{float(np.median([o / t for o, t, _ in ratios])):.2f} end to end, "
                  f"{float(np.median([x / t for _, t, x in ratios])):.2f} to the tidy table")  # fmt: skip
        print(f"  peak RSS      ckptlens {mine['peak_rss_mb']:7.0f} MB  loop {theirs['peak_rss_mb']:7.0f} MB  "
              f"ratio {mine['peak_rss_mb'] / theirs['peak_rss_mb']:.2f}")  # fmt: skip
        print(f"  written besides results: {written / 1e6:.1f} MB = {100 * written / checkpoint_bytes:.1f} % of the "
              f"checkpoints ({', '.join(f'{k} {v / 1e6:.1f} MB' for k, v in mine['written_bytes'].items())})")  # fmt: skip
        print(
            "  per rule peak RSS (MB): " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(mine["rss_per_rule_mb"].items()))
        )
        if args.before:
            b = report[size]["before"]
            b_written = sum(b["written_bytes"].values())
            print(f"  before ({args.before}): wall {b['wall_s']:.1f} s (ratio to the loop "
                  f"{b['wall_s'] / theirs['wall_s']:.2f}), peak RSS {b['peak_rss_mb']:.0f} MB, written "
                  f"{b_written / 1e6:.1f} MB = {100 * b_written / checkpoint_bytes:.1f} %")  # fmt: skip
        for metric, d in diffs.items():
            print(f"  {metric:16s} {d['rows']}/{d['of']} values, largest relative difference {d['max_rel_diff']:.1e}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
