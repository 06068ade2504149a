"""The ``ckptlens`` command without running Snakemake: ``layers`` (what a checkpoint holds), ``init``
(a valid config from checkpoint folders), the hand-over to Snakemake (the command line it builds,
Ctrl-C), and errors as one line.

Checkpoints are written with numpy (safetensors) in the layouts training frameworks leave: Hugging
Face Trainer ``checkpoint-N/`` folders with their optimizer state beside the weights, sharded
folders, Lightning ``epoch=E-step=N.ckpt``, plain ``step_N.pt`` / ``ckpt_N.safetensors``. The pickles
beside the weights are booby-trapped: unpickling one would create a marker file."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import save_file

from ckptlens import cli
from ckptlens import config as ckcfg
from ckptlens.cli import run as cli_run
from ckptlens.cli.init import probe_text

D, H, L, V, FF = 16, 4, 2, 40, 32


class _Trap:
    """Unpickling this creates ``path`` (a pickle that runs code when loaded)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path(self.path).touch, ())


def trap_pickles(folder: Path, marker: Path) -> None:
    """What the Trainer saves beside the weights, each one a pickle that would create ``marker``."""
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"):
        (folder / name).write_bytes(pickle.dumps(_Trap(marker)))
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 0}))


def neox_state(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sd = {"gpt_neox.embed_in.weight": rng.normal(size=(V, D)), "embed_out.weight": rng.normal(size=(V, D))}
    for i in range(L):
        p = f"gpt_neox.layers.{i}"
        sd |= {
            f"{p}.input_layernorm.weight": np.ones(D),
            f"{p}.attention.query_key_value.weight": rng.normal(size=(3 * D, D)),
            f"{p}.attention.query_key_value.bias": np.zeros(3 * D),
            f"{p}.attention.dense.weight": rng.normal(size=(D, D)),
            f"{p}.mlp.dense_h_to_4h.weight": rng.normal(size=(FF, D)),
            f"{p}.mlp.dense_4h_to_h.weight": rng.normal(size=(D, FF)),
        }
    return {k: v.astype(np.float32) for k, v in sd.items()}


NEOX_CONFIG = {"model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"], "num_attention_heads": H}


def trainer_run(root: Path, steps=(5, 10, 40), marker: Path | None = None, tokenizer: bool = False) -> Path:
    """A Trainer output folder: checkpoint-N/ with model.safetensors, config.json and the pickles."""
    for s in steps:
        d = root / f"checkpoint-{s}"
        d.mkdir(parents=True)
        save_file(neox_state(s), str(d / "model.safetensors"))
        (d / "config.json").write_text(json.dumps(NEOX_CONFIG))
        trap_pickles(d, marker or root / "UNPICKLED")
        if tokenizer:
            from ckptlens.sources.minilm import MiniLMNotInstalled, minilm_dir

            try:
                src = minilm_dir()
            except MiniLMNotInstalled as exc:
                pytest.skip(str(exc))
            for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
                shutil.copy(src / f, d / f)
    return root


