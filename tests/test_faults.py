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

Set CKPTLENS_FAULT_REPORT=<file> to collect the fault figures (bench/bench_faults.py does).
"""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
import signal
import subprocess
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_helpers import SNAKEMAKE, copy_project, snakemake

from ckptlens import metrics as M
from ckptlens.sources.importer import import_or_record
from ckptlens.sources.readers import CheckpointError, open_checkpoint
from ckptlens.store.atomic import atomic_path, remove_stale_temporaries
from ckptlens.store.failures import checkpoint_record, pass_on, write_checkpoint_record
from ckptlens.store.records import FailureRecordError, make_record
from ckptlens.store.tensors import TensorFile
from ckptlens.store.tidy import table_record, write_table_record
from ckptlens.table.aggregate import MissingStepsError, collect_run_tables


def figure(category: str, case: str, outcome: str) -> None:
    """One row of the fault figures (written only once the case's checks have passed)."""
    path = os.environ.get("CKPTLENS_FAULT_REPORT")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"category": category, "case": case, "outcome": outcome}) + "\n")


# =============================================================================================
# library level (fast)
# =============================================================================================
def _tiny_checkpoint(path, value=1.0):
    from safetensors.numpy import save_file

    save_file({"a.weight": np.full((3, 2), value, np.float32)}, str(path))
    return path


def test_a_failure_record_is_never_read_as_a_result(tmp_path):
    rec = make_record("/data/ckpt_40.safetensors", "empty file (0 bytes)", 40)
    write_checkpoint_record(tmp_path / "step40.safetensors", rec)
    assert checkpoint_record(tmp_path / "step40.safetensors") == rec
    with pytest.raises(CheckpointError, match=r"failure record of step 40 \(/data/ckpt_40.safetensors: empty file"):
        open_checkpoint(tmp_path / "step40.safetensors")
    with pytest.raises(FailureRecordError, match="ckpt_40"):
        TensorFile(tmp_path / "step40.safetensors")
    assert checkpoint_record(_tiny_checkpoint(tmp_path / "real.safetensors")) is None

    write_table_record(tmp_path / "step40.csv", rec)
    assert table_record(tmp_path / "step40.csv") == rec
    naive = pd.read_csv(tmp_path / "step40.csv")  # a reader that knows nothing of records
    assert not {"run", "step", "metric", "value"} & set(naive.columns)
    figure("failure record", "never read as a result (checkpoint, extraction, metric table)", "refused with the reason")


def test_aggregation_policy_fail_or_list_the_gaps(tmp_path):
    good = tmp_path / "good.csv"
    pd.DataFrame([{"run": "r", "step": 0, "layer": "l", "metric": "m", "value": 1.5}]).to_csv(good, index=False)
    bad = tmp_path / "bad.csv"
    write_table_record(bad, make_record("/d/ckpt_5.pt", "refused — needs posix", 5))
    with pytest.raises(MissingStepsError, match=r"step 5: /d/ckpt_5.pt: refused"):
        collect_run_tables([good, bad], "fail")
    table, missing = collect_run_tables([good, bad, bad], "skip")
    assert table["step"].tolist() == [0]
    assert missing.to_dict("records") == [{"step": 5, "file": "/d/ckpt_5.pt", "reason": "refused — needs posix"}]
    with pytest.raises(MissingStepsError, match="every checkpoint failed"):
        collect_run_tables([bad], "skip")
    with pytest.raises(ValueError, match="on_bad_checkpoint"):
        collect_run_tables([good], "ignore")


def test_import_records_only_bad_checkpoints(tmp_path, monkeypatch):
    empty = tmp_path / "ckpt_3.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=f"{empty}: empty file"):
        open_checkpoint(empty)
    with pytest.warns(RuntimeWarning, match="step 3: bad checkpoint"):
        rec = import_or_record(empty, tmp_path / "out" / "b.safetensors", step=3)
    assert rec == {"step": 3, "file": str(empty), "reason": "empty file (0 bytes) — an interrupted download or save?"}
    assert checkpoint_record(tmp_path / "out" / "b.safetensors") == rec
    # a good file is imported (with its source path in the header)
    good = _tiny_checkpoint(tmp_path / "ckpt_4.safetensors")
    assert import_or_record(good, tmp_path / "out" / "c.safetensors", step=4) is None
    with open_checkpoint(tmp_path / "out" / "c.safetensors") as ckpt:
        assert ckpt.metadata["ckptlens_source"] == str(good) and ckpt.keys == ["a.weight"]
    # our own failure (memory, a bug) is never written down as a bad checkpoint
    import ckptlens.sources.importer as importer

    def boom(src, dst):
        raise MemoryError("out of memory")

    monkeypatch.setattr(importer, "import_checkpoint", boom)
    with pytest.raises(MemoryError):
        import_or_record(good, tmp_path / "out" / "d.safetensors", step=4)
    assert not (tmp_path / "out" / "d.safetensors").exists()


