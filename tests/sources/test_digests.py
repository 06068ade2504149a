"""Weight digests (ckptlens.sources.digests): the same weights give the same digest in any format;
identical steps are grouped."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import pytest  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from ckptlens.sources.digests import check_identical_steps, weights_digest  # noqa: E402
from ckptlens.sources.readers import (  # noqa: E402
    open_checkpoint,
)
from tests.sources.helpers import _sd  # noqa: E402


# ---------------------------------------------------------------------------------------------
# digests
def test_weights_digest_same_weights_any_format(tmp_path):
    sd = _sd()
    save_file(sd, str(tmp_path / "a.safetensors"))
    torch.save({k: sd[k] for k in reversed(list(sd))}, tmp_path / "b.pt")  # other key order
    k1, g1, _ = open_checkpoint(tmp_path / "a.safetensors")
    k2, g2, _ = open_checkpoint(tmp_path / "b.pt")
    assert weights_digest(k1, g1) == weights_digest(k2, g2)
    changed = dict(sd)
    changed["norm.bias"] = sd["norm.bias"].clone()
    changed["norm.bias"][0] += 1e-3
    save_file(changed, str(tmp_path / "c.safetensors"))
    k3, g3, _ = open_checkpoint(tmp_path / "c.safetensors")
    assert weights_digest(k3, g3) != weights_digest(k1, g1)
    renamed = {("x." + k): v for k, v in sd.items()}
    save_file(renamed, str(tmp_path / "d.safetensors"))
    k4, g4, _ = open_checkpoint(tmp_path / "d.safetensors")
    assert weights_digest(k4, g4) != weights_digest(k1, g1)


def test_identical_steps_groups():
    with pytest.warns(UserWarning) as rec:
        pairs = check_identical_steps({4: "b", 0: "a", 2: "a", 8: "a", 16: "c"})
    assert pairs == [(0, 2), (0, 8)] and len(rec) == 2
    assert check_identical_steps({0: "a", 1: "b"}) == []
