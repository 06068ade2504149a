"""`ckptlens run` (ckptlens.cli.run): the hand-over to Snakemake, Ctrl-C, missing packages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

from ckptlens import cli
from ckptlens import config as ckcfg
from ckptlens.cli import run as cli_run
from tests.cli.helpers import _activations_config, _config, run_cli


def test_run_hands_the_packaged_workflow_to_snakemake(tmp_path, monkeypatch):
    cfg = _config(tmp_path)
    monkeypatch.chdir(tmp_path)
    wf = ckcfg.WORKFLOW_DIR
    cmd = cli_run.snakemake_command(str(cfg), ["--cores", "2", "results/runs/r/metrics.parquet"])
    assert cmd[:3] == [sys.executable, "-m", "snakemake"]
    assert cmd[3:9] == [
        "--snakefile",
        str(wf / "Snakefile"),
        f"--configfile={cfg.resolve()}",
        "--directory",
        str(tmp_path),
        f"--workflow-profile={wf / 'profiles' / 'default'}",
    ]
    assert cmd[9:] == ["--cores", "2", "results/runs/r/metrics.parquet"]
    slurm = cli_run.snakemake_command(str(cfg), ["--profile", "slurm", "-j", "10"])
    assert f"--workflow-profile={wf / 'profiles' / 'slurm'}" in slurm and "--profile" not in slurm
    assert (wf / "profiles" / "slurm" / "config.yaml").is_file() and (wf / "Snakefile").is_file()
    own = cli_run.snakemake_command(str(cfg), ["--workflow-profile", "mine"])
    assert not any(a.startswith("--workflow-profile=") for a in own) and own[-2:] == ["--workflow-profile", "mine"]
    with pytest.raises(cli.CLIError, match="not with --configfile"):
        cli_run.snakemake_command(str(cfg), ["--configfile", "other.yaml"])
    printed = run_cli("run", cfg, "-n", cwd=tmp_path, env={"CKPTLENS_PRINT_COMMAND": "1"})
    assert printed.returncode == 0 and f"--configfile={cfg.resolve()}" in printed.stdout


def test_ctrl_c_reaches_snakemake_and_it_finishes_its_cleanup(tmp_path):
    """The terminal's SIGINT goes to the whole foreground group: ckptlens ignores it and waits,
    Snakemake (here a stand-in needing 1 s to clean up) finishes, its exit status comes back."""
    child = tmp_path / "child.py"
    child.write_text(
        textwrap.dedent(
            f"""
            import signal, sys, time
            def stop(*_):
                time.sleep(1.0)
                open({str(tmp_path / "cleaned")!r}, "w").close()
                sys.exit(130)
            signal.signal(signal.SIGINT, stop)
            open({str(tmp_path / "started")!r}, "w").close()
            time.sleep(30)
            """
        )
    )
    wrapper = f"import sys; from ckptlens.cli.run import _wait; sys.exit(_wait([sys.executable, {str(child)!r}]))"
    proc = subprocess.Popen([sys.executable, "-c", wrapper], start_new_session=True)
    deadline = time.time() + 60
    while not (tmp_path / "started").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert (tmp_path / "cleaned").exists()


def test_a_missing_package_is_one_line_before_snakemake_starts(tmp_path, monkeypatch, capsys):
    """transformers for activations of a Hugging Face model, pygments for the report: checked by
    `ckptlens run`/`report` before Snakemake starts, one line naming the package and the install."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli_run, "_wait", lambda cmd: pytest.fail(f"Snakemake started: {cmd}"))
    weights_only, acts = _config(tmp_path / "w"), _activations_config(tmp_path)
    assert cli_run.needed_packages(yaml.safe_load(weights_only.read_text())) == {}
    assert set(cli_run.needed_packages(yaml.safe_load(acts.read_text()))) == {"transformers"}

    def one_line(*argv) -> str:
        capsys.readouterr()
        assert cli.main([*map(str, argv)]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("ckptlens: error: ") and "Traceback" not in err[0], err
        return err[0]

    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now fails
    line = one_line("run", acts, "--cores", "1", "--no-report")
    assert "run 'r' (activations, gradients or attentions of its checkpoints) needs the Python package " in line
    assert "transformers, which is not installed: pip install 'transformers" in line
    monkeypatch.setenv("CKPTLENS_PRINT_COMMAND", "1")
    assert cli.main(["run", str(weights_only), "--no-report"]) == 0  # weights only: no transformers needed
    assert cli.main(["run", str(acts), "-n"]) == 0  # a dry run runs no job

    monkeypatch.setitem(sys.modules, "pygments", None)
    for argv in (("run", weights_only, "--cores", "1"), ("report", weights_only)):
        line = one_line(*argv)
        assert "the HTML report (snakemake --report) needs the Python package pygments, which is not installed" in line
        assert "pip install 'pygments" in line
    assert cli.main(["run", str(weights_only), "--cores", "1", "--no-report"]) == 0