def run_cli(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    """The command in a fresh interpreter (as a user runs it); also reports whether torch was imported."""
    code = (
        "import sys; from ckptlens.cli import main; rc = main(sys.argv[1:]); "
        "print('TORCH_IMPORTED' if 'torch' in sys.modules else 'NO_TORCH', file=sys.stderr); sys.exit(rc)"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


# --------------------------------------------------------------------------- layers
def test_layers_of_a_trainer_folder_of_checkpoints(tmp_path):
    marker = tmp_path / "UNPICKLED"
    out = trainer_run(tmp_path / "out", marker=marker)
    (out / "runs").mkdir()  # TensorBoard logs
    (out / "checkpoint-99").mkdir()  # an interrupted save: no weights
    (out / "checkpoint-99" / "optimizer.pt").write_bytes(pickle.dumps(_Trap(marker)))
    save_file(neox_state(0), str(out / "model.safetensors"))  # the final save_model(): no step in its name
    (out / "training_args.bin").write_bytes(pickle.dumps(_Trap(marker)))
    proc = run_cli("layers", out)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "series: 3 checkpoints in folder" in text and "steps: 5, 10, 40" in text
    assert "read as: Hugging Face folder (model.safetensors + config.json): header only" in text
    assert "skipped: model.safetensors: no step number in the name" in text
    assert "skipped: checkpoint-99: a folder without model weights" in text
    assert "skipped: training_args.bin: training state" in text
    assert "architecture: gpt_neox, 4 heads" in text
    assert "gpt_neox.layers.0.attention.query_key_value  [48, 16]" in text
    assert (
        "gpt_neox.layers.1.attention.head{h}.{q,k,v,o,qk,ov}  h = 0..3: q [4, 16], k [4, 16], v [4, 16], o [16, 4]"
        in text
    )
    assert "* weights     per-head OV circuits W_O·W_V (8): gpt_neox.layers.*.attention.head*.ov" in text
    assert "* activations block outputs (the residual stream after each block) (2): gpt_neox.layers.*" in text
    assert "modules activations can be captured on" in text and "gpt_neox.layers.0.mlp" in text
    assert proc.stderr.strip().endswith("NO_TORCH")  # safetensors: headers only, torch never imported
    assert not marker.exists()  # no pickle beside the weights was opened

    single = run_cli("layers", out / "checkpoint-10", "--json")
    assert single.returncode == 0, single.stderr
    d = json.loads(single.stdout)
    assert d["architecture"] == "gpt_neox" and d["n_heads"] == H and "series" not in d
    mats = {m["name"]: m["shape"] for m in d["weight_matrices"]}
    assert mats["gpt_neox.layers.0.mlp.dense_4h_to_h"] == [D, FF] and mats["embed"] == [V, D]
    assert d["attention"][0]["pieces"] == {
        "q": [4, D],
        "k": [4, D],
        "v": [4, D],
        "o": [D, 4],
        "qk": [D, D],
        "ov": [D, D],
    }
    assert d["default_targets"]["weights"][0] == "gpt_neox.layers.*.attention.dense"
    assert "gpt_neox.layers.1.mlp.dense_4h_to_h" in d["gradient_modules"]
    assert not marker.exists()


def test_layers_of_a_file_a_sharded_folder_and_its_index(tmp_path):
    sd = neox_state(1)
    save_file(sd, str(tmp_path / "ckpt_100.safetensors"))
    shards = tmp_path / "sharded"
    shards.mkdir()
    keys = sorted(sd)
    parts = {
        "model-00001-of-00002.safetensors": keys[: len(keys) // 2],
        "model-00002-of-00002.safetensors": keys[len(keys) // 2 :],
    }
    for name, ks in parts.items():
        save_file({k: sd[k] for k in ks}, str(shards / name))
    (shards / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {k: n for n, ks in parts.items() for k in ks}})
    )
    (shards / "config.json").write_text(json.dumps(NEOX_CONFIG))
    for path in (tmp_path / "ckpt_100.safetensors", shards, shards / "model.safetensors.index.json"):
        proc = run_cli("layers", path, "--json")
        assert proc.returncode == 0, proc.stderr
        d = json.loads(proc.stdout)
        assert len(d["weight_matrices"]) == 11 and proc.stderr.strip().endswith("NO_TORCH")
    assert "2 safetensors shards (model.safetensors.index.json) + config.json" in d["read"]
    assert d["n_heads"] == H  # from the folder's config.json
    file_only = json.loads(run_cli("layers", tmp_path / "ckpt_100.safetensors", "--json").stdout)
    assert file_only["n_heads"] is None and file_only["attention"] == []  # no config: no heads, said so
    assert any("number of attention heads unknown" in n for n in file_only["notes"])


def test_step_detection_of_every_layout(tmp_path):
    """Trainer checkpoint-N, Lightning epoch=E-step=N(.-vK).ckpt, step_N.pt, ckpt_N.safetensors and
    shard folders; names without a step are reported, not guessed."""
    import torch

    from ckptlens.sources.local import scan

    small = {"layer.weight": np.ones((3, 2), np.float32)}
    lightning = tmp_path / "lightning"
    lightning.mkdir()
    torch.save(
        {"state_dict": {k: torch.from_numpy(v) for k, v in small.items()}, "epoch": 2},
        lightning / "epoch=2-step=300.ckpt",
    )
    torch.save(
        {"state_dict": {k: torch.from_numpy(v) for k, v in small.items()}}, lightning / "epoch=3-step=400-v1.ckpt"
    )
    torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in small.items()}}, lightning / "last.ckpt")
    d = scan(lightning)
    assert list(d.found) == [300, 400]
    assert d.skipped == [("last.ckpt", "no step number in the name (rename it, or set step_pattern)")]

    plain = tmp_path / "plain"
    plain.mkdir()
    for s in (10, 20):
        torch.save(small, plain / f"step_{s}.pt")
        save_file(small, str(plain / f"ckpt_{s + 1}.safetensors"))
    assert list(scan(plain).found) == [10, 11, 20, 21]

    shards = tmp_path / "shards"
    for s in (5, 15):
        f = shards / f"step-{s}"
        f.mkdir(parents=True)
        save_file(small, str(f / "model-00001-of-00001.safetensors"))
        (f / "model.safetensors.index.json").write_text(
            json.dumps({"weight_map": {"layer.weight": "model-00001-of-00001.safetensors"}})
        )
    assert scan(shards).found == {5: shards / "step-5", 15: shards / "step-15"}

    trainer = trainer_run(tmp_path / "trainer", steps=(2, 4))
    assert list(scan(trainer).found) == [2, 4]

    proc = run_cli("layers", lightning)  # pickles: read through open_checkpoint, weights_only
    assert proc.returncode == 0, proc.stderr
    assert "steps: 300, 400" in proc.stdout and "skipped: last.ckpt: no step number" in proc.stdout
    assert "torch state dict: torch.load(weights_only=True)" in proc.stdout


