"""Bad input, faults and interruptions, each provoked for real.

- bad checkpoints (zero bytes, header cut, wrong magic, truncated data, corrupt header JSON, a
  pickle carrying code, a truncated torch zip, garbage, a zip named .safetensors, a Git LFS
  pointer) through the real workflow: under ``on_bad_checkpoint: fail`` each one's import job
  fails naming the source file and the reason while ``--keep-going`` finishes every other
  checkpoint; under ``skip`` they become gaps listed in missing_steps.csv and the analysis notes,
  and the good steps' values are exactly those of a run without the bad files;
- SIGKILL of the whole Snakemake process group at eight points (import, digest, identical-steps
  check, streamed weight extraction, model extraction between its two outputs, a metric job with
  another job in flight, aggregation, analysis between its outputs), restarted each time: no
  output of a killed job ever stands under its final name unless Snakemake marks it incomplete,
  and the final results are identical to an uninterrupted run's;
- NaN weights, all-zero weights, a single checkpoint, two identical checkpoints, a probe batch of
  one sample: defined values or NaN with a warning, through the workflow and the library;
- failure records never read as results; config errors and path escapes refused before any job;
  cleanup and stale-temporary removal never delete what ckptlens did not create.

The library-level cases are in the tests of the modules they concern: failure records
(tests/store/test_records.py, test_failures.py), the aggregation policy
(tests/table/test_aggregate_policy.py), interrupted writes (tests/store/test_atomic.py), import and
download records and cleanup (tests/sources/test_importer.py, test_hub.py), degenerate input of
every metric (tests/metrics/test_degenerate_inputs.py), parse-time checks (tests/test_config.py).

Set CKPTLENS_FAULT_REPORT=<file> to collect the fault figures (bench/bench_faults.py does).
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_helpers import SNAKEMAKE, copy_project, snakemake

from tests.helpers import figure

# =============================================================================================
# the real workflow
# =============================================================================================
CONFIG = """
runs:
  lab:
    source: {type: local, path: LOCAL_DIR}
    checkpoints_per_job: 2
    targets:
      weights: ["blocks.*.attn.*"]
      activations: ["blocks.*"]
      gradients: ["blocks.*.attn.q_proj"]
    probe: {batch_size: 4, n_batches: 2, seed: 7}
metrics:
  frobenius_norm: {}
  effective_rank: {}
  cka_to_final: {}
  gradient_norm: {}
