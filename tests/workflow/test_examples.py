"""Each shipped study config runs through the real workflow, shrunken (few training steps and
checkpoints; the MiniLM run of the linearity study left out, its data being made by a fine-tuning
step that tests/workflow/test_sources.py covers): every study figure is drawn from data, never as a
"no data" placeholder, and the cross-metric analysis has rows for every run."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import yaml
from workflow_helpers import REPO, copy_project, snakemake


def shrunken(name: str) -> dict:
    cfg = yaml.safe_load((REPO / "examples" / f"{name}.yaml").read_text())
    for run in list(cfg["runs"]):
        source = cfg["runs"][run]["source"]
        if source["type"] not in ("train_toy", "train_mlp"):
            del cfg["runs"][run]
            continue
        source["train"] = {**source["train"], "steps": 60, "save_every": 20, "log_every": 5}
        cfg["runs"][run]["probe"] = {**cfg["runs"][run].get("probe", {}), "n_batches": 2}
    cfg["figures"] = {f: spec for f, spec in cfg.get("figures", {}).items() if set(spec["runs"]) <= set(cfg["runs"])}
    return cfg


@pytest.mark.parametrize("name", ["induction", "two_tasks", "linearity"])
def test_example_study_runs_with_every_figure_from_data(name, tmp_path):
    cfg = shrunken(name)
    project = copy_project(tmp_path / "p")
    (project / "study.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(project, "--cores", "2", "--configfile", "study.yaml")

    assert cfg["figures"], "the study keeps at least one figure"
    for figure in cfg["figures"]:
        assert (project / f"results/figures/{figure}.png").stat().st_size > 0
        log = (project / f"results/figures/logs/{figure}.log").read_text()
        assert "no data" not in log, log
    for run in cfg["runs"]:
        corr = pd.read_csv(project / f"results/runs/{run}/analysis/correlation.csv")
        pairs = {tuple(p) for p in cfg["analysis"]["correlation_pairs"]}
        found = set(zip(corr.x_metric, corr.y_metric))
        assert pairs <= found, run  # every configured pair has a result
        # the rest: each metric against the training log's quantities (ckptlens.analysis.training_log)
        logged = {y for x, y in found - pairs}
        assert logged and logged <= {"train_loss", "id_error", "ood_error"}, (run, logged)
        assert "no data" not in (project / f"results/runs/{run}/logs/plot_analysis.log").read_text()
        dynamics = pd.read_csv(project / f"results/runs/{run}/analysis/dynamics.csv")
        assert set(dynamics.columns) >= {"run", "metric", "layer", "kind", "step"}
    if name == "induction":
        # circuits (head pairs) against CKA (blocks): correlated through the mean-over-layers trajectories
        corr = pd.read_csv(project / "results/runs/unbounded/analysis/correlation.csv")
        assert (corr.query("x_metric == 'cka_to_final'")["layer"] == "layer_mean").all()
    for tv in cfg.get("task_vectors", {}):
        assert "no data" not in (project / f"results/task_vectors/{tv}/logs/plot_task_vectors.log").read_text()


def test_the_llama_example_learns_and_reads_its_trainer_log(tmp_path):
    """examples/llama_gqa.yaml on a shortened series made by its own script (examples/llama/train.py):
    the llama adapter's per-head circuits of a grouped-query model, CKA and the Trainer's loss."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("llama_train", REPO / "examples" / "llama" / "train.py")
    llama_train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(llama_train)
    project = copy_project(tmp_path / "p")
    llama_train.train(project / "data" / "llama_gqa", steps=40, save_every=10)
    snakemake(project, "--cores", "2", "--configfile", str(REPO / "examples" / "llama_gqa.yaml"))

    run = project / "results/runs/llama_gqa"
    table = pd.read_parquet(run / "metrics.parquet")
    assert sorted(table["step"].unique()) == [10, 20, 30, 40]
    heads = {l for l in table["layer"] if re.fullmatch(r"model\.layers\.\d\.self_attn\.head\d\.(ov|qk)", l)}
    assert len(heads) == 2 * 8 * 2  # 2 layers x 8 query heads x (ov, qk)
    assert table.query("metric == 'cka_to_final' and step == 40")["value"].sub(1).abs().max() < 1e-9
    assert table["metric"].str.startswith("qk_ov_overlap_max.k4").any()
    log = pd.read_csv(run / "train_log.csv")
    assert "loss" in log.columns and log["loss"].notna().sum() >= 4  # the Trainer's own log
    assert (run / "plots/training.png").stat().st_size > 0
