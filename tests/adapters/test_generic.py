"""ckptlens.adapters.generic: every 2-d parameter, no head pieces."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from ckptlens.adapters import (  # noqa: E402
    GenericAdapter,
    get_adapter,
)
from tests.adapters.helpers import _state  # noqa: E402


# ---------------------------------------------------------------------------------------------
# generic fallback and get_adapter
def test_generic_every_2d_plus_parameter_no_heads():
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Flatten(), torch.nn.Linear(8, 4)
    )
    sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    keys = list(sd)
    shapes = {k: v.shape for k, v in sd.items()}
    adapter = get_adapter("auto", keys, shapes=shapes)
    assert isinstance(adapter, GenericAdapter)
    mats = dict(adapter.weight_matrices(keys, sd.__getitem__, None))
    assert sorted(mats) == ["0", "3"]  # conv (flattened) and linear; not BatchNorm weight/running stats
    assert mats["0"].shape == (8, 27)
    assert adapter.layer_names(keys) == ["0", "3"]


def test_generic_on_a_transformer_has_no_head_pieces(gpt2):
    model, cfg = gpt2
    keys, get, sd = _state(model)
    adapter = get_adapter("generic", keys, metadata=cfg.to_dict(), shapes={k: v.shape for k, v in sd.items()})
    names = adapter.layer_names(keys)
    assert not any(".head" in n for n in names)
    assert "transformer.h.0.attn.c_attn" in names and "embed" in names and "transformer.wpe" in names
    assert adapter.activation_modules([n for n, _ in model.named_modules()]) == ["transformer.h.0", "transformer.h.1"]