"""
TARGETS = ["results/runs/lab/analysis/pca.csv", "results/runs/lab/identical_steps.csv"]
GOOD_STEPS = [0, 20, 40, 60]


@pytest.fixture(scope="module")
def good_checkpoints(tmp_path_factory) -> Path:
    from ckptlens.sources.trained.induction import InductionTaskConfig
    from ckptlens.sources.trained.train import train_induction
    from ckptlens.sources.trained.transformer import ToyModelConfig

    root = tmp_path_factory.mktemp("good")
    train_induction(
        ToyModelConfig(vocab_size=16, d_model=16, n_layers=2, n_heads=2),
        InductionTaskConfig(vocab_size=16, seq_len=16, min_segment=2, max_segment=6, ood_segment=8),
        total_steps=60,
        save_steps=GOOD_STEPS,
        batch_size=16,
        lr=3e-3,
        checkpoint_path=lambda s: root / "ckpts" / f"ckpt_{s}.safetensors",
        log_path=root / "log.csv",
    )
    return root / "ckpts"


def make_project(dest: Path, source: Path, **extra) -> Path:
    project = copy_project(dest)
    cfg = yaml.safe_load(CONFIG.replace("LOCAL_DIR", str(source)))
    cfg.update(extra)
    (project / "config/config.yaml").write_text(yaml.safe_dump(cfg))
    return project


@pytest.fixture(scope="module")
def reference(tmp_path_factory, good_checkpoints) -> Path:
    """An uninterrupted run over the good checkpoints."""
    project = make_project(tmp_path_factory.mktemp("reference"), good_checkpoints)
    snakemake(project, "--cores", "2", *TARGETS)
    return project


def result_files(project: Path, run="lab") -> dict[str, Path]:
    root = project / "results" / "runs" / run
    return {
        str(p.relative_to(root)): p
        for p in root.rglob("*")
        if p.is_file()
        and not {"logs", "benchmarks"} & set(p.relative_to(root).parts)  # a job's log and timings differ per run
        and not p.name.startswith(".")
    }


def same_content(a: Path, b: Path) -> bool:
    if a.suffix == ".parquet":
        try:
            pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b), check_exact=True)
            return True
        except AssertionError:
            return False
    return a.read_bytes() == b.read_bytes()


def assert_identical_results(project: Path, reference: Path):
    got, want = result_files(project), result_files(reference)
    assert sorted(got) == sorted(want)
    different = [k for k in want if not same_content(got[k], want[k])]
    assert not different, different


def incomplete_files(project: Path) -> set[str]:
    """The outputs Snakemake has marked incomplete (its .snakemake/incomplete markers)."""
    d = project / ".snakemake" / "incomplete"
    return {base64.b64decode(p.name).decode() for p in d.iterdir()} if d.is_dir() else set()


def run_until_paused(project: Path, pause_at: str, *args: str, timeout=1800):
    """Start Snakemake (its own process group), let the job writing ``pause_at`` stop right before
    the rename (CKPTLENS_TEST_PAUSE_AT, see ckptlens.store.atomic), then SIGKILL the whole group."""
    sig = project / "paused.signal"
    sig.unlink(missing_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": str(project / "src"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "CKPTLENS_TEST_PAUSE_AT": pause_at,
        "CKPTLENS_TEST_PAUSE_SIGNAL": str(sig),
    }
    log = open(project / "interrupted_run.txt", "w")
    proc = subprocess.Popen(
        [SNAKEMAKE, "--cores", "2", *args],
        cwd=project,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while not sig.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"the run never reached {pause_at}:\n" + (project / "interrupted_run.txt").read_text()[-3000:]
                )
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    return sig.read_text()


# stage, the file whose job is killed right before its rename, the targets of that run (the lab
# run's chunks: [0, 20], [40, 60])
INTERRUPTIONS = [
    (
        "checkpoint import, after one of the chunk's two",
        "checkpoints/chunk0/step20.safetensors",
        ["results/runs/lab/checkpoints/chunk0"],
    ),
    ("weights digests", "digests/chunk1.txt", ["results/runs/lab/digests/chunk1.txt"]),
    ("identical-steps check", "identical_steps.csv", ["results/runs/lab/identical_steps.csv"]),
    (
        "similarity terms (CKA to the final checkpoint), after one of the chunk's two",
        "extract/similarity_terms/chunk1/step60.safetensors",
        ["results/runs/lab/extract/similarity_terms/chunk1"],
    ),
    (
        "model extraction",
        "extract/gradient_stats/chunk0/step0.safetensors",
        ["results/runs/lab/extract/gradient_stats/chunk0"],
    ),
    ("metric job, with the rest of the run in flight", "metrics/similarity_to_final/part0.csv", TARGETS),
    ("aggregation", "metrics.parquet", ["results/runs/lab/metrics.parquet"]),
    ("analysis, after two of its five outputs", "analysis/correlation.csv", TARGETS),
]


def _under_incomplete(rel: str, incomplete: set[str]) -> bool:
    """A file is incomplete if it, or a folder holding it (a chunk's output folder), is marked so."""
    path = f"results/runs/lab/{rel}"
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in incomplete)


