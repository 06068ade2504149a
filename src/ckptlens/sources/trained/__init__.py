"""Models trained here, by the workflow (sources ``train_toy`` and ``train_mlp``): seeded,
deterministic on CPU, a checkpoint at each configured step and a training log.

* ``train_toy``: the demo, a small attention-only transformer with rotary positions
  (:mod:`.transformer`) on an induction (copying) task (:mod:`.induction`);
* ``train_mlp``: a two-output MLP on the two-forces task (:mod:`.mlp`), for gradient PCA.

Training itself (:mod:`.train`) imports torch; this module does not (it runs while the workflow
is parsed).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .. import Source, SourceError, names_from_keys, register
from .configs import ToyModelConfig, TwoForcesConfig
from .names import mlp_state_keys, transformer_state_keys
from .steps import checkpoint_steps

TRAIN_SETTINGS = {
    "type": "object",
    "additionalProperties": False,
    "required": ["steps"],
    "properties": {
        "steps": {"type": "integer", "minimum": 1},
        "save_every": {"type": "integer", "minimum": 1, "description": "default: steps / 20"},
        "save_steps": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1},
        "batch_size": {"type": "integer", "minimum": 1, "default": 64},
        "lr": {"type": "number", "exclusiveMinimum": 0, "default": 0.002},
        "weight_decay": {"type": "number", "minimum": 0, "default": 0.0},
        "log_every": {"type": "integer", "minimum": 1, "default": 10},
        "seed": {
            "type": "integer",
            "default": 0,
            "description": "seeds the initialisation (and the data order unless data_seed is set)",
        },
        "data_seed": {
            "type": ["integer", "null"],
            "default": None,
            "description": "seeds the order of training batches; runs with the same seed and different "
            "data_seed share their step-0 weights (a common base)",
        },
    },
}

TOY_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["train"],
    "properties": {
        "type": {"const": "train_toy"},
        "model": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "vocab_size": {"type": "integer", "minimum": 2},
                "d_model": {"type": "integer", "minimum": 2},
                "n_layers": {"type": "integer", "minimum": 1},
                "n_heads": {"type": "integer", "minimum": 1},
                "rotary_base": {"type": "number", "exclusiveMinimum": 0},
            },
        },
        "task": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "seq_len": {"type": "integer", "minimum": 4},
                "min_segment": {"type": "integer", "minimum": 2},
                "max_segment": {"type": "integer", "minimum": 2},
                "ood_segment": {"type": "integer", "minimum": 2},
                "pool_size": {"type": ["integer", "null"], "minimum": 1},
                "seed": {"type": "integer"},
            },
        },
        "train": TRAIN_SETTINGS,
    },
}

MLP_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["train"],
    "properties": {
        "type": {"const": "train_mlp"},
        "model": {
            "type": "object",
            "additionalProperties": False,
            "description": "the two-output MLP and its two-forces task (force = mass × acceleration, twice)",
            "properties": {
                "hidden": {"type": "integer", "minimum": 1},
                "depth": {"type": "integer", "minimum": 1},
                "low": {"type": "number"},
                "high": {"type": "number"},
                "ood_high": {"type": "number"},
                "noise": {"type": "number", "minimum": 0},
                "pool_size": {"type": ["integer", "null"], "minimum": 1},
                "seed": {"type": "integer"},
            },
        },
        "train": TRAIN_SETTINGS,
    },
}


def train_settings(spec: Mapping) -> dict:
    """The ``train`` entry with the schema's defaults filled in."""
    defaults = {k: v["default"] for k, v in TRAIN_SETTINGS["properties"].items() if "default" in v}
    return {**defaults, **spec["train"]}


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
    """Train the run's model, writing ``paths[i]`` at ``steps[i]`` and the log to ``log_path``."""
    from .train import train_induction, train_two_forces

    t = train_settings(spec)
    by_step = dict(zip(steps, paths))
    settings = dict(
        total_steps=t["steps"],
        save_steps=list(steps),
        checkpoint_path=lambda step: Path(by_step[step]),
        log_path=Path(log_path),
        batch_size=t["batch_size"],
        lr=t["lr"],
        weight_decay=t["weight_decay"],
        log_every=t["log_every"],
        seed=t["seed"],
        data_seed=t["data_seed"],
    )
    if spec["type"] == "train_mlp":
        from .mlp import TwoForcesConfig

        train_two_forces(TwoForcesConfig(**spec.get("model", {})), **settings)
    else:
        from .induction import InductionTaskConfig
        from .transformer import ToyModelConfig

        model_cfg = ToyModelConfig(**spec.get("model", {}))
        train_induction(
            model_cfg, InductionTaskConfig(vocab_size=model_cfg.vocab_size, **spec.get("task", {})), **settings
        )


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
