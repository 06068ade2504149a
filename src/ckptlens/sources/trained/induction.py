"""Induction / copying task: random filler, then a random segment, then the segment repeated.

The segment length varies per sequence, so copying from a fixed offset does not work: predicting the
repeat needs an induction head (find the earlier occurrence of the current token, copy the token that
followed it). The loss on the repeat stays near ln(vocab) for a while and then drops abruptly — a
real phase transition in the metric trajectories.

Training data come from a pool of ``pool_size`` fixed sequences (None = fresh samples every step).
In-distribution error is measured on sequences from the training distribution (pool members when the
pool is finite); out-of-distribution error on fresh sequences whose segments are longer than any seen
in training, which only a general induction mechanism (not memorisation) solves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class InductionTaskConfig:
    vocab_size: int = 32
    seq_len: int = 32
    min_segment: int = 4
    max_segment: int = 12
    ood_segment: int = 16  # fixed segment length of the out-of-distribution set (> max_segment)
    pool_size: int | None = None
    seed: int = 0

    def __post_init__(self):
        if not 1 < self.min_segment <= self.max_segment or 2 * max(self.max_segment, self.ood_segment) > self.seq_len:
            raise ValueError(
                "induction task needs 1 < min_segment <= max_segment and 2·max(max_segment, ood_segment) <= seq_len"
            )

    def to_dict(self) -> dict:
        return asdict(self)


class InductionTask:
    def __init__(self, cfg: InductionTaskConfig):
        self.cfg = cfg
        self.pool = None
        if cfg.pool_size is not None:
            g = torch.Generator().manual_seed(cfg.seed + 7919)
            self.pool = self.fresh(cfg.pool_size, g)

    def fresh(self, n: int, generator: torch.Generator, segment: int | None = None) -> torch.Tensor:
        """Sequences [n, seq_len + 1]: the last column holds each sequence's segment length."""
        c = self.cfg
        tokens = torch.randint(0, c.vocab_size, (n, c.seq_len), generator=generator)
        if segment is None:
            lengths = torch.randint(c.min_segment, c.max_segment + 1, (n,), generator=generator)
        else:
            lengths = torch.full((n,), segment)
        pos = torch.arange(c.seq_len)[None, :]
        start2 = c.seq_len - lengths[:, None]  # the repeat fills the end of the sequence
        src = (pos - lengths[:, None]).clamp(min=0)
        tokens = torch.where(pos >= start2, tokens.gather(1, src), tokens)
        return torch.cat([tokens, lengths[:, None]], dim=1)

    def train_batch(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if self.pool is None:
            return self.fresh(n, generator)
        return self.pool[torch.randint(0, len(self.pool), (n,), generator=generator)]

    def probe_batches(self, n_batches: int, batch_size: int, seed: int) -> list[torch.Tensor]:
        """Fixed batches from the training distribution, the same for every checkpoint."""
        g = torch.Generator().manual_seed(seed)
        return [self.train_batch(batch_size, g) for _ in range(n_batches)]

    @staticmethod
    def inputs(batch: torch.Tensor) -> torch.Tensor:
        return batch[:, :-1]

    def _targets(self, model, batch: torch.Tensor):
        """Logits, targets and mask of the positions whose next token an induction head predicts:
        inside the repeat, from its first token to the second-to-last position."""
        tokens, lengths = batch[:, :-1], batch[:, -1]
        logits = model(tokens)[:, :-1]
        targets = tokens[:, 1:]
        pos = torch.arange(tokens.shape[1] - 1, device=tokens.device)[None, :]
        mask = pos >= (tokens.shape[1] - lengths[:, None])
        return logits, targets, mask

    def loss(self, model, batch: torch.Tensor) -> torch.Tensor:
        logits, targets, mask = self._targets(model, batch)
        return F.cross_entropy(logits[mask], targets[mask])

    @torch.no_grad()
    def error(self, model, batch: torch.Tensor) -> float:
        logits, targets, mask = self._targets(model, batch)
        return float((logits.argmax(-1)[mask] != targets[mask]).float().mean())

    def eval_sets(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return self.train_batch(n, g), self.fresh(n, g, segment=self.cfg.ood_segment)