def test_sigkill_at_every_stage_then_rerun_gives_identical_results(tmp_path, good_checkpoints, reference):
    project = make_project(tmp_path / "p", good_checkpoints)
    ref = result_files(reference)
    for stage, pause_at, targets in INTERRUPTIONS:
        if stage != INTERRUPTIONS[0][0]:  # what a user runs after a preempted node
            snakemake(project, "--unlock")
        paused = run_until_paused(project, pause_at, "--rerun-incomplete", *targets)
        final = project / paused
        # the killed job's output is not under its final name, only its complete-looking temporary
        assert not final.exists(), stage
        assert list(final.parent.glob(f".{final.name}.*.tmp")), stage
        # anything under a final name is finished (equal to the uninterrupted run's) or marked incomplete
        incomplete = incomplete_files(project)
        for rel, path in result_files(project).items():
            if not _under_incomplete(rel, incomplete):
                assert rel in ref and same_content(path, ref[rel]), (stage, rel)
        if stage.startswith(("checkpoint import", "model extraction", "analysis")):  # written before the kill
            assert incomplete & {
                "results/runs/lab/checkpoints/chunk0",
                "results/runs/lab/extract/gradient_stats/chunk0",
                "results/runs/lab/analysis/pca.csv",
            }, (stage, incomplete)
    snakemake(project, "--unlock")
    # a plain rerun: the default profile sets rerun-incomplete, so incomplete outputs are redone
    snakemake(project, "--cores", "2", *TARGETS)
    assert_identical_results(project, reference)
    assert not list((project / "results").rglob(".*.tmp")) and not list((project / "results").rglob(".*.data"))
    for stage, _, _ in INTERRUPTIONS:
        figure("interruption (SIGKILL of the process group)", stage, "rerun identical to an uninterrupted run")


