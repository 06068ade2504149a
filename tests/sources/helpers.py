"""Shared by the source tests: a small state dict and a check that two readings agree."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from ckptlens.sources.readers import (  # noqa: E402
    Checkpoint,
)


def _sd(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "embed.weight": torch.randn(10, 4, generator=g),
        "blocks.0.attn.q_proj.weight": torch.randn(4, 4, generator=g),
        "norm.bias": torch.randn(4, generator=g),
    }


def _assert_same(ckpt: Checkpoint, sd):
    keys, get, _ = ckpt
    assert sorted(keys) == sorted(sd)
    for k, v in sd.items():
        np.testing.assert_array_equal(get(k), v.numpy())
        assert ckpt.shapes[k] == tuple(v.shape)
