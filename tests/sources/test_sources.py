"""Source helpers shared by every source (ckptlens.sources)."""

import json

from ckptlens.sources.readers import files_bytes, weight_files


def test_chunk_sizes_count_the_weights_only(tmp_path):
    """A Trainer checkpoint folder: the weights, not optimizer.pt (twice their size) and the rest."""
    ckpt = tmp_path / "checkpoint-30"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(b"w" * 1000)
    (ckpt / "optimizer.pt").write_bytes(b"o" * 2000)
    (ckpt / "scheduler.pt").write_bytes(b"s" * 100)
    (ckpt / "rng_state.pth").write_bytes(b"r" * 100)
    (ckpt / "training_args.bin").write_bytes(b"t" * 100)
    (ckpt / "trainer_state.json").write_text("{}")
    assert weight_files(ckpt) == [ckpt / "model.safetensors"]
    assert files_bytes([ckpt]) == 1000
    single = tmp_path / "ckpt_5.pt"
    single.write_bytes(b"x" * 70)
    assert files_bytes([ckpt, single]) == 1070


def test_a_sharded_folder_counts_its_shards(tmp_path):
    ckpt = tmp_path / "sharded"
    ckpt.mkdir()
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    (ckpt / "model-00001-of-00002.safetensors").write_bytes(b"1" * 300)
    (ckpt / "model-00002-of-00002.safetensors").write_bytes(b"2" * 200)
    (ckpt / "optimizer.pt").write_bytes(b"o" * 5000)
    size_index = (ckpt / "model.safetensors.index.json").stat().st_size
    assert [p.name for p in weight_files(ckpt)] == [
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    assert files_bytes([ckpt]) == 500 + size_index
    assert weight_files(tmp_path / "missing") == []
