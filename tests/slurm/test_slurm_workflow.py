"""The real workflow on a live one-node SLURM cluster (see conftest.py): every result equals the
local run's, GPU-tagged rules are submitted with a GPU request, the per-checkpoint numpy jobs are
bundled, and a changed metric parameter resubmits only that family's jobs and what follows."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_helpers import DOWNSTREAM, REPO, copy_project, snakemake

pytestmark = pytest.mark.slow

GPU_RULES = {"train_small", "extract_model_small", "extract_similarity_small"}


def _config() -> dict:
    cfg = yaml.safe_load((REPO / "tests/configs/small.yaml").read_text())
    del cfg["runs"]["imported"]  # the trained run alone: every stage, no local files needed
    # one checkpoint per job, as a multi-GB model's run has (a small one's would be one job per
    # stage): the shape of run that the bundling is for
    cfg["runs"]["small"]["checkpoints_per_job"] = 1
    return cfg


def _results(project) -> dict[str, pd.DataFrame]:
    r = project / "results/runs/small"
    out = {"metrics.parquet": pd.read_parquet(r / "metrics.parquet")}
    for csv in sorted(r.glob("analysis/*.csv")) + sorted(r.glob("metrics/*/*.csv")) + [r / "train_log.csv"]:
        out[str(csv.relative_to(r))] = pd.read_csv(csv)
    return out


def _scheduled_rules(output: str) -> Counter:
    return Counter(m for m in re.findall(r"^\s*(?:local)?rule (\w+):", output, re.M) if m != "all")


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    project = copy_project(tmp_path_factory.mktemp("local"))
    (project / "config/config.yaml").write_text(yaml.safe_dump(_config()))
    snakemake(project, "--cores", "2")
    return project


def test_cluster_run_matches_local_then_reruns_only_what_changed(slurm_cluster, local_run, tmp_path):
    project = copy_project(tmp_path / "cluster")
    (project / "config/config.yaml").write_text(yaml.safe_dump(_config()))
    env = {"PYTHONPATH": str(project / "src")}
    run = slurm_cluster.run_snakemake(project / "workflow/Snakefile", project, "--cores", "2", env=env).check()

    # every result file exists and holds the local run's values (CPU training is deterministic)
    local, cluster = _results(local_run), _results(project)
    assert local.keys() == cluster.keys()
    for name, df in local.items():
        other = cluster[name]
        if name == "train_log.csv":
            df, other = df.drop(columns="seconds"), other.drop(columns="seconds")
        pd.testing.assert_frame_equal(df, other, check_exact=False, rtol=1e-12, obj=name)
    for png in ["plots/training.png", "plots/pca.png", "plots/correlation.png"]:
        assert (project / "results/runs/small" / png).stat().st_size > 0

    # GPU-tagged rules were submitted with a GPU request, the others without
    jobs = slurm_cluster.jobs(run.slurm_job_ids)
    assert {j.rule for j in jobs if j.gpus} == GPU_RULES
    assert all(not j.gpus for j in jobs if j.rule not in GPU_RULES)
    assert all(j.state == "COMPLETED" for j in jobs)

    # bundling: the 3 metric jobs (one per family, all 4 checkpoints in one part; the weights read
    # from the checkpoints, so no per-checkpoint weight extraction is left to bundle) travel in one
    # group submission
    executed = _scheduled_rules(run.output)
    n_jobs = sum(executed.values())
    assert executed["metric_family"] == 3 and "extract_weights" not in executed
    assert executed["extract_model_small"] == 4 and executed["extract_similarity_small"] == 4
    grouped = [j for j in jobs if j.rule.startswith("group") or "per_checkpoint" in j.comment]
    assert grouped, [j.comment for j in jobs]
    assert len(jobs) <= n_jobs - 2, f"{len(jobs)} submissions for {n_jobs} jobs"
    print(f"\nSLURM: {n_jobs} jobs in {len(jobs)} sbatch submissions (bundled: {len(grouped)})")

    # rerun on the cluster: one metric parameter changed -> only its family's jobs + downstream
    cfg = _config()
    cfg["metrics"]["proportional_effective_rank"] = {"r": 8}
    (project / "changed.yaml").write_text(yaml.safe_dump(cfg))
    rerun = slurm_cluster.run_snakemake(
        project / "workflow/Snakefile", project, "--cores", "2", "--configfile", "changed.yaml", env=env
    ).check()
    rules = _scheduled_rules(rerun.output)
    assert set(rules) == {"metric_family"} | DOWNSTREAM
    assert rules["metric_family"] == 1
    assert set(re.findall(r"family=(\w+)", rerun.output)) == {"weight_spectrum"}
    resubmitted = slurm_cluster.jobs(rerun.slurm_job_ids)
    assert not any(j.gpus for j in resubmitted), "no GPU (training/extraction) job may be resubmitted"
    per = pd.read_parquet(project / "results/runs/small/metrics.parquet").query(
        "metric == 'proportional_effective_rank'"
    )
    er = pd.read_parquet(project / "results/runs/small/metrics.parquet").query("metric == 'effective_rank'")
    assert np.allclose(
        per.sort_values(["layer", "step"])["value"].to_numpy(),
        er.sort_values(["layer", "step"])["value"].to_numpy() / 8,
    )
