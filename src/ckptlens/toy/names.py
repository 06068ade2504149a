"""State-dict keys of the demo model, known without torch (to validate target patterns at parse time)."""

from __future__ import annotations


def toy_state_keys(model_cfg: dict) -> list[str]:
    n_layers = model_cfg.get("n_layers", 2)
    projections = [f"blocks.{i}.attn.{p}.weight" for i in range(n_layers) for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
    return ["embed.weight"] + projections + ["unembed.weight"]


def toy_module_names(model_cfg: dict) -> dict[str, list[str]]:
    """Hookable modules and parameter-owning modules of the demo model."""
    n_layers = model_cfg.get("n_layers", 2)
    weights = [k[: -len(".weight")] for k in toy_state_keys(model_cfg)]
    blocks = [n for i in range(n_layers) for n in (f"blocks.{i}", f"blocks.{i}.attn")]
    return {"weights": weights, "activations": ["embed", *blocks, *weights[1:-1], "unembed"], "gradients": weights}