# ------------------------------------------------------------------------------------ bad inputs
class _Code:
    """Unpickling this would create the marker file (it stands for arbitrary code)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def make_bad_folder(good: Path, dest: Path, marker: Path) -> dict[int, tuple[str, str, str]]:
    """Good checkpoints 20, 40, 60, one with a NaN weight (50), and ten bad files:
    {step: (case, file name, expected reason)}."""
    import torch
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    dest.mkdir()
    for s in (20, 40, 60):
        shutil.copy(good / f"ckpt_{s}.safetensors", dest / f"ckpt_{s}.safetensors")
    raw = (good / "ckpt_20.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = raw[8 : 8 + n].replace(b'"shape":[', b'"shape":{', 1)
    torch.save({"w": torch.zeros(3)}, dest / "tmp.pt")
    zipped = (dest / "tmp.pt").read_bytes()
    (dest / "tmp.pt").unlink()
    cases = {
        0: ("zero-byte file", "ckpt_0.safetensors", b"", "empty file (0 bytes)"),
        5: ("safetensors header cut", "ckpt_5.safetensors", raw[:20], "not a valid safetensors file"),
        10: (
            "wrong magic: an HTML error page",
            "ckpt_10.safetensors",
            b"<!DOCTYPE html><html><body>504 Gateway Time-out</body></html>\n",
            "HTML",
        ),
        15: ("tensor data truncated", "ckpt_15.safetensors", raw[:-100], "not a valid safetensors file"),
        25: (
            "corrupt header JSON",
            "ckpt_25.safetensors",
            raw[:8] + header + raw[8 + n :],
            "not a valid safetensors file",
        ),
        30: ("pickle carrying code", "ckpt_30.pt", None, "refused"),
        35: ("truncated torch zip", "ckpt_35.pt", zipped[: len(zipped) // 2], "corrupt or truncated torch checkpoint"),
        45: ("garbage .bin", "ckpt_45.bin", b"\x80\x02" + bytes(range(256)) * 2, "torch checkpoint"),
        55: ("wrong magic: a torch zip named .safetensors", "ckpt_55.safetensors", zipped, "zip archive"),
        57: (
            "Git LFS pointer instead of the file",
            "ckpt_57.safetensors",
            b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 11432\n",
            "Git LFS pointer",
        ),
    }
    for step, (case, name, data, reason) in cases.items():
        if data is None:
            torch.save({"w": torch.ones(2), "x": _Code(marker)}, dest / name)
        else:
            (dest / name).write_bytes(data)
    tensors = load_file(good / "ckpt_40.safetensors")
    meta = safe_open(str(good / "ckpt_40.safetensors"), framework="numpy").metadata()
    tensors["blocks.1.attn.v_proj.weight"] = tensors["blocks.1.attn.v_proj.weight"].copy()
    tensors["blocks.1.attn.v_proj.weight"][0, 0] = np.nan
    save_file(tensors, str(dest / "ckpt_50.safetensors"), metadata=meta)
    assert not marker.exists()
    return {s: (c, str(dest / name), reason) for s, (c, name, _, reason) in cases.items()}


def scheduled(project, *args) -> list[str]:
    from workflow_helpers import scheduled_jobs

    return sorted(r for r, _ in scheduled_jobs(project, *args))


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory, good_checkpoints, reference):
    """One project over the bad folder, run three times: under fail, switched to skip, switched
    back to fail. Returns what each run did."""
    root = tmp_path_factory.mktemp("bad")
    marker = root / "CODE_RAN"
    bad = make_bad_folder(good_checkpoints, root / "ckpts", marker)
    project = make_project(root / "p", root / "ckpts", on_bad_checkpoint="fail")
    out = {"project": project, "bad": bad, "marker": marker}
    out["fail"] = snakemake(project, "--cores", "2", *TARGETS, check=False)
    from ckptlens.store.tidy import read_rows_csv

    out["fail_records"], out["fail_tables"] = {}, {}
    for fam in ("weight_spectrum", "similarity_to_final", "gradient"):
        records, frame = read_rows_csv(project / f"results/runs/lab/metrics/{fam}/part0.csv")
        out["fail_records"][fam], out["fail_tables"][fam] = records, frame
    out["fail_table"] = (project / "results/runs/lab/metrics.parquet").exists()
    cfg = yaml.safe_load((project / "config/config.yaml").read_text())
    cfg["on_bad_checkpoint"] = "skip"
    (project / "config/config.yaml").write_text(yaml.safe_dump(cfg))
    out["skip_jobs"] = scheduled(project, *TARGETS)
    out["skip"] = snakemake(project, "--cores", "2", *TARGETS, check=False)
    shutil.copytree(project / "results", root / "skip_results")
    out["skip_results"] = root / "skip_results" / "runs" / "lab"
    cfg["on_bad_checkpoint"] = "fail"
    (project / "config/config.yaml").write_text(yaml.safe_dump(cfg))
    out["back_jobs"] = scheduled(project, *TARGETS)
    out["back"] = snakemake(project, "--cores", "2", *TARGETS, check=False)
    return out


def test_bad_checkpoints_fail_the_run_naming_every_file_and_reason_and_nothing_else_is_lost(bad_runs, reference):
    """Under fail every readable checkpoint still goes all the way through (a bad file becomes a
    failure record in its chunk); the run's aggregation then stops, naming every bad file."""
    proc, project, bad = bad_runs["fail"], bad_runs["project"], bad_runs["bad"]
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert text.count("Error in rule aggregate_metrics") == 1 and "Error in rule materialise" not in text
    assert "checkpoint(s) failed and on_bad_checkpoint is 'fail'" in text
    logs = "".join(p.read_text() for p in (project / "results/runs/lab/logs/materialise_checkpoints").glob("*.log"))
    for step, (case, path, reason) in bad.items():
        assert f"step {step}: {path}" in text, case  # the aggregation's error lists it
        assert f"step {step}: bad checkpoint {path}" in logs and reason in logs, case
    assert not bad_runs["marker"].exists()  # the pickle's code never ran
    # every good checkpoint went all the way through; values equal the run without bad files
    ref = pd.read_parquet(reference / "results/runs/lab/metrics.parquet")
    keys = ["step", "layer", "metric"]
    for fam in ("weight_spectrum", "similarity_to_final", "gradient"):
        got = bad_runs["fail_tables"][fam]
        assert sorted(got["step"].unique()) == [20, 40, 50, 60]
        assert sorted(r["step"] for r in bad_runs["fail_records"][fam]) == sorted(bad)
        good = got[got.step.isin([20, 40, 60])]  # (CKA to the final checkpoint: step 60 in both runs)
        merged = good.merge(ref, on=keys, how="left", suffixes=("", "_ref"))
        assert len(merged) == len(good) and (merged["value"] == merged["value_ref"]).all(), fam
    assert not bad_runs["fail_table"]  # the run's aggregation refused to run: no tidy table
    for step, (case, _, _) in bad.items():
        figure(
            "bad checkpoint, on_bad_checkpoint: fail",
            case,
            "recorded in its chunk; every other checkpoint processed; aggregation fails naming the file and reason",
        )