def test_a_code_carrying_checkpoint_is_refused_in_one_line(tmp_path):
    import torch

    marker = tmp_path / "RAN"
    torch.save({"w": torch.ones(2), "trap": _Trap(marker)}, tmp_path / "ckpt_1.pt")
    proc = run_cli("layers", tmp_path / "ckpt_1.pt")
    assert proc.returncode == 2 and not marker.exists()
    err = [ln for ln in proc.stderr.splitlines() if ln != "TORCH_IMPORTED"]
    assert len(err) == 1 and err[0].startswith("ckptlens: error: ") and "refused" in err[0] and "ckpt_1.pt" in err[0]


# --------------------------------------------------------------------------- init
def test_init_writes_a_valid_commented_config_one_run_per_path(tmp_path):
    marker = tmp_path / "UNPICKLED"
    trainer_run(tmp_path / "seed0" / "out", marker=marker, tokenizer=True)
    trainer_run(tmp_path / "seed1" / "out", steps=(5, 10), marker=marker)  # no tokenizer beside it
    work = tmp_path / "work"
    work.mkdir()
    proc = run_cli("init", "../seed0/out", "../seed1/out", "-o", "study.yaml", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().endswith("NO_TORCH") and not marker.exists()
    text = (work / "study.yaml").read_text()
    cfg = yaml.safe_load(text)
    assert list(cfg["runs"]) == ["seed0_out", "seed1_out"]  # the folder names, told apart
    a, b = cfg["runs"]["seed0_out"], cfg["runs"]["seed1_out"]
    assert a["source"] == {"type": "local", "path": str((tmp_path / "seed0" / "out").resolve())}
    assert a["targets"]["weights"] == [
        "gpt_neox.layers.*.attention.dense",
        "gpt_neox.layers.*.attention.head*.ov",
        "gpt_neox.layers.*.attention.head*.qk",
        "gpt_neox.layers.*.mlp.dense_4h_to_h",
    ]
    assert a["targets"]["activations"] == ["gpt_neox.layers.*"]
    assert a["probe"]["text"] == "probe.txt" and a["probe"]["tokenizer"].endswith("seed0/out/checkpoint-5")
    assert (work / "probe.txt").read_text() == probe_text()
    assert "activations" not in b["targets"] and "probe" not in b
    assert b["metrics"] == [
        "frobenius_norm",
        "spectral_norm",
        "stable_rank",
        "effective_rank",
        "relative_update_norm_previous",
    ]
    assert {"cka_to_final", "frobenius_norm", "effective_rank"} <= set(cfg["metrics"])
    assert "# 3 steps found: 5, 10, 40" in text and "# no probe (no tokenizer found beside the checkpoints)" in text
    assert "#   probe: {tokens: ids.npy}" in text  # says what to supply
    cwd = os.getcwd()
    try:
        os.chdir(work)
        ckcfg.validate(cfg)  # relative paths: as `ckptlens run` sees them from this folder
    finally:
        os.chdir(cwd)
    again = run_cli("init", "../seed0/out", "-o", "study.yaml", cwd=work)
    assert again.returncode == 2 and "study.yaml: exists already (use --force to overwrite it)" in again.stderr


def test_init_names_what_it_skipped_and_refuses_a_single_checkpoint(tmp_path):
    out = trainer_run(tmp_path / "out", steps=(1, 2))
    (out / "notes.safetensors").write_bytes(b"")  # no step in the name
    proc = run_cli("init", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "skipped notes.safetensors: no step number in the name" in proc.stdout
    assert "# skipped notes.safetensors: no step number" in (tmp_path / "config.yaml").read_text()
    one = run_cli("init", out / "checkpoint-1", "-o", "x.yaml", cwd=tmp_path)
    assert one.returncode == 2 and "is one checkpoint; `ckptlens init` needs a series" in one.stderr


# --------------------------------------------------------------------------- run / report
def _config(tmp_path) -> Path:
    out = trainer_run(tmp_path / "out", steps=(1, 2))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {"runs": {"r": {"source": {"type": "local", "path": str(out)}}}, "metrics": {"frobenius_norm": {}}}
        )
    )
    return cfg


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
    assert set(sub.choices) == {"layers", "init", "run", "report"}
    for name, p in sub.choices.items():
        text = p.format_help()
        for action in p._actions:
            for opt in action.option_strings or [action.metavar]:
                assert opt in text, (name, opt)
    assert "--profile slurm" in sub.choices["run"].format_help()


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


