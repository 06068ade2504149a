"""Snakemake's SLURM executor on a real one-node cluster (.ci/slurm-cluster.sh).

Runs tests/slurm/smoke/Snakefile with `--workflow-profile workflow/profiles/slurm`
and checks: every output exists, each rule was one sbatch submission that
slurmctld completed, the `resources: gpu=1` rule was submitted with a GPU
request (and got one), the others without, and a rerun submits nothing.
Skips where no cluster can be had (see conftest.py).
"""

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SMOKE = HERE / "smoke" / "Snakefile"
GROUPED = HERE / "grouped" / "Snakefile"

pytestmark = pytest.mark.slow


def test_smoke_workflow_runs_on_slurm_with_gpu_request(slurm_cluster, tmp_path):
    run = slurm_cluster.run_snakemake(SMOKE, tmp_path).check()

    for name in ("prepared.txt", "gpu.txt", "summary.txt"):
        assert (tmp_path / "out" / name).is_file(), name

    ids = run.slurm_job_ids
    assert len(ids) == 3, f"expected 3 sbatch submissions, got {ids}"
    jobs = {j.rule: j for j in slurm_cluster.jobs(ids)}
    assert set(jobs) == {"prepare", "gpu_step", "summarize"}, jobs
    for job in jobs.values():
        assert job.state == "COMPLETED", (job.job_id, job.fields)

    # submitted with a GPU request (sbatch --gpus=1 -> TresPerJob=gres:gpu:1) ...
    assert "gpu:1" in jobs["gpu_step"].gpus, jobs["gpu_step"].fields
    assert jobs["prepare"].gpus == "" and jobs["summarize"].gpus == ""
    # ... and SLURM really allocated the (fake) GPU to it
    gpu_out = (tmp_path / "out" / "gpu.txt").read_text()
    assert f"job={jobs['gpu_step'].job_id} " in gpu_out
    assert "CUDA_VISIBLE_DEVICES=unset" not in gpu_out, gpu_out
    # every job ran inside SLURM, not locally
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "job=none" not in summary, summary

    # nothing changed: a rerun submits nothing
    rerun = slurm_cluster.run_snakemake(SMOKE, tmp_path).check()
    assert rerun.slurm_job_ids == [], rerun.output[-3000:]


def test_group_components_bundle_submissions(slurm_cluster, tmp_path):
    """12 jobs of a grouped rule go out as 3 sbatch calls with small=4.

    `--cores N` caps what one group job requests (N <= the node's CPUs); without
    it the group asks for 4 CPUs and, on a 2-CPU node, stays pending
    (Reason=PartitionConfig) forever.
    """
    cores = min(2, slurm_cluster.node_cpus)
    run = slurm_cluster.run_snakemake(
        GROUPED,
        tmp_path,
        "--group-components",
        "small=4",
        "--cores",
        str(cores),
    ).check()
    assert len(list((tmp_path / "out").glob("small_*.txt"))) == 12
    ids = run.slurm_job_ids
    assert len(ids) == 3, f"expected 3 group submissions, got {ids}"
    for job in slurm_cluster.jobs(ids):
        assert job.state == "COMPLETED", (job.job_id, job.fields)
        assert job.fields.get("NumCPUs") == str(cores), job.fields
