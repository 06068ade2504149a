"""`ckptlens init` (ckptlens.cli.init): a valid commented config from checkpoint folders."""

from __future__ import annotations

import os

import yaml

from ckptlens import config as ckcfg
from ckptlens.cli.init import probe_text
from tests.cli.helpers import run_cli, trainer_run


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
    assert "skipped: notes.safetensors: no step number in the name" in proc.stdout
    assert "# skipped: notes.safetensors: no step number" in (tmp_path / "config.yaml").read_text()
    one = run_cli("init", out / "checkpoint-1", "-o", "x.yaml", cwd=tmp_path)
    assert one.returncode == 2 and "is one checkpoint; `ckptlens init` needs a series" in one.stderr


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
