"""Shared by the command-line tests: checkpoints written with numpy (safetensors) in the layouts
training frameworks leave — Hugging Face Trainer ``checkpoint-N/`` folders with their optimizer state
beside the weights, sharded folders, Lightning ``epoch=E-step=N.ckpt``, plain ``step_N.pt`` /
``ckpt_N.safetensors`` — and the CLI run. The pickles beside the weights are booby-trapped:
unpickling one would create a marker file."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import save_file

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