def test_records_pass_through_extraction_and_references_become_nan(tmp_path):
    rec = make_record("/d/ckpt_60.safetensors", "not a valid safetensors file", 60)
    write_checkpoint_record(tmp_path / "ckpt.safetensors", rec)
    outs = [tmp_path / "acts.safetensors", tmp_path / "grads.safetensors", tmp_path / "digest.txt"]
    assert pass_on([tmp_path / "ckpt.safetensors"], outs) == rec
    assert checkpoint_record(outs[0]) == rec == checkpoint_record(outs[1]) and table_record(outs[2]) == rec
    real = _tiny_checkpoint(tmp_path / "real.safetensors")
    assert pass_on([real], [tmp_path / "never.safetensors"]) is None and not (tmp_path / "never.safetensors").exists()

    # a metric job whose final reference failed: NaN for what compares with it, one warning
    x = np.random.default_rng(0).standard_normal((12, 4))
    with pytest.warns(RuntimeWarning, match=r"run 'r', step 20: the final reference is unavailable \(step 60 failed"):
        rows = M.compute_family(
            "activation_similarity",
            {"cka_to_final": {}, "cka_to_previous": {}},
            {"l0": x, "l1": x},
            {
                "final": M.Unavailable("step 60 failed: /d/ckpt_60.safetensors: not valid"),
                "previous": {"l0": x, "l1": x},
            },
            run="r",
            step=20,
        )
    got = {(r["layer"], r["metric"]): r["value"] for r in rows}
    assert math.isnan(got[("l0", "cka_to_final")]) and math.isnan(got[("l1", "cka_to_final")])
    assert got[("l0", "cka_to_previous")] == pytest.approx(1.0)


