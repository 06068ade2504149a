"""Module names of a model, known without torch (for validating target patterns at parse time)."""

from __future__ import annotations

import json
import struct


def toy_module_names(model_cfg: dict) -> dict[str, list[str]]:
    n_layers = model_cfg.get("n_layers", 2)
    blocks = [f"blocks.{i}" for i in range(n_layers)]
    projections = [f"blocks.{i}.attn.{p}" for i in range(n_layers) for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
    weights = ["embed"] + projections + ["unembed"]
    modules = ["embed"] + [n for i in range(n_layers) for n in (f"blocks.{i}", f"blocks.{i}.attn")] + projections + ["unembed"]
    return {"weights": weights, "activations": modules, "gradients": weights}


def names_from_safetensors(path: str) -> dict[str, list[str]]:
    """Read only the header of a safetensors file: its 2-D+ tensors' module names."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    weights = [k[: -len(".weight")] if k.endswith(".weight") else k for k, v in header.items()
               if k != "__metadata__" and len(v["shape"]) >= 2]
    modules = sorted({w for w in weights} | {w.rsplit(".", 1)[0] for w in weights if "." in w})
    return {"weights": weights, "activations": modules, "gradients": weights}
