"""Weights (ckptlens.extract.weights): the matrices are the checkpoint's tensors, read from it in
place when asked for; nothing is written."""

import numpy as np
import pytest
from safetensors.numpy import load_file

from ckptlens.adapters import get_adapter
from ckptlens.extract.weights import open_weights
from ckptlens.sources.readers import open_checkpoint


def test_weights_are_the_checkpoint_tensors(checkpoint, tmp_path):
    before = sorted(p.name for p in tmp_path.iterdir())
    with open_weights(checkpoint, ["blocks.*.attn.*"]) as got:
        assert len(got) == 8 and "embed" not in got
        ckpt = load_file(checkpoint)
        for n in got:
            assert got[n].dtype == np.float32
            np.testing.assert_array_equal(got[n], ckpt[f"{n}.weight"])
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_head_pieces_are_the_adapter_ones_in_any_order(checkpoint):
    """Reading the pieces in key order or backwards gives the adapter's pieces (each attention
    module read once in key order; a module asked for again is read again)."""
    with open_checkpoint(checkpoint) as c:
        arch = get_adapter("auto", c.keys, c.metadata, shapes=c.shapes)
        want = dict(arch.weight_matrices(c.keys, c.get, ["blocks.*.attn.head*.*"], shapes=c.shapes))
    assert {"blocks.0.attn.head0.qk", "blocks.1.attn.head1.ov"} <= set(want)
    with open_weights(checkpoint, ["blocks.*.attn.head*.*"]) as got:
        assert list(got) == list(want)
        for name in [*got, *reversed(list(got))]:
            np.testing.assert_array_equal(got[name], want[name])


def test_a_float16_checkpoint_is_promoted_once(checkpoint, tmp_path):
    """A float16 checkpoint's matrices come back as float32 with the stored values; its circuits
    are the products of those (what a float32 copy of the checkpoint gives)."""
    from ckptlens.store.tensors import SafetensorsFile, write_tensors

    half = tmp_path / "half.safetensors"
    meta = SafetensorsFile(checkpoint).metadata
    stored = {k: v.astype(np.float16) for k, v in load_file(checkpoint).items()}
    write_tensors(stored, half, meta)
    widened = tmp_path / "widened.safetensors"
    write_tensors({k: v.astype(np.float32) for k, v in stored.items()}, widened, meta)
    patterns = ["blocks.*.attn.*", "blocks.0.attn.head0.*"]
    with open_weights(half, patterns) as got, open_weights(widened, patterns) as ref:
        assert list(got) == list(ref)
        for n in got:
            assert got[n].dtype == np.float32
            np.testing.assert_array_equal(got[n], ref[n])
            if "head" not in n:
                np.testing.assert_array_equal(got[n], stored[f"{n}.weight"].astype(np.float32))


def test_no_match_names_the_checkpoint(checkpoint):
    with pytest.raises(ValueError, match=f"{checkpoint}.*no weight matches"):
        open_weights(checkpoint, ["nothing.*"])
