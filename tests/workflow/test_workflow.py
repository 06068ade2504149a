"""The real workflow, end to end, on the shrunken demo config (tests/configs/small.yaml)."""

import shutil
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import yaml
from safetensors.numpy import load_file
from workflow_helpers import DOWNSTREAM, scheduled_jobs, snakemake, step_file

RUNS = {"small": [0, 20, 40, 60], "imported": [0, 20, 40]}
PARTS = {"small": 1, "imported": 2}  # the imported run: a metric part per chunk
CHUNKS = {"small": [[0, 20, 40, 60]], "imported": [[0, 20], [40]]}  # the imported run: 2 per job


def test_every_stage_wrote_its_files(small_project):
    for run, chunks in CHUNKS.items():
        r = small_project / "results" / "runs" / run
        for c, steps in enumerate(chunks):
            for s in steps:
                assert (r / "checkpoints" / f"chunk{c}" / f"step{s}.safetensors").exists()
                for kind in ("similarity_terms", "gradient_stats"):
                    assert (r / "extract" / kind / f"chunk{c}" / f"step{s}.safetensors").exists()
        # nothing stored that the metrics can get otherwise: the weights are read from the
        # checkpoints, and CKA to the final checkpoint needs its terms, not the activations
        assert sorted(p.name for p in (r / "extract").iterdir()) == ["gradient_stats", "similarity_terms"]
        for fam in ("similarity_to_final", "gradient", "weight_spectrum"):
            parts = sorted(p.name for p in (r / "metrics" / fam).glob("*.csv"))
            assert parts == [f"part{i}.csv" for i in range(PARTS[run])]  # a job per family and part
        for f in [
            "metrics.parquet",
            "analysis/pca.csv",
            "analysis/correlation.csv",
            "plots/pca.png",
            "plots/correlation.png",
        ]:
            assert (r / f).stat().st_size > 0, f
        pngs = sorted(p.name for p in (r / "plots" / "trajectories").glob("*.png"))
        assert len(pngs) == 6, pngs
    assert (small_project / "results/runs/small/plots/training.png").exists()
    log = pd.read_csv(small_project / "results/runs/small/train_log.csv")
    assert list(log.columns[:4]) == ["step", "loss", "id_error", "ood_error"]
    assert log["step"].tolist() == list(range(0, 61, 10))


def test_tidy_table_values_match_independent_computations(small_project):
    table = pd.read_parquet(small_project / "results/runs/small/metrics.parquet")
    assert list(table.columns) == ["run", "step", "layer", "metric", "value"]
    assert sorted(table["step"].unique()) == RUNS["small"]
    # Frobenius norm and effective rank against the checkpoint's own tensors, written plainly.
    for step in (0, 60):
        ckpt = load_file(step_file(small_project, "small", "checkpoints", step))
        w = ckpt["blocks.1.attn.v_proj.weight"].astype(np.float64)
        s = np.linalg.svd(w, compute_uv=False)
        p = s / s.sum()
        expected = {
            "frobenius_norm": np.sqrt((w**2).sum()),
            "effective_rank": np.exp(-(p * np.log(p)).sum()),
            "proportional_effective_rank": np.exp(-(p * np.log(p)).sum()) / 16,
        }
        for metric, value in expected.items():
            got = table.query("step == @step and layer == 'blocks.1.attn.v_proj' and metric == @metric")["value"]
            assert got.item() == pytest.approx(value, rel=1e-5), metric
    cka_final = table.query("metric == 'cka_to_final' and step == 60")["value"]
    assert np.allclose(cka_final, 1.0)
    assert (table.query("metric == 'cka_to_final'")["value"].between(0, 1 + 1e-9)).all()


