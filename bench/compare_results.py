"""Do two versions of ckptlens give the same tables? Runs the demo and every example study of a
checkout in fresh copies, keeps their tables, and compares two such snapshots value by value.

    .venv/bin/python bench/compare_results.py snapshot CHECKOUT OUT [--only demo induction ...]
    .venv/bin/python bench/compare_results.py compare OUT_A OUT_B

A snapshot holds, per study, every tidy table (metrics.parquet) and every analysis, dynamics and
task-vector CSV, named by run whatever the results layout of that version (results/<run>/ or
results/runs/<run>/). The MiniLM studies read fine-tuned checkpoints from --minilm-data (made once
with examples/minilm/finetune.py and shared by both snapshots, so that the comparison is of
ckptlens, not of the fine-tuning). Values are compared exactly (or to ``--atol``), NaN equal to NaN;
rows are matched after sorting, so a different row order is not a difference.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

STUDIES = ("demo", "induction", "two_tasks", "pythia_table", "linearity", "minilm")
FINETUNE = ["--seeds", "0", "1", "2", "--head-seed", "0", "--steps", "60", "--save-every", "10"]
TABLES = (
    "metrics.parquet",
    "analysis/pca.csv",
    "analysis/pca_loadings.csv",
    "analysis/correlation.csv",
    "analysis/dynamics.csv",
    "missing_steps.csv",
)


def _copy_checkout(checkout: Path, dest: Path) -> Path:
    files = subprocess.run(["git", "-C", str(checkout), "ls-files", "-z"], check=True, capture_output=True).stdout
    for rel in files.decode().split("\0"):
        if not rel:
            continue
        src, dst = checkout / rel, dest / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        elif src.is_file():
            shutil.copy2(src, dst)
    return dest


def _config_of(project: Path, study: str) -> list[str]:
    if study == "demo":
        return []
    return ["--configfile", f"examples/{study}.yaml"]


def _collect(results: Path, out: Path) -> int:
    """Copy every table of a results folder to out/<run>/<table>; returns how many."""
    n = 0
    runs_root = results / "runs" if (results / "runs").is_dir() else results
    for run_dir in sorted(p for p in runs_root.iterdir() if p.is_dir()):
        if run_dir.name in ("task_vectors", "figures", "runs", "logs"):
            continue
        for rel in TABLES:
            if (run_dir / rel).is_file():
                dst = out / run_dir.name / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(run_dir / rel, dst)
                n += 1
    for f in sorted((results / "task_vectors").glob("*/*.csv")) if (results / "task_vectors").is_dir() else []:
        dst = out / "task_vectors" / f.parent.name / f.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dst)
        n += 1
    return n


def snapshot(checkout: Path, out: Path, studies, minilm_data: Path | None, cores: str) -> None:
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shared = checkout.parent / "shared"
        if not shared.exists():
            shared = Path(__file__).resolve().parents[2] / "shared"
        if shared.exists():
            os.symlink(shared, tmp / "shared")
        for study in studies:
            project = _copy_checkout(checkout, tmp / study)
            if study in ("linearity", "minilm"):
                if minilm_data is None:
                    raise SystemExit(f"{study}: give --minilm-data (a folder made by examples/minilm/finetune.py)")
                (project / "data").mkdir(exist_ok=True)
                os.symlink(minilm_data.resolve(), project / "data" / "minilm")
            env = {**os.environ, "PYTHONPATH": str(project / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
            proc = subprocess.run(
                [snakemake, "--cores", cores, *_config_of(project, study)],
                cwd=project,
                env=env,
                capture_output=True,
                text=True,
            )
            if proc.returncode:
                raise SystemExit(f"{study} failed in {project}:\n{proc.stderr[-5000:]}")
            n = _collect(project / "results", out / study)
            print(f"{study}: {n} tables")


def _frame(path: Path) -> pd.DataFrame:
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    return df.sort_values(list(df.columns), kind="stable").reset_index(drop=True)


def _same(a: pd.DataFrame, b: pd.DataFrame, atol: float = 0.0) -> str | None:
    if list(a.columns) != list(b.columns):
        return f"columns {list(a.columns)} vs {list(b.columns)}"
    if len(a) != len(b):
        return f"{len(a)} vs {len(b)} rows"
    for c in a.columns:
        x, y = a[c], b[c]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
            xv, yv = x.to_numpy(dtype=float), y.to_numpy(dtype=float)
            bad = ~((np.abs(xv - yv) <= atol) | (np.isnan(xv) & np.isnan(yv)))
            if bad.any():
                i = int(np.argmax(bad))
                worst = float(np.nanmax(np.abs(xv - yv)))
                return (
                    f"column {c}: {int(bad.sum())} values differ (largest |difference| {worst:.1e}), "
                    f"e.g. row {i}: {xv[i]!r} vs {yv[i]!r}"
                )
        elif not (x.astype(str).to_numpy() == y.astype(str).to_numpy()).all():
            return f"column {c}: values differ"
    return None


def compare(a: Path, b: Path, atol: float = 0.0) -> int:
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    problems = [f"only in {a}: {p}" for p in sorted(files_a - files_b)]
    problems += [f"only in {b}: {p}" for p in sorted(files_b - files_a)]
    for rel in sorted(files_a & files_b):
        why = _same(_frame(a / rel), _frame(b / rel), atol)
        if why:
            problems.append(f"{rel}: {why}")
    print(
        f"{len(files_a & files_b)} tables compared ({'exactly' if not atol else f'to {atol:g}'}); "
        f"{len(problems)} difference(s)"
    )
    for p in problems:
        print("  " + p)
    return 1 if problems else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("snapshot")
    s.add_argument("checkout", type=Path)
    s.add_argument("out", type=Path)
    s.add_argument("--only", nargs="*", default=list(STUDIES))
    s.add_argument("--minilm-data", type=Path)
    s.add_argument("--cores", default="2")
    f = sub.add_parser("finetune", help="make the MiniLM checkpoints both snapshots read")
    f.add_argument("checkout", type=Path)
    f.add_argument("out", type=Path)
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--atol", type=float, default=0.0, help="values closer than this count as equal (default: exact)")
    args = ap.parse_args()
    if args.cmd == "snapshot":
        snapshot(args.checkout.resolve(), args.out, args.only, args.minilm_data, args.cores)
    elif args.cmd == "finetune":
        env = {**os.environ, "PYTHONPATH": str(args.checkout.resolve() / "src")}
        subprocess.run(
            [sys.executable, str(args.checkout / "examples/minilm/finetune.py"), "--out", str(args.out), *FINETUNE],
            check=True,
            env=env,
        )
    else:
        sys.exit(compare(args.a, args.b, args.atol))


if __name__ == "__main__":
    main()