def test_a_bad_hugging_face_revision_is_recorded_but_a_failed_download_is_not(tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    from ckptlens.sources.hub import RevisionError, fetch_or_record

    def fake(repo_id, revision=None, local_dir=None, **_):
        if revision == "offline":
            raise OSError("Temporary failure in name resolution")
        (Path(local_dir) / "config.json").write_text('{"model_type": "gpt_neox"}')
        (Path(local_dir) / "model.safetensors").write_bytes(b"")  # a truncated upload
        return local_dir

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    monkeypatch.setattr("ckptlens.sources.hub.DOWNLOAD_BACKOFF_S", 0.0)
    dl = tmp_path / "downloads" / "step8"
    with pytest.warns(RuntimeWarning, match="bad checkpoint org/m@step8"):
        rec = fetch_or_record("org/m", "step8", tmp_path / "b.safetensors", dl, step=8)
    assert rec["file"] == "org/m@step8" and "empty file" in rec["reason"]
    assert checkpoint_record(tmp_path / "b.safetensors") == rec and not dl.exists()  # our download removed
    with pytest.raises(RevisionError, match="download failed"):  # the network is not a bad checkpoint
        fetch_or_record("org/m", "offline", tmp_path / "c.safetensors", tmp_path / "dl2", step=9)
    assert not (tmp_path / "c.safetensors").exists()


def test_a_later_job_error_names_the_source_file(tmp_path):
    from ckptlens.sources.importer import import_checkpoint
    from ckptlens.store.failures import naming_source

    src = _tiny_checkpoint(tmp_path / "ckpt_7.safetensors")
    copy = tmp_path / "results" / "step7.safetensors"
    import_checkpoint(src, copy)
    with pytest.raises(KeyError) as err:
        with naming_source(copy):
            raise KeyError("blocks.0.attn.q_proj.weight")
    assert f"while reading the checkpoint {copy}, imported from {src}" in err.value.__notes__


def test_interrupted_write_leaves_nothing_under_the_final_name(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    # leftovers of a SIGKILLed writer (dead pid) are removed by the next writer of the same file;
    # a live process's temporary and unrelated dot-files are left alone
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = [tmp_path / f".out.csv.{dead.pid}.tmp", tmp_path / f".out.csv.{dead.pid}.data"]
    live = tmp_path / f".out.csv.{os.getppid()}.tmp"
    other = [tmp_path / ".out.csv.notes", tmp_path / ".other.csv.123.tmp", tmp_path / "keep.txt"]
    for p in stale + [live] + other:
        p.write_text("x")
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole"
    assert not any(p.exists() for p in stale) and live.exists() and all(p.exists() for p in other)
    assert remove_stale_temporaries(target) == []


def test_cleanup_never_deletes_what_it_did_not_create(tmp_path):
    from ckptlens.sources.hub import MARKER, _write_marker, cleanup

    precious = tmp_path / "user" / "precious.bin"
    precious.parent.mkdir()
    precious.write_text("mine")
    ours = tmp_path / "downloads" / "step5"
    ours.mkdir(parents=True)
    _write_marker(ours, "m", "step5")
    (ours / "link_to_user_file").symlink_to(precious)
    (ours / "link_to_user_dir").symlink_to(precious.parent, target_is_directory=True)
    link = tmp_path / "link_to_ours"
    link.symlink_to(ours, target_is_directory=True)
    with pytest.warns(UserWarning, match="not deleted"):
        assert cleanup(link) is False  # a link to a download folder: refused
    assert ours.exists()
    assert cleanup(ours) is True and not ours.exists()
    assert precious.read_text() == "mine"  # links inside were removed, not followed
    user = tmp_path / "user"
    (user / MARKER).symlink_to(tmp_path / "nowhere")  # a marker that is a link does not count
    with pytest.warns(UserWarning, match="not deleted"):
        assert cleanup(user) is False
    assert precious.exists()
    figure(
        "disk",
        "download cleanup: links to user files, a link to our folder, a forged marker",
        "nothing of the user's deleted",
    )


def test_parse_time_checks_skip_a_corrupt_first_checkpoint(tmp_path):
    from ckptlens.config import ConfigError, layer_names

    (tmp_path / "ckpt_0.safetensors").write_bytes(b"")
    (tmp_path / "ckpt_1.safetensors").write_bytes(b"<html>404</html>")
    cfg = {"runs": {"r": {"source": {"type": "local", "path": str(tmp_path)}}}, "metrics": {"frobenius_norm": {}}}
    with pytest.raises(ConfigError, match=r"config key 'runs.r.source.path': no checkpoint can be read"):
        layer_names(cfg, "r")
    _tiny_checkpoint(tmp_path / "ckpt_2.safetensors")
    assert layer_names(cfg, "r")["weights"] == ["a"]  # the bad files are their own jobs' business


# --------------------------------------------------------------------- degenerate inputs, library
WEIGHT_METRICS = {
    "weight_spectrum": [
        "frobenius_norm",
        "spectral_norm",
        "stable_rank",
        "effective_rank",
        "proportional_effective_rank",
        "screenot_rank",
    ],
    "weight_update": [
        "update_norm_previous",
        "update_norm_initial",
        "relative_update_norm_previous",
        "relative_update_norm_initial",
        "update_cosine",
    ],
}
ACT_METRICS = {
    "activation_similarity": ["cka_to_final", "cka_to_previous", "cka_to_initial"],
    "activation_spectrum": ["activation_norm", "activation_pca_evr"],
    "activation_pairs": [
        "linearity_score",
        "linearity_score_no_residual",
        "linearity_per_sample",
        "consecutive_cosine",
    ],
}


def _circuits(rng, zero=False):
    w = {"embed": rng.standard_normal((10, 8))}
    for L in range(2):
        for h in range(2):
            for kind in ("qk", "ov"):
                w[f"blocks.{L}.attn.head{h}.{kind}"] = np.zeros((8, 8)) if zero else rng.standard_normal((8, 8))
    return w


def _run_all(family, names, current, refs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = M.compute_family(family, {n: {} for n in names}, current, refs, run="deg", step=7)
    return rows, [str(w.message) for w in caught]


def _defined_or_warned(rows, messages):
    assert rows
    for r in rows:
        if math.isnan(r["value"]):
            assert any(repr(r["layer"]) in m and "step 7" in m for m in messages), (r, messages)
        else:
            assert math.isfinite(r["value"]), r


DEGENERATE = [
    "all-zero weights",
    "constant activation column",
    "probe batch of one sample",
    "two identical checkpoints",
    "a single checkpoint",
]


@pytest.mark.parametrize("case", DEGENERATE)
def test_every_metric_on_degenerate_input_is_defined_or_nan_with_warning(case):
    rng = np.random.default_rng(1)
    n = 1 if case == "probe batch of one sample" else 24
    acts = {f"blocks.{i}": rng.standard_normal((n, 6)) for i in range(3)}
    weights = _circuits(rng, zero=case == "all-zero weights")
    if case == "constant activation column":
        for a in acts.values():
            a[:, 2] = 3.0
    grads = {"w": rng.standard_normal((1 if n == 1 else 3, 4, 5))}
    agrads = {"m|out0": rng.standard_normal((n, 6)), "m|out1": rng.standard_normal((n, 6))}
    if case == "a single checkpoint":  # final and initial are the checkpoint itself, no previous
        wref, aref = {"final": weights, "initial": weights}, {"final": acts, "initial": acts}
    else:  # identical checkpoints: every reference holds the same values
        other = _circuits(np.random.default_rng(2), zero=case == "all-zero weights")
        same = case == "two identical checkpoints"
        wref = {r: weights if same else other for r in ("final", "previous", "previous2", "initial")}
        aref = {r: acts if same else {k: v + 1.0 for k, v in acts.items()} for r in ("final", "previous", "initial")}
    results = {}
    for family, names in WEIGHT_METRICS.items():
        results[family] = _run_all(family, names, weights, wref)
    results["circuits"] = _run_all(
        "circuits", ["qk_ov_overlap_max", "qk_ov_diag_zscore", "embed_ov_overlap_max"], weights, {}
    )
    for family, names in ACT_METRICS.items():
        results[family] = _run_all(family, names, acts, aref)
    results["gradient"] = _run_all("gradient", ["gradient_norm", "gradient_cosine"], grads, {})
    results["gradient_pca"] = _run_all("gradient_pca", ["gradient_pca_evr", "gradient_pca_cosine"], agrads, {})
    for family, (rows, messages) in results.items():
        _defined_or_warned(rows, messages)
    v = {(r["layer"], r["metric"]): r["value"] for rows, _ in results.values() for r in rows}
    layer = "blocks.1.attn.head0.ov"
    if case == "all-zero weights":
        assert (
            v[(layer, "frobenius_norm")] == 0 and v[(layer, "effective_rank")] == 0 and v[(layer, "stable_rank")] == 0
        )
        assert v[(layer, "update_norm_previous")] == 0 and v[(layer, "update_cosine")] == 0
    if case == "two identical checkpoints":
        assert v[(layer, "update_norm_previous")] == 0 and v[(layer, "relative_update_norm_initial")] == 0
        assert v[("blocks.1", "cka_to_previous")] == pytest.approx(1.0)
    if case == "a single checkpoint":
        assert v[("blocks.1", "cka_to_final")] == pytest.approx(1.0) and v[(layer, "update_norm_initial")] == 0
        assert not any(m == "cka_to_previous" for _, m in v)  # no previous checkpoint: no value at all
    if case == "probe batch of one sample":
        assert math.isnan(v[("blocks.1", "cka_to_final")])  # one centred sample is zero: undefined, warned
        assert math.isnan(v[("w", "gradient_cosine")])  # one probe batch: no pair to compare
    if case == "constant activation column":  # a constant feature centres to zero: it changes nothing
        plain = {k: np.delete(a, 2, axis=1) for k, a in acts.items()}
        rows, _ = _run_all(
            "activation_similarity", ["cka_to_final"], acts, {"final": {k: a * 2 for k, a in plain.items()}}
        )
        assert rows[1]["value"] == pytest.approx(1.0)
    figure("degenerate input", case, "defined values, or NaN with a warning naming run, step, layer")


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
        "weight extraction (streamed)",
        "extract/weights/chunk1/step60.safetensors",
        ["results/runs/lab/extract/weights/chunk1"],
    ),
    (
        "model extraction, between its two outputs",
        "extract/gradients/chunk0/step0.safetensors",
        ["results/runs/lab/extract/gradients/chunk0"],
    ),
    ("metric job, with the rest of the run in flight", "metrics/activation_similarity/part0.csv", TARGETS),
    ("aggregation", "metrics.parquet", ["results/runs/lab/metrics.parquet"]),
    ("analysis, after two of its five outputs", "analysis/correlation.csv", TARGETS),
]


def _under_incomplete(rel: str, incomplete: set[str]) -> bool:
    """A file is incomplete if it, or a folder holding it (a chunk's output folder), is marked so."""
    path = f"results/runs/lab/{rel}"
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in incomplete)


@pytest.mark.slow
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
                "results/runs/lab/extract/activations/chunk0",
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
    for fam in ("weight_spectrum", "activation_similarity", "gradient"):
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


@pytest.mark.slow
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
    for fam in ("weight_spectrum", "activation_similarity", "gradient"):
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


@pytest.mark.slow
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
    log = (res / "logs/metric_family/activation_similarity/part0.log").read_text()
    assert "run 'lab', step 50, layer 'blocks.1': input has NaN/Inf values" in log
    figure(
        "NaN/Inf (workflow)",
        "NaN activations downstream of it (CKA to final)",
        "values NaN with a warning naming run, step, layer; analysis drops and reports the columns",
    )


@pytest.mark.slow
def test_switching_back_to_fail_reruns_only_aggregation_which_names_the_missing_steps(bad_runs):
    assert bad_runs["back_jobs"] == ["aggregate_metrics", "cross_metric_analysis"]
    proc = bad_runs["back"]
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "checkpoint(s) failed and on_bad_checkpoint is 'fail'" in text
    for step, (_, path, _) in bad_runs["bad"].items():
        assert f"step {step}: {path}" in text


# ------------------------------------------------------------------------------------ degenerate runs
@pytest.mark.slow
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
@pytest.mark.slow
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
