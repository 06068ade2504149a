"""A real one-node SLURM cluster for tests, started by .ci/slurm-cluster.sh.

Use the module-scoped ``slurm_cluster`` fixture from any test module in this
folder::

    def test_something(slurm_cluster, tmp_path):
        run = slurm_cluster.run_snakemake(SNAKEFILE, tmp_path, "--forceall")
        run.check()                                  # rc 0, else fail with the log
        jobs = slurm_cluster.jobs(run.slurm_job_ids) # scontrol records
        assert any(j.gpus for j in jobs if j.rule == "gpu_rule")

The fixture skips (with the reason) where a cluster cannot be had: not root,
not Linux, the SLURM executor plugin not installed, slurm packages neither
installed nor installable, or CKPTLENS_SKIP_SLURM=1.  Any other start-up
problem fails the tests, with the daemons' logs.  The cluster is stopped in a
finalizer, also when a test fails.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = REPO / ".ci" / "slurm-cluster.sh"
SLURM_PROFILE = REPO / "workflow" / "profiles" / "slurm"
#: a run still going after this long is hung (see SlurmCluster.run_snakemake)
HANG_TIMEOUT_S = 3600
# exit status of slurm-cluster.sh when prerequisites are missing (-> skip)
PREREQ_MISSING = 3

_SUBMITTED_RE = re.compile(r"has been submitted with SLURM jobid (\d+)")
_FIELD_RE = re.compile(r"(\w+)=(\S*)")


@dataclasses.dataclass
class SlurmJob:
    """One job as slurmctld records it (`scontrol show job -o ID`)."""

    job_id: str
    fields: dict[str, str]

    @property
    def state(self) -> str:
        return self.fields.get("JobState", "")

    @property
    def comment(self) -> str:
        return self.fields.get("Comment", "")

    @property
    def rule(self) -> str:
        """Rule (or group) name: the plugin submits with --comment rule_<name>[_wildcards_...]."""
        c = self.comment
        c = c.split("_wildcards_", 1)[0]
        return c[len("rule_") :] if c.startswith("rule_") else c

    @property
    def gpus(self) -> str:
        """The GPU request as slurmctld records it ('' if none).

        ``--gpus=N`` shows as TresPerJob=gres:gpu:N, ``--gres=gpu:N`` as
        TresPerNode=gres:gpu:N; with GPU accounting, TRES has gres/gpu=N.
        """
        for key in ("TresPerJob", "TresPerNode", "TresPerTask", "TresPerSocket"):
            if "gpu" in self.fields.get(key, ""):
                return f"{key}={self.fields[key]}"
        if "gres/gpu" in self.fields.get("TRES", ""):
            return f"TRES={self.fields['TRES']}"
        return ""


@dataclasses.dataclass
class SnakemakeRun:
    cmd: list[str]
    returncode: int
    output: str
    log_path: Path

    @property
    def slurm_job_ids(self) -> list[str]:
        """SLURM job ids of every sbatch submission this run made."""
        return _SUBMITTED_RE.findall(self.output)

    @property
    def timed_out(self) -> bool:
        return self.returncode in (124, 137)

    def check(self) -> SnakemakeRun:
        if self.timed_out:
            pytest.fail(f"snakemake did not finish in time (hung?); log {self.log_path}:\n" + self.output[-6000:])
        if self.returncode != 0:
            pytest.fail(f"snakemake exited {self.returncode}; log {self.log_path}:\n" + self.output[-6000:])
        return self


@dataclasses.dataclass
class SlurmCluster:
    state_dir: Path
    profile: Path = SLURM_PROFILE

    def run_snakemake(
        self,
        snakefile: Path | str,
        workdir: Path | str,
        *args: str,
        timeout: int = HANG_TIMEOUT_S,
        profile: Path | str | None = None,
        env: dict[str, str] | None = None,
    ) -> SnakemakeRun:
        """Run snakemake with the SLURM workflow profile, under `timeout -s INT`.

        The bound only catches a hung run, it never times a healthy one: on a loaded machine every
        job, every sbatch and every status poll is slower (a status check backs off up to 180 s
        while nothing finishes), and the full-workflow test once ran past the 900 s it was given
        while another process held one of the two cores. A hung run gets SIGINT (snakemake then
        scancels its jobs), and SIGKILL 30 s later; `.timed_out` tells.  Output goes to <workdir>/snakemake.out
        (snakemake.2.out, ... for later runs in the same workdir).
        """
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        cmd = [
            "timeout", "-s", "INT", "-k", "30", str(timeout),
            sys.executable, "-m", "snakemake",
            "--snakefile", str(snakefile),
            "--directory", str(workdir),
            "--workflow-profile", str(profile or self.profile),
            *args,
        ]  # fmt: skip
        log_path = workdir / "snakemake.out"
        n = 1
        while log_path.exists():  # one log per run: snakemake.out, snakemake.2.out, ...
            n += 1
            log_path = workdir / f"snakemake.{n}.out"
        with open(log_path, "w") as log:
            proc = subprocess.run(
                cmd,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        return SnakemakeRun(cmd, proc.returncode, log_path.read_text(), log_path)

    def jobs(self, job_ids: list[str]) -> list[SlurmJob]:
        """slurmctld's records of these jobs (kept MinJobAge=300 s after they end)."""
        out = []
        for jid in job_ids:
            text = subprocess.run(
                ["scontrol", "show", "job", "-o", jid],
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            ).stdout
            out.append(SlurmJob(jid, dict(_FIELD_RE.findall(text))))
        return out

    @property
    def node_cpus(self) -> int:
        """CPUs of the (single) node."""
        out = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True, timeout=30).stdout.split()
        return int(out[0].rstrip("+"))

    def sinfo(self) -> str:
        return subprocess.run(["sinfo"], capture_output=True, text=True, timeout=30).stdout


def _cluster_script(cmd: str, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), cmd],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def slurm_cluster():
    if os.environ.get("CKPTLENS_SKIP_SLURM") == "1":
        pytest.skip("CKPTLENS_SKIP_SLURM=1")
    if not sys.platform.startswith("linux"):
        pytest.skip("the SLURM test cluster needs Linux")
    if os.geteuid() != 0:
        pytest.skip("the SLURM test cluster needs root (apt-get, daemons, /etc/slurm)")
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.skip(
            "snakemake-executor-plugin-slurm is not installed: pip install 'snakemake-executor-plugin-slurm>=2.7.1'"
        )
    state_dir = Path(os.environ.get("CKPTLENS_SLURM_DIR", "/tmp/ckptlens-slurm"))
    try:
        # generous: a first start may run apt-get update + install
        start = _cluster_script("start", timeout=900)
        if start.returncode == PREREQ_MISSING:
            pytest.skip("SLURM cluster not available here: " + start.stderr.strip()[-1500:])
        if start.returncode != 0:
            pytest.fail(f"'.ci/slurm-cluster.sh start' exited {start.returncode}:\n" + start.stderr[-8000:])
        yield SlurmCluster(state_dir=state_dir)
    finally:
        stop = _cluster_script("stop", timeout=120)
        if stop.returncode != 0:
            print(f"slurm-cluster.sh stop exited {stop.returncode}:\n{stop.stderr}")
