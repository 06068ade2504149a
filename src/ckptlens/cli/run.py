"""``ckptlens run CONFIG [snakemake ...]`` and ``ckptlens report CONFIG [-o FILE]``: the Snakemake
command lines of the packaged workflow (``python -m snakemake`` with the packaged Snakefile,
``--configfile=CONFIG``, ``--directory`` the current folder and the packaged workflow profile;
every other option after CONFIG is Snakemake's), after checking here the config and the packages its
jobs and the report import (one line naming a missing one, not a traceback from inside a job)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from ckptlens.store import layout

from . import CLIError

#: Snakemake options after which no report is written (nothing was run, or the user asked otherwise)
NO_REPORT_OPTIONS = {
    "-n",
    "--dry-run",
    "--dryrun",
    "--lint",
    "--report",
    "--unlock",
    "-l",
    "--list",
    "--list-rules",
    "--lt",
    "--list-target-rules",
    "-S",
    "--summary",
    "-D",
    "--detailed-summary",
    "--dag",
    "--rulegraph",
    "--filegraph",
    "--d3dag",
    "-t",
    "--touch",
    "--cleanup-metadata",
    "--cleanup-shadow",
    "--delete-all-output",
    "--delete-temp-output",
    "--list-changes",
    "--lc",
    "--list-code-changes",
    "--list-params-changes",
    "--list-input-changes",
    "--archive",
    "--containerize",
    "--conda-create-envs-only",
    "--create-envs-only",
    "--print-compilation",
    "--generate-unit-tests",
    "-h",
    "--help",
    "--version",
    "-v",
}


def _option(args: Sequence[str], *names: str) -> bool:
    return any(a in names or any(a.startswith(n + "=") for n in names if n.startswith("--")) for a in args)


def check_config(path: str) -> dict:
    """The config exists, parses and validates (here, before Snakemake starts: one clear line);
    returns it."""
    import yaml

    from .. import config as ckcfg

    p = Path(path)
    if not p.is_file():
        raise CLIError(f"{path}: no such config file (write one with `ckptlens init PATH`)")
    try:
        cfg = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise CLIError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(cfg, dict) or "runs" not in cfg:
        raise CLIError(f"{path}: not a ckptlens config (no 'runs' section)")
    try:
        ckcfg.validate(cfg)
    except ckcfg.ConfigError as exc:
        raise CLIError(f"{path}: {exc}") from None
    return cfg


#: what ``snakemake --report`` imports beyond Snakemake's own requirements (pygments is only in its
#: ``reports`` extra) and its template and caption engines, checked before it starts
REPORT_PACKAGES = ("pygments", "jinja2", "docutils")


def _trained_here(checkpoint: str) -> bool:
    """A safetensors checkpoint of a model trained by ckptlens (rebuilt without transformers)."""
    from ..store.records import CheckpointError
    from ..store.tensors import SafetensorsFile

    if not checkpoint.endswith(".safetensors"):
        return False
    try:
        return "ckptlens_arch" in SafetensorsFile(checkpoint).metadata
    except CheckpointError:  # an unreadable file is its own job's failure record, not a question of packages
        return False


def needed_packages(cfg: Mapping) -> dict[str, str]:
    """``{module: why}``: the optional imports the config's jobs make. The huggingface source
    downloads with huggingface_hub; activations, gradients and attentions of a fetched checkpoint
    build a Hugging Face model (transformers), unless ckptlens trained it."""
    from .. import config as ckcfg

    out: dict[str, str] = {}
    for run in ckcfg.run_names(cfg):
        spec, source = ckcfg.source_spec(cfg, run), ckcfg.source(cfg, run)
        if spec["type"] == "huggingface":
            out.setdefault("huggingface_hub", f"run {run!r} (source type huggingface)")
        if source.kind != "fetch" or not set(ckcfg.needed_extractions(cfg, run)) - {"weights"}:
            continue
        steps = ckcfg.steps(cfg, run)
        first = source.inputs(spec, steps[0]) if steps else []
        if not (first and _trained_here(str(first[0]))):
            out.setdefault("transformers", f"run {run!r} (activations, gradients or attentions of its checkpoints)")
    return out


def check_packages(cfg: Mapping, jobs: bool, report: bool) -> None:
    """Import what the config's jobs (``jobs``) and the report (``report``) will import, before
    Snakemake starts: a missing package is one line here
    (:class:`~ckptlens.store.requires.MissingDependency`), not a failed job."""
    from ..store.requires import require

    if jobs:
        for module, why in needed_packages(cfg).items():
            require(module, why)
    if report:
        for module in REPORT_PACKAGES:
            require(module, "the HTML report (snakemake --report)")


def snakemake_command(config: str, rest: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """The Snakemake command line for the packaged workflow: ``--configfile=CONFIG`` (the ``=`` form:
    a bare ``--configfile X`` would swallow the targets after it), the packaged Snakefile and
    workflow profile (``--profile slurm`` = the packaged SLURM profile), ``--directory`` the
    current folder; the user's options last."""
    from ..config import WORKFLOW_DIR as wf

    rest = list(rest)
    if _option(rest, "--configfile", "--configfiles"):
        raise CLIError("give the config as CONFIG (ckptlens run CONFIG ...), not with --configfile")
    profile = None
    for i, a in enumerate(rest):
        if a == "--profile" and i + 1 < len(rest) and rest[i + 1] == "slurm":
            profile, rest = "slurm", rest[:i] + rest[i + 2 :]
            break
        if a == "--profile=slurm":
            profile, rest = "slurm", rest[:i] + rest[i + 1 :]
            break
    cmd = [sys.executable, "-m", "snakemake"]
    if not _option(rest, "-s", "--snakefile"):
        cmd += ["--snakefile", str(wf / "Snakefile")]
    cmd.append(f"--configfile={Path(config).resolve()}")
    if not _option(rest, "-d", "--directory"):
        cmd += ["--directory", str(Path.cwd())]
    if profile == "slurm":
        if _option(rest, "--workflow-profile"):
            raise CLIError("--profile slurm is the packaged SLURM workflow profile; give it or --workflow-profile")
        cmd.append(f"--workflow-profile={wf / 'profiles' / 'slurm'}")
    elif not _option(rest, "--workflow-profile"):
        cmd.append(f"--workflow-profile={wf / 'profiles' / 'default'}")
    return cmd + list(extra) + rest


