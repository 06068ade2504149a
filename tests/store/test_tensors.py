"""The tensor files (ckptlens.store.tensors): streamed safetensors equal the reference writer's."""

import numpy as np


def test_streamed_safetensors_equal_the_reference_writer(tmp_path):
    """The streaming writer's files read back identically with the safetensors package, and are the
    same bytes as the in-memory writer's."""
    from safetensors import safe_open
    from safetensors.numpy import load_file as load

    from ckptlens.store.tensors import write_tensors

    rng = np.random.default_rng(0)
    arrays = {
        "a": rng.normal(size=(3, 5)).astype(np.float32),
        "b.c": rng.normal(size=(7,)),
        "empty": np.zeros((0, 4), np.float32),
        "i": np.arange(6, dtype=np.int64).reshape(2, 3),
    }
    names = write_tensors(iter(arrays.items()), tmp_path / "s.safetensors", {"k": "v"})
    assert names == list(arrays)
    back = load(tmp_path / "s.safetensors")
    for k, v in arrays.items():
        np.testing.assert_array_equal(back[k], v)
        assert back[k].dtype == v.dtype
    with safe_open(str(tmp_path / "s.safetensors"), framework="numpy") as f:
        assert f.metadata() == {"k": "v"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.safetensors"]
    write_tensors(arrays, tmp_path / "m.safetensors", {"k": "v"})
    assert (tmp_path / "m.safetensors").read_bytes() == (tmp_path / "s.safetensors").read_bytes()