def test_gradients_match_autograd_on_the_probe_batches(small_project):
    """gradient_norm / gradient_cosine recomputed from scratch with torch autograd."""

    from ckptlens.extract.trained_model import load_trained as load_toy

    model, task = load_toy(step_file(small_project, "small", "checkpoints", 20))
    batches = task.probe_batches(3, 8, 7)
    grads = []
    for b in batches:
        model.zero_grad()
        task.loss(model, b).backward()
        grads.append(model.blocks[0].attn.k_proj.weight.grad.detach().double().flatten().numpy().copy())
    norms = [np.linalg.norm(g) for g in grads]
    cos = [grads[i] @ grads[i + 1] / (norms[i] * norms[i + 1]) for i in range(2)]
    table = (
        pd.read_parquet(small_project / "results/runs/small/metrics.parquet")
        .query("step == 20 and layer == 'blocks.0.attn.k_proj'")
        .set_index("metric")["value"]
    )
    assert table["gradient_norm"] == pytest.approx(np.mean(norms), rel=1e-4)
    assert table["gradient_cosine"] == pytest.approx(np.mean(cos), rel=1e-4, abs=1e-6)


def test_cross_metric_analysis_outputs(small_project):
    pca = pd.read_csv(small_project / "results/runs/small/analysis/pca.csv")
    assert set(pca["matrix"]) == {"layer_mean", "layer_metric"}
    for _, g in pca.groupby("matrix"):
        assert g["explained_variance_ratio"].sum() == pytest.approx(1.0, abs=1e-6)
    corr = pd.read_csv(small_project / "results/runs/small/analysis/correlation.csv")
    pairs = set(zip(corr["x_metric"], corr["y_metric"]))
    table = pd.read_parquet(small_project / "results/runs/small/metrics.parquet")
    # the configured pairs, then every metric against each quantity of the training log
    logged = {(m, q) for m in set(table["metric"]) for q in ("train_loss", "id_error", "ood_error")}
    assert pairs == {("cka_to_final", "gradient_cosine"), ("frobenius_norm", "gradient_norm")} | logged
    wide = table.query("layer == 'blocks.0.attn.q_proj'").pivot(index="step", columns="metric", values="value")
    row = corr.query("layer == 'blocks.0.attn.q_proj' and x_metric == 'frobenius_norm' and y_metric == 'gradient_norm'")
    assert row["pearson_r"].item() == pytest.approx(
        np.corrcoef(wide["frobenius_norm"], wide["gradient_norm"])[0, 1], abs=1e-9
    )
    # the loss is logged at the checkpoints' steps here (no interpolation): plain Pearson r of the
    # layer-mean trajectory in correlation.csv, of each layer in correlation_layers.csv
    log = pd.read_csv(small_project / "results/runs/small/train_log.csv").set_index("step")
    norms = table.query("metric == 'frobenius_norm'").pivot(index="step", columns="layer", values="value")
    steps = norms.index.intersection(log.index)
    row = corr.query("layer == 'layer_mean' and x_metric == 'frobenius_norm' and y_metric == 'train_loss'")
    expected = np.corrcoef(norms.loc[steps].mean(axis=1), log.loc[steps, "loss"])[0, 1]
    assert row["pearson_r"].item() == pytest.approx(expected, abs=1e-9)
    layers = pd.read_csv(small_project / "results/runs/small/analysis/correlation_layers.csv")
    row = layers.query("layer == 'blocks.0.attn.q_proj' and x_metric == 'frobenius_norm' and y_metric == 'train_loss'")
    expected = np.corrcoef(norms.loc[steps, "blocks.0.attn.q_proj"], log.loc[steps, "loss"])[0, 1]
    assert row["pearson_r"].item() == pytest.approx(expected, abs=1e-9)


def test_report_has_every_plot(small_project):
    snakemake(small_project, "--report", "report.html")
    html = (small_project / "report.html").read_text(errors="ignore")
    for name in ["training.png", "pca.png", "correlation.png", "trajectory_cka_to_final.png"]:
        assert name in html, name


# --- Rerun only what changed (Snakemake's own dry run decides) -------------------------------


def _config(project) -> dict:
    return yaml.safe_load((project / "config/config.yaml").read_text())


def _dry_run_with(project, cfg: dict, tmp_path) -> list:
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return scheduled_jobs(project, "--configfile", str(path))


def test_nothing_runs_when_nothing_changed(small_project):
    assert scheduled_jobs(small_project) == []


