"""Weight extraction (ckptlens.extract.weights): the weights are the checkpoint's tensors."""

import numpy as np
from safetensors.numpy import load_file

from ckptlens.extract.weights import extract_weights


def test_weights_are_the_checkpoint_tensors(checkpoint, tmp_path):
    out = tmp_path / "w.safetensors"
    names = extract_weights(checkpoint, ["blocks.*.attn.*"], out)
    assert len(names) == 8
    ckpt, got = load_file(checkpoint), load_file(out)
    for n in names:
        np.testing.assert_array_equal(got[n], ckpt[f"{n}.weight"])
    assert "embed" not in got


def test_a_float16_checkpoint_keeps_float16_where_exact(checkpoint, tmp_path):
    """Matrices of a float16 checkpoint are written as float16 (half the bytes of float32, the same
    values); the circuits, products computed in float64, stay float32."""
    from ckptlens.store.tensors import SafetensorsFile, write_tensors

    half = tmp_path / "half.safetensors"
    meta = SafetensorsFile(checkpoint).metadata
    write_tensors({k: v.astype(np.float16) for k, v in load_file(checkpoint).items()}, half, meta)
    out16, out32 = tmp_path / "w16.safetensors", tmp_path / "w32.safetensors"
    names = extract_weights(half, ["blocks.*.attn.*", "blocks.0.attn.head0.*"], out16)
    got, ckpt = load_file(out16), load_file(half)
    for n in names:
        if "head" in n:
            assert got[n].dtype == (np.float32 if n.endswith((".qk", ".ov")) else np.float16), n
            continue
        assert got[n].dtype == np.float16
        np.testing.assert_array_equal(got[n], ckpt[f"{n}.weight"])
    assert {"blocks.0.attn.head0.q", "blocks.0.attn.head0.qk"} <= set(names)
    extract_weights(checkpoint, ["blocks.*.attn.*"], out32)
    extract_weights(half, ["blocks.*.attn.*"], out16)
    assert all(v.dtype == np.float32 for v in load_file(out32).values())  # float32 stays float32
    assert out16.stat().st_size < 0.6 * out32.stat().st_size