# --------------------------------------------------------------------------- missing packages
def _activations_config(tmp_path) -> Path:
    out = trainer_run(tmp_path / "out", steps=(1, 2))
    np.save(tmp_path / "ids.npy", np.zeros((4, 8), np.int64))
    cfg = tmp_path / "acts.yaml"
    run = {
        "source": {"type": "local", "path": str(out)},
        "targets": {"weights": ["**"], "activations": ["gpt_neox.layers.*"]},
        "probe": {"tokens": str(tmp_path / "ids.npy"), "batch_size": 2, "n_batches": 1},
    }
    cfg.write_text(yaml.safe_dump({"runs": {"r": run}, "metrics": {"frobenius_norm": {}, "activation_norm": {}}}))
    return cfg


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


def test_require_names_the_package_why_and_how_to_install_it(tmp_path, monkeypatch):
    import importlib.metadata

    from ckptlens.store.requires import MissingDependency, require, requirement

    monkeypatch.setattr(
        importlib.metadata,
        "requires",
        lambda dist: ["torch==2.13.0", "transformers>=4.40", 'pytest>=8; extra == "test"'],
    )
    assert requirement("transformers") == "transformers>=4.40" and requirement("pytest") == "pytest"
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingDependency) as err:
        require("transformers", "building a model")
    assert str(err.value) == (
        "building a model needs the Python package transformers, which is not installed: pip install "
        "'transformers>=4.40' in this environment (a plain `pip install ckptlens` brings it)"
    )
    # installed, but what it imports is not
    (tmp_path / "brokenpkg").mkdir()
    (tmp_path / "brokenpkg" / "__init__.py").write_text("import no_such_module_of_ckptlens\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingDependency) as err:
        require("brokenpkg", "a feature")
    assert "needs the Python package brokenpkg, which cannot be imported (ModuleNotFoundError: No module named " in str(
        err.value
    ) and str(err.value).endswith(
        "pip install 'brokenpkg' in this environment (a plain `pip install ckptlens` brings it)"
    )


def test_a_job_missing_a_package_logs_one_line(tmp_path, monkeypatch):
    """Inside a workflow job (extraction of a Hugging Face model, a hub download) the missing
    package is checked before any work and the job log ends with one line, no traceback."""
    from ckptlens.extract.hf_model import HFModel, load_tokenizer
    from ckptlens.sources.hub import download_revision
    from ckptlens.store.joblog import job_log
    from ckptlens.store.requires import MissingDependency

    monkeypatch.setitem(sys.modules, "transformers", None)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(MissingDependency, match="needs the Python package transformers"):
        HFModel(tmp_path / "no-such-checkpoint.safetensors")  # before the checkpoint is read
    with pytest.raises(MissingDependency, match="tokenizing the probe text needs the Python package transformers"):
        load_tokenizer(tmp_path)
    with pytest.raises(MissingDependency, match="huggingface source .* needs the Python package huggingface_hub"):
        download_revision("EleutherAI/pythia-14m", "step0", tmp_path / "dl")
    assert not (tmp_path / "dl").exists()  # nothing made

    log = tmp_path / "logs" / "job.log"
    with pytest.raises(SystemExit) as exit_:
        with job_log(log):
            print("started")
            HFModel(tmp_path / "step1.safetensors")
    assert exit_.value.code == 1
    lines = log.read_text().splitlines()
    assert lines[0] == "started" and len(lines) == 2 and "Traceback" not in log.read_text()
    assert lines[1].startswith("ERROR: building a Hugging Face model for activations, gradients or attentions needs")


# --------------------------------------------------------------------------- init: what the targets are
def test_init_describes_the_targets_it_wrote_for_a_generic_model(tmp_path):
    """A plain torch state dict of an MLP: the generic adapter, targets `**`; the config says every
    weight matrix and why there are no per-head circuits (no "defaults of this architecture")."""
    import torch

    ck = tmp_path / "mlp"
    ck.mkdir()
    for s in (1, 2, 3):
        torch.manual_seed(s)
        net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
        torch.save(net.state_dict(), ck / f"step_{s}.pt")
    proc = run_cli("init", ck, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "mlp: 3 steps of generic" in proc.stdout
    assert "    weights: every weight matrix (no per-head circuits)" in proc.stdout
    text = (tmp_path / "config.yaml").read_text()
    assert yaml.safe_load(text)["runs"]["mlp"]["targets"]["weights"] == ["**"]
    flat = " ".join(ln.strip().lstrip("#").strip() for ln in text.splitlines())
    assert "weights: every weight matrix — no per-head circuits: ckptlens has no adapter for this architecture" in flat
    assert "the generic one knows no attention blocks or heads" in flat
    assert "OV" not in text and "QK" not in text and "defaults of" not in text

    neox = trainer_run(tmp_path / "neox", steps=(1, 2))
    proc = run_cli("init", neox, "-o", "neox.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    flat = " ".join(ln.strip().lstrip("#").strip() for ln in (tmp_path / "neox.yaml").read_text().splitlines())
    assert (
        "weights: attention output projection; per-head OV circuits W_O·W_V; per-head QK circuits "
        "W_Qᵀ·W_K/√d_head; MLP output projection targets:" in flat
    )