def test_skip_lists_the_gaps_and_analyses_the_rest_with_the_same_values(bad_runs, reference):
    bad, res = bad_runs["bad"], bad_runs["skip_results"]
    assert bad_runs["skip"].returncode == 0, bad_runs["skip"].stderr[-3000:]
    # switching fail -> skip reruns only the aggregation and what follows it: the records are there
    assert bad_runs["skip_jobs"] == ["aggregate_metrics", "cross_metric_analysis"]
    missing = pd.read_csv(res / "missing_steps.csv")
    assert missing["step"].tolist() == sorted(bad)
    for row in missing.itertuples():
        case, path, reason = bad[row.step]
        assert row.file == path and reason in row.reason, case
    table = pd.read_parquet(res / "metrics.parquet")
    assert sorted(table["step"].unique()) == [20, 40, 50, 60]
    want = pd.read_parquet(reference / "results/runs/lab/metrics.parquet")
    keys = ["step", "layer", "metric"]
    merged = table[table.step != 50].merge(want, on=keys, how="outer", suffixes=("", "_ref"), indicator=True)
    merged = merged[merged.step.isin([20, 40, 60])]
    assert (merged["_merge"] == "both").all() and (merged["value"] == merged["value_ref"]).all()
    notes = (res / "analysis" / "notes.txt").read_text()
    for step, (_, path, _) in bad.items():
        assert f"step {step} missing (its checkpoint failed, left out of the analysis): {path}" in notes
    assert pd.read_csv(res / "identical_steps.csv").empty  # failure records are never "identical"
    # NaN weights (step 50): the affected values are NaN with a warning naming run, step and layer;
    # the analysis leaves those columns out and says so
    nan_rows = table[table.value.isna()]
    assert set(nan_rows["step"]) == {50}
    assert ("blocks.1.attn.v_proj", "frobenius_norm") in set(zip(nan_rows.layer, nan_rows.metric))
    log = (res / "logs/metric_family/weight_spectrum/part0.log").read_text()
    assert "run 'lab', step 50, layer 'blocks.1.attn.v_proj': input has NaN/Inf values" in log
    assert "'blocks.1.attn.v_proj|frobenius_norm' dropped: contains NaN/Inf" in notes
    assert pd.read_csv(res / "analysis" / "pca.csv")["explained_variance_ratio"].notna().all()
    for step, (case, _, _) in bad.items():
        figure(
            "bad checkpoint, on_bad_checkpoint: skip",
            case,
            "listed in missing_steps.csv and the notes; good steps identical",
        )
    figure(
        "NaN/Inf (workflow)",
        "one NaN weight in a checkpoint",
        "values NaN with a warning naming run, step, layer; analysis drops and reports the columns",
    )
    assert table.query("step == 50 and layer == 'blocks.1' and metric == 'cka_to_final'")["value"].isna().all()
    log = (res / "logs/metric_family/similarity_to_final/part0.log").read_text()
    assert "run 'lab', step 50, layer 'blocks.1': input has NaN/Inf values" in log
    figure(
        "NaN/Inf (workflow)",
        "NaN activations downstream of it (CKA to final)",
        "values NaN with a warning naming run, step, layer; analysis drops and reports the columns",
    )


def test_switching_back_to_fail_reruns_only_aggregation_which_names_the_missing_steps(bad_runs):
    assert bad_runs["back_jobs"] == ["aggregate_metrics", "cross_metric_analysis"]
    proc = bad_runs["back"]
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "checkpoint(s) failed and on_bad_checkpoint is 'fail'" in text
    for step, (_, path, _) in bad_runs["bad"].items():
        assert f"step {step}: {path}" in text


