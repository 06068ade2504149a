"""Checkpoint import (ckptlens.sources.importer): only bad checkpoints become failure records."""

from __future__ import annotations

import pytest

from ckptlens.sources.importer import import_or_record
from ckptlens.sources.readers import CheckpointError, open_checkpoint
from ckptlens.store.failures import checkpoint_record
from tests.helpers import _tiny_checkpoint


def test_import_records_only_bad_checkpoints(tmp_path, monkeypatch):
    empty = tmp_path / "ckpt_3.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=f"{empty}: empty file"):
        open_checkpoint(empty)
    with pytest.warns(RuntimeWarning, match="step 3: bad checkpoint"):
        rec = import_or_record(empty, tmp_path / "out" / "b.safetensors", step=3)
    assert rec == {"step": 3, "file": str(empty), "reason": "empty file (0 bytes) — an interrupted download or save?"}
    assert checkpoint_record(tmp_path / "out" / "b.safetensors") == rec
    # a good file is imported (with its source path in the header)
    good = _tiny_checkpoint(tmp_path / "ckpt_4.safetensors")
    assert import_or_record(good, tmp_path / "out" / "c.safetensors", step=4) is None
    with open_checkpoint(tmp_path / "out" / "c.safetensors") as ckpt:
        assert ckpt.metadata["ckptlens_source"] == str(good) and ckpt.keys == ["a.weight"]
    # a local one is read in place: a reference, followed by open_checkpoint
    assert import_or_record(good, tmp_path / "out" / "r.safetensors", step=4, in_place=True) is None
    assert (tmp_path / "out" / "r.safetensors").stat().st_size < 1000
    with open_checkpoint(tmp_path / "out" / "r.safetensors") as ckpt:
        assert ckpt.path == good.absolute() and ckpt.keys == ["a.weight"]
    # our own failure (memory, a bug) is never written down as a bad checkpoint
    import ckptlens.sources.importer as importer

    def boom(src, dst, *args):
        raise MemoryError("out of memory")

    monkeypatch.setattr(importer, "import_checkpoint", boom)
    with pytest.raises(MemoryError):
        import_or_record(good, tmp_path / "out" / "d.safetensors", step=4)
    assert not (tmp_path / "out" / "d.safetensors").exists()


def test_local_checkpoints_are_referenced_pickles_converted(tmp_path):
    """Safetensors files and save_pretrained folders (sharded too) get a reference, never a copy;
    .pt/.bin files are converted; a reference whose files changed is refused, naming them."""
    import json

    import numpy as np
    import torch

    from ckptlens.sources.importer import import_or_reference
    from ckptlens.store.tensors import ReferenceFileError, TensorFile, write_tensors

    a, b = np.arange(6, dtype=np.float16).reshape(2, 3), np.ones((3, 2), np.float32)
    single = tmp_path / "ckpt_1.safetensors"
    write_tensors({"a.weight": a, "b.weight": b}, single)
    folder = tmp_path / "step2"
    write_tensors({"a.weight": a}, folder / "model-00001-of-00002.safetensors")
    write_tensors({"b.weight": b}, folder / "model-00002-of-00002.safetensors")
    index = {
        "weight_map": {"a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors"}
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt_neox", "num_attention_heads": 1}))
    pickled = tmp_path / "ckpt_3.pt"
    torch.save({"a.weight": torch.from_numpy(a.copy()), "b.weight": torch.from_numpy(b)}, pickled)
    out = tmp_path / "out"
    kinds = {p.name: import_or_reference(p, out / f"{p.name}.safetensors") for p in (single, folder, pickled)}
    assert kinds == {"ckpt_1.safetensors": "reference", "step2": "reference", "ckpt_3.pt": "converted"}
    for p in (single, folder, pickled):
        ref = out / f"{p.name}.safetensors"
        with open_checkpoint(ref) as ckpt:
            assert sorted(ckpt.keys) == ["a.weight", "b.weight"]
            np.testing.assert_array_equal(ckpt.get("a.weight"), a)
            np.testing.assert_array_equal(ckpt.get("b.weight"), b)
        if p is not pickled:
            assert ref.stat().st_size < 2000  # a reference, not a copy
            with pytest.raises(ReferenceFileError, match="not a checkpoint but a reference"):
                TensorFile(ref)  # never read as an empty checkpoint
    with open_checkpoint(out / "step2.safetensors") as ckpt:
        assert ckpt.metadata["model_type"] == "gpt_neox"  # the folder's config.json
    # a shard replaced after the reference was written: refused, naming the file
    write_tensors({"a.weight": a + 1}, folder / "model-00001-of-00002.safetensors")
    with pytest.raises(CheckpointError, match="changed since the workflow read it.*model-00001-of-00002"):
        open_checkpoint(out / "step2.safetensors")
    # an unreadable safetensors file raises (the job records it), no reference is written
    bad = tmp_path / "ckpt_4.safetensors"
    bad.write_bytes(b"\x08" + b"\x00" * 7 + b"not json")
    with pytest.raises(CheckpointError):
        import_or_reference(bad, out / "bad.safetensors")
    assert not (out / "bad.safetensors").exists()