def _wait(cmd: Sequence[str]) -> int:
    """Run Snakemake; Ctrl-C reaches it (same process group) while this process ignores it, so
    Snakemake shuts down in its own time (cancelling cluster jobs, removing its lock)."""
    proc = subprocess.Popen(list(cmd))
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return proc.wait()
    finally:
        signal.signal(signal.SIGINT, previous)


def cmd_run(args) -> int:
    cfg = check_config(args.config)
    rest = list(args.snakemake_args)
    runs_jobs = not _option(rest, *NO_REPORT_OPTIONS)  # nothing runs on a dry run, a lint, --unlock, ...
    check_packages(cfg, jobs=runs_jobs, report=runs_jobs and not args.no_report)
    cmd = snakemake_command(args.config, rest)
    if os.environ.get("CKPTLENS_PRINT_COMMAND"):
        print(" ".join(cmd))
        return 0
    rc = _wait(cmd)
    if rc != 0:
        return 130 if rc == -signal.SIGINT else rc if rc > 0 else 1
    if args.no_report or _option(rest, *NO_REPORT_OPTIONS):
        return 0
    report = Path(args.report_file)
    report_cmd = snakemake_command(
        args.config, [a for a in rest if a not in ("-F", "--forceall")], ["--report", str(report.resolve())]
    )
    rc = _wait(report_cmd)
    if rc == 0:
        print(f"ckptlens: results in {layout.run_dir('*')}, the report in {report}", file=sys.stderr)
    return rc if rc >= 0 else 1


def cmd_report(args) -> int:
    check_packages(check_config(args.config), jobs=False, report=True)
    cmd = snakemake_command(args.config, args.snakemake_args, ["--report", str(Path(args.output).resolve())])
    if os.environ.get("CKPTLENS_PRINT_COMMAND"):
        print(" ".join(cmd))
        return 0
    if os.name == "posix":
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(cmd[0], cmd)  # signals and the exit status go straight to Snakemake
    return subprocess.call(cmd)  # pragma: no cover  (Windows)
