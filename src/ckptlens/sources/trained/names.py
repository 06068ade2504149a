"""State-dict keys of the models trained here, known without torch (target patterns are checked
against them while the workflow is parsed)."""

from __future__ import annotations

from collections.abc import Mapping

from .configs import ToyModelConfig, TwoForcesConfig


def transformer_state_keys(model_cfg: Mapping) -> list[str]:
    """Keys of :class:`~ckptlens.sources.trained.transformer.AttnOnlyTransformer`."""
    n_layers = ToyModelConfig(**model_cfg).n_layers
    projections = [
        f"blocks.{i}.attn.{p}.weight" for i in range(n_layers) for p in ("q_proj", "k_proj", "v_proj", "o_proj")
    ]
    return ["embed.weight"] + projections + ["unembed.weight"]


def mlp_state_keys(model_cfg: Mapping) -> list[str]:
    """Keys of :class:`~ckptlens.sources.trained.mlp.TwoOutputMLP`."""
    depth = TwoForcesConfig(**model_cfg).depth
    return [f"blocks.{i}.linear.{p}" for i in range(depth) for p in ("weight", "bias")] + ["head.weight", "head.bias"]
