"""The sources trained here, by the workflow: ``train_toy`` (the demo transformer on the
induction task) and ``train_mlp`` (the two-forces MLP), their code in :mod:`ckptlens.sources.trained`.
Registration only; no torch here (it runs while the workflow is parsed).
"""

from __future__ import annotations

from collections.abc import Mapping

from . import Source, SourceError, register
from .layer_names import names_from_keys
from .trained.configs import MLP_SCHEMA, TOY_SCHEMA, ToyModelConfig, TwoForcesConfig
from .trained.names import mlp_state_keys, transformer_state_keys
from .trained.steps import checkpoint_steps


def _steps(spec: Mapping) -> list[int]:
    t = spec["train"]
    try:
        return checkpoint_steps(t["steps"], t.get("save_every", max(1, t["steps"] // 20)), t.get("save_steps"))
    except ValueError as exc:
        raise SourceError(str(exc), "train") from None


def _transformer_names(spec: Mapping) -> dict:
    model = spec.get("model", {})
    return names_from_keys(transformer_state_keys(model), {"ckptlens_arch": "toy", "ckptlens_model": model})


def _mlp_names(spec: Mapping) -> dict:
    keys = mlp_state_keys(spec.get("model", {}))
    return names_from_keys(keys, {}, {k: (2, 2) if k.endswith("weight") else (2,) for k in keys})


def _transformer_bytes(spec: Mapping) -> int:
    return 4 * ToyModelConfig(**spec.get("model", {})).n_params  # float32


def _mlp_bytes(spec: Mapping) -> int:
    return 4 * TwoForcesConfig(**spec.get("model", {})).n_params


def _train(spec: Mapping, steps: list[int], paths: list, log_path) -> None:
    from .trained.train import train_run  # torch: imported only where training runs

    train_run(spec, steps, paths, log_path)


register(
    Source(
        type="train_toy",
        kind="train",
        description="the demo attention-only transformer, trained here on the induction task",
        schema=TOY_SCHEMA,
        steps=_steps,
        layer_names=_transformer_names,
        train=_train,
        checkpoint_bytes=_transformer_bytes,
    )
)
register(
    Source(
        type="train_mlp",
        kind="train",
        description="the two-output MLP, trained here on the two-forces task",
        schema=MLP_SCHEMA,
        steps=_steps,
        layer_names=_mlp_names,
        train=_train,
        checkpoint_bytes=_mlp_bytes,
    )
)