def test_changing_a_metric_parameter_reruns_only_its_family(small_project, tmp_path):
    cfg = _config(small_project)
    cfg["metrics"]["proportional_effective_rank"] = {"r": 8}
    jobs = _dry_run_with(small_project, cfg, tmp_path)
    rules = Counter(r for r, _ in jobs)
    metric_jobs = [wc for r, wc in jobs if r == "metric_family"]
    assert {wc["family"] for wc in metric_jobs} == {"weight_spectrum"}
    assert len(metric_jobs) == sum(PARTS.values())
    assert set(rules) == {"metric_family"} | DOWNSTREAM, rules


def test_one_more_checkpoint_at_the_end_reruns_only_its_chunk(small_project, local_checkpoints):
    """Step 60 added to the imported run: it joins the last chunk ([40] -> [40, 60]), which alone
    is imported and extracted again; the first chunk's jobs do not run. Of the metric jobs, the
    last part's run (its chunk changed), and for the CKA to the final checkpoint, now step 60,
    every chunk's similarity terms and every part."""
    extra = local_checkpoints / "ckpts" / "ckpt_60.safetensors"
    shutil.copy(local_checkpoints / "spare" / "ckpt_60.safetensors", extra)
    try:
        jobs = scheduled_jobs(small_project)
    finally:
        extra.unlink()
    # cka_to_final's terms: every chunk's forwards against the new final step, not the gradients
    similarity = sorted(wc["chunk"] for r, wc in jobs if r == "extract_similarity_imported")
    assert similarity == ["0", "1"], jobs
    per_chunk = [(r, wc) for r, wc in jobs if "chunk" in wc and r != "extract_similarity_imported"]
    # (the per-run extraction rule, extract_model_imported, has the run in its name, not a wildcard)
    assert per_chunk and all(wc["chunk"] == "1" and wc.get("run", "imported") == "imported" for _, wc in per_chunk), (
        jobs
    )
    assert Counter(r for r, _ in per_chunk) == {"materialise_checkpoints": 1, "extract_model_imported": 1}
    metric_jobs = {(wc["run"], wc["family"], wc["part"]) for r, wc in jobs if r == "metric_family"}
    assert metric_jobs == {
        ("imported", "weight_spectrum", "1"),
        ("imported", "gradient", "1"),
        ("imported", "similarity_to_final", "0"),  # cka_to_final: the final step is new
        ("imported", "similarity_to_final", "1"),
    }
    others = {r for r, wc in jobs if "chunk" not in wc and r != "metric_family"}
    assert others == DOWNSTREAM | {"identical_steps"}
    assert {wc.get("run", "imported") for r, wc in jobs} == {"imported"}


def test_editing_one_metric_reruns_only_that_metric(small_project):
    code = small_project / "src/ckptlens/metrics/gradient.py"
    original = code.read_text()
    edited = original.replace('float(lg.get("norm").mean())', 'float(np.mean(lg.get("norm")))')
    assert edited != original
    code.write_text(edited)
    try:
        jobs = scheduled_jobs(small_project)
    finally:
        code.write_text(original)
    metric_jobs = [wc for r, wc in jobs if r == "metric_family"]
    assert {wc["family"] for wc in metric_jobs} == {"gradient"}
    assert len(metric_jobs) == sum(PARTS.values())
    assert {r for r, _ in jobs} == {"metric_family"} | DOWNSTREAM


def test_bad_config_stops_before_any_job(small_project, tmp_path):
    cfg = _config(small_project)
    cfg["metrics"]["no_such_metric"] = {}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    before = sorted(p for p in (small_project / "results").rglob("*"))
    proc = snakemake(small_project, "--cores", "1", "--configfile", str(path), check=False)
    assert proc.returncode != 0
    assert "metrics.no_such_metric" in proc.stderr + proc.stdout
    assert sorted(p for p in (small_project / "results").rglob("*")) == before


def test_editing_the_plotting_code_reruns_only_the_plots(small_project):
    code = small_project / "src/ckptlens/plots/_style.py"
    original = code.read_text()
    code.write_text(original + "\n# a changed figure style\n")
    try:
        jobs = scheduled_jobs(small_project)
    finally:
        code.write_text(original)
    # the report pages too: their interactive explorers draw with the same style (ckptlens.plots.explorer)
    assert {r for r, _ in jobs} == {
        "plot_trajectories",
        "plot_analysis",
        "plot_training",
        "report_tables",
        "report_study",
    }