# ------------------------------------------------------------------------------------ degenerate runs
def test_degenerate_runs_single_checkpoint_identical_checkpoints_zero_layer_one_sample(tmp_path, good_checkpoints):
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    single, twins = tmp_path / "single", tmp_path / "twins"
    single.mkdir(), twins.mkdir()
    tensors = load_file(good_checkpoints / "ckpt_60.safetensors")
    meta = safe_open(str(good_checkpoints / "ckpt_60.safetensors"), framework="numpy").metadata()
    tensors["blocks.0.attn.v_proj.weight"] = np.zeros_like(tensors["blocks.0.attn.v_proj.weight"])  # a dead layer
    save_file(tensors, str(single / "ckpt_60.safetensors"), metadata=meta)
    for s in (0, 1):
        shutil.copy(good_checkpoints / "ckpt_40.safetensors", twins / f"ckpt_{s}.safetensors")
    project = copy_project(tmp_path / "p")
    run = yaml.safe_load(CONFIG)["runs"]["lab"]
    run["probe"] = {"batch_size": 1, "n_batches": 1, "seed": 7}  # one probe sample, one batch
    cfg = {
        "runs": {
            "single": {**run, "source": {"type": "local", "path": str(single)}},
            "twins": {**run, "source": {"type": "local", "path": str(twins)}},
        },
        "metrics": {
            "frobenius_norm": {},
            "effective_rank": {},
            "cka_to_final": {},
            "cka_to_previous": {},
            "update_norm_previous": {},
            "gradient_norm": {},
            "gradient_cosine": {},
        },
    }
    (project / "config/config.yaml").write_text(yaml.safe_dump(cfg))
    targets = [
        f"results/runs/{r}/{f}" for r in ("single", "twins") for f in ("analysis/pca.csv", "identical_steps.csv")
    ]
    snakemake(project, "--cores", "2", *targets)

    one = pd.read_parquet(project / "results/runs/single/metrics.parquet").set_index(["layer", "metric"])["value"]
    assert one[("blocks.0.attn.v_proj", "frobenius_norm")] == 0 and one[("blocks.0.attn.v_proj", "effective_rank")] == 0
    assert np.allclose(one.xs("cka_to_final", level="metric"), 1.0)
    assert not {"cka_to_previous", "update_norm_previous"} & set(one.index.get_level_values("metric"))
    assert one.xs("gradient_cosine", level="metric").isna().all()  # one probe batch: no pair; warned
    log = (project / "results/runs/single/logs/metric_family/gradient/part0.log").read_text()
    assert "run 'single', step 60, layer 'blocks.0.attn.q_proj': metric 'gradient_cosine' is not finite" in log
    notes = (project / "results/runs/single/analysis/notes.txt").read_text()
    assert "no PCA: needs at least 2 steps" in notes
    assert pd.read_csv(project / "results/runs/single/analysis/pca.csv").empty

    two = pd.read_parquet(project / "results/runs/twins/metrics.parquet")
    at1 = two[two.step == 1].set_index(["layer", "metric"])["value"]
    assert (at1.xs("update_norm_previous", level="metric") == 0).all()
    assert np.allclose(at1.xs("cka_to_previous", level="metric"), 1.0)
    assert pd.read_csv(project / "results/runs/twins/identical_steps.csv").values.tolist() == [[1, 0]]
    notes = (project / "results/runs/twins/analysis/notes.txt").read_text()
    assert "constant over steps" in notes  # identical steps: every column constant, reported, no crash
    for case in (
        "a single checkpoint (with an all-zero weight layer)",
        "two identical checkpoints",
        "a probe batch of one sample, one probe batch",
    ):
        figure("degenerate input (workflow)", case, "defined values or NaN with a warning; analysis notes, no crash")


# ------------------------------------------------------------------------------------ config errors
@pytest.mark.parametrize(
    "case, change, key",
    [
        ("on_bad_checkpoint not fail/skip", {"on_bad_checkpoint": "ignore"}, "on_bad_checkpoint"),
        (
            "task-vector name escaping results/ (../../outside)",
            {"task_vectors": {"../../outside": {"base_run": "lab", "runs": ["lab", "lab"]}}},
            "task_vectors",
        ),
        (
            "run name escaping results/ (../x)",
            {"runs": {"../x": {"source": {"type": "local", "path": "/nonexistent"}}}},
            "runs",
        ),
    ],
)
def test_invalid_config_fails_before_any_job_naming_the_key(tmp_path, good_checkpoints, case, change, key):
    project = make_project(tmp_path / "p", good_checkpoints, **change)
    proc = snakemake(project, "--cores", "1", *TARGETS, check=False)
    assert proc.returncode != 0 and f"config key '{key}'" in proc.stdout + proc.stderr
    assert not (project / "results").exists() and not (tmp_path / "outside").exists()
    figure("config error (CLI)", case, "refused before any job, naming the key; nothing written")
