"""The ``ckptlens`` command's parser and errors (ckptlens.cli), without running Snakemake: every
option in the help, its own options after the config, config errors as one line naming file and key.
The commands are tested in test_layers.py, test_init.py and test_run.py."""

from __future__ import annotations

import pytest
import yaml

from ckptlens import cli
from tests.cli.helpers import _config, run_cli


@pytest.mark.parametrize("command", ["run", "report"])
def test_config_errors_are_one_line_naming_file_and_key(tmp_path, command):
    cfg = _config(tmp_path)
    bad = yaml.safe_load(cfg.read_text())
    bad["runs"]["r"]["probe"] = {"batch_size": 0}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    (tmp_path / "broken.yaml").write_text("runs: [\n")
    cases = {
        "missing.yaml": "missing.yaml: no such config file",
        "bad.yaml": "bad.yaml: config key 'runs.r.probe.batch_size'",
        "broken.yaml": "broken.yaml: not valid YAML (line",
    }
    for name, message in cases.items():
        proc = run_cli(command, name, cwd=tmp_path)
        lines = [ln for ln in proc.stderr.splitlines() if ln not in ("NO_TORCH", "TORCH_IMPORTED")]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert lines[0].startswith("ckptlens: error: ") and message in lines[0] and "Traceback" not in proc.stderr


def test_help_names_every_option():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert set(sub.choices) == {"layers", "init", "run", "report", "fetch"}
    for name, p in sub.choices.items():
        text = p.format_help()
        for action in p._actions:
            for opt in action.option_strings or [action.metavar]:
                assert opt in text, (name, opt)
    assert "--profile slurm" in sub.choices["run"].format_help()


# --------------------------------------------------------------------------- options after CONFIG
def test_own_options_after_the_config_are_ckptlens_options(tmp_path):
    """`ckptlens run config.yaml --no-report` is ckptlens's option, not a Snakemake usage error;
    `--report` (Snakemake's) is never taken for a prefix of `--report-file`."""
    parser = cli.build_parser()

    def parse(*argv):
        args = parser.parse_args(argv)
        cli.take_own_options(args.own_options, args)
        return args

    args = parse("run", "c.yaml", "--cores", "2", "--no-report", "--report-file=r.html", "-n")
    assert args.no_report and args.report_file == "r.html" and args.snakemake_args == ["--cores", "2", "-n"]
    args = parse("run", "--report-file", "a.html", "c.yaml", "--report", "x.html", "--report-file", "b.html")
    assert not args.no_report and args.report_file == "b.html" and args.snakemake_args == ["--report", "x.html"]
    args = parse("report", "c.yaml", "--cores", "1", "-o", "out.html")
    assert args.output == "out.html" and args.snakemake_args == ["--cores", "1"]
    assert parse("report", "c.yaml", "--output=o.html").output == "o.html"

    cfg = _config(tmp_path)
    printed = run_cli("run", cfg, "--cores", "1", "--no-report", cwd=tmp_path, env={"CKPTLENS_PRINT_COMMAND": "1"})
    assert printed.returncode == 0, printed.stderr
    assert "--no-report" not in printed.stdout and printed.stdout.split()[-2:] == ["--cores", "1"]
    bad = run_cli("run", cfg, "--report-file", cwd=tmp_path)
    err = [ln for ln in bad.stderr.splitlines() if ln not in ("NO_TORCH", "TORCH_IMPORTED")]
    assert bad.returncode == 2 and err == [
        "ckptlens: error: argument --report-file: expected one argument (see `ckptlens run --help`)"
    ]
