"""The configurations of the models trained here, torch-free: the workflow reads them while it is
parsed (state-dict keys, checkpoint sizes), the models (:mod:`.transformer`, :mod:`.mlp`) are
built from them in the jobs."""

from __future__ import annotations

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
