"""The configurations of the models trained here, torch-free: the workflow reads them while it is
parsed (state-dict keys, checkpoint sizes), the models (:mod:`.transformer`, :mod:`.mlp`) are
built from them in the jobs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ToyModelConfig:
    vocab_size: int = 32
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 1
    rotary_base: float = 10000.0

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def n_params(self) -> int:
        """Weights of :class:`~ckptlens.sources.trained.transformer.AttnOnlyTransformer`: embedding,
        four projections per layer, unembedding."""
        return 2 * self.vocab_size * self.d_model + 4 * self.n_layers * self.d_model * self.d_model

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TwoForcesConfig:
    hidden: int = 32
    depth: int = 2
    low: float = 0.5
    high: float = 2.0
    ood_high: float = 3.0
    noise: float = 0.0
    pool_size: int | None = None
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def n_params(self) -> int:
        """Weights and biases of :class:`~ckptlens.sources.trained.mlp.TwoOutputMLP`."""
        return (
            4 * self.hidden + self.hidden + (self.depth - 1) * (self.hidden + 1) * self.hidden + 2 * (self.hidden + 1)
        )


# Source schemas of the runs trained here: the `train` entry (its defaults are what training uses)
# and each model's.
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
