"""The multi-task toy: one MLP, two independent outputs (force = mass × acceleration, twice).

Inputs (m1, a1, m2, a2); targets (m1·a1, m2·a2). Output 0 depends only on the first pair and
output 1 only on the second, so the gradients of the two outputs with respect to a hidden layer
start entangled and separate into different directions as the network learns: the quantity the
gradient-PCA metrics track. In-distribution error is on inputs from the training range,
out-of-distribution error on inputs beyond it (extrapolation).

Module names: ``blocks.{i}`` (output = hidden activation after the nonlinearity),
``blocks.{i}.linear``, ``head``.
"""

from __future__ import annotations

import torch
from torch import nn

from .configs import TwoForcesConfig


class MLPBlock(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)

    def forward(self, x):
        return torch.tanh(self.linear(x))


class TwoOutputMLP(nn.Module):
    def __init__(self, cfg: TwoForcesConfig):
        super().__init__()
        self.cfg = cfg
        dims = [4] + [cfg.hidden] * cfg.depth
        self.blocks = nn.ModuleList(MLPBlock(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.head = nn.Linear(cfg.hidden, 2)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.head(x)


class TwoForcesTask:
    """Batches are [n, 6]: the 4 inputs then the 2 targets."""

    n_outputs = 2

    def __init__(self, cfg: TwoForcesConfig):
        self.cfg = cfg
        self.pool = None
        if cfg.pool_size is not None:
            self.pool = self.fresh(cfg.pool_size, torch.Generator().manual_seed(cfg.seed + 7919))

    def fresh(self, n, generator, high=None):
        c = self.cfg
        x = c.low + (high or c.high - c.low) * torch.rand(n, 4, generator=generator)
        y = torch.stack([x[:, 0] * x[:, 1], x[:, 2] * x[:, 3]], dim=1)
        if c.noise:
            y = y + c.noise * torch.randn(y.shape, generator=generator)
        return torch.cat([x, y], dim=1)

    def train_batch(self, n, generator):
        if self.pool is None:
            return self.fresh(n, generator)
        return self.pool[torch.randint(0, len(self.pool), (n,), generator=generator)]

    def probe_batches(self, n_batches, batch_size, seed):
        g = torch.Generator().manual_seed(seed)
        return [self.fresh(batch_size, g) for _ in range(n_batches)]

    @staticmethod
    def inputs(batch):
        return batch[:, :4]

    def loss(self, model, batch):
        return torch.mean((model(batch[:, :4]) - batch[:, 4:]) ** 2)

    @torch.no_grad()
    def error(self, model, batch) -> float:
        """Mean relative error of both outputs."""
        pred, y = model(batch[:, :4]), batch[:, 4:]
        return float(torch.mean(torch.abs(pred - y) / torch.abs(y).clamp(min=1e-6)))

    def eval_sets(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        c = self.cfg
        return self.fresh(n, g), self.fresh(n, g, high=c.ood_high - c.low)
