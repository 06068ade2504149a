"""Safe, lazy checkpoint loading (ckptlens.sources.readers): safetensors, torch files and Hugging Face
folders; code-carrying pickles refused without running; broken files named with the reason."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import save_file  # noqa: E402

from ckptlens.sources.readers import (  # noqa: E402
    Checkpoint,
    CheckpointError,
    UnsafeCheckpointError,
    is_checkpoint_dir,
    open_checkpoint,
)
from tests.sources.helpers import _assert_same, _sd  # noqa: E402


# ---------------------------------------------------------------------------------------------
# formats
def test_safetensors_lazy_with_metadata(tmp_path):
    sd = _sd()
    p = tmp_path / "m.safetensors"
    save_file(sd, str(p), metadata={"ckptlens_model": json.dumps({"n_heads": 2})})
    ckpt = open_checkpoint(p)
    assert isinstance(ckpt, Checkpoint) and ckpt.format == "safetensors"
    keys, get, meta = ckpt  # the (keys, get, metadata) interface
    assert json.loads(meta["ckptlens_model"]) == {"n_heads": 2}
    _assert_same(ckpt, sd)
    with pytest.raises(KeyError, match="m.safetensors"):
        get("nope")


def test_safetensors_bf16_read_as_float32_other_dtypes_kept(tmp_path):
    sd = {"a": torch.randn(3, 5).to(torch.bfloat16), "b": torch.randn(2, 2).to(torch.float16)}
    p = tmp_path / "bf16.safetensors"
    save_file(sd, str(p))
    keys, get, _ = ckpt = open_checkpoint(p)
    assert ckpt.dtypes == {"a": "BF16", "b": "F16"}
    a = get("a")
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, sd["a"].float().numpy())
    assert get("b").dtype == np.float16


@pytest.mark.parametrize("suffix,zipfile", [(".pt", True), (".bin", True), (".pt", False)])
def test_torch_state_dict(tmp_path, suffix, zipfile):
    sd = _sd()
    p = tmp_path / f"ckpt{suffix}"
    torch.save(sd, p, _use_new_zipfile_serialization=zipfile)
    ckpt = open_checkpoint(p)
    assert ckpt.format == "torch" and ckpt.metadata == {}
    _assert_same(ckpt, sd)


def test_torch_training_checkpoint_is_unwrapped(tmp_path):
    """{"model": state_dict, "optimizer": ..., "step": ...} with DDP's "module." prefix."""
    sd = _sd()
    p = tmp_path / "train.pt"
    torch.save(
        {
            "model": {f"module.{k}": v for k, v in sd.items()},
            "step": 1200,
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]},
            "ckptlens_model": {"n_heads": 2},
        },
        p,
    )
    ckpt = open_checkpoint(p)
    _assert_same(ckpt, sd)
    assert ckpt.metadata["step"] == 1200 and ckpt.metadata["ckptlens_model"] == {"n_heads": 2}


def test_bf16_torch_tensor_read_as_float32(tmp_path):
    p = tmp_path / "bf16.pt"
    t = torch.randn(3, 3).to(torch.bfloat16)
    torch.save({"w": t}, p)
    _, get, _ = open_checkpoint(p)
    np.testing.assert_array_equal(get("w"), t.float().numpy())


# ---------------------------------------------------------------------------------------------
# untrusted pickles
class _Payload:
    """Unpickling this would create the marker file (it stands for arbitrary code)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _Exec:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


@pytest.mark.parametrize("suffix,zipfile", [(".pt", True), (".bin", True), (".pt", False), (".ckpt", True)])
@pytest.mark.parametrize("payload", [_Payload, _Exec])
def test_pickle_with_code_is_refused_without_running(tmp_path, suffix, zipfile, payload):
    marker = tmp_path / "PWNED"
    p = tmp_path / f"evil{suffix}"
    torch.save({"w": torch.ones(2, 2), "extra": payload(marker)}, p, _use_new_zipfile_serialization=zipfile)
    assert not marker.exists()  # saving does not run it
    with pytest.raises(UnsafeCheckpointError) as err:
        open_checkpoint(p)
    assert not marker.exists()  # ... and neither did loading
    msg = str(err.value)
    assert str(p) in msg and "refused" in msg and "safetensors" in msg
    assert isinstance(err.value, CheckpointError) and isinstance(err.value, ValueError)


def test_plain_pickle_with_code_is_refused(tmp_path):
    """A raw pickle (not torch.save) named .bin."""
    import pickle

    marker = tmp_path / "PWNED"
    p = tmp_path / "pytorch_model.bin"
    p.write_bytes(pickle.dumps({"w": _Payload(marker)}, protocol=2))
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        open_checkpoint(p)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_archive_is_refused(tmp_path):
    p = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(p))
    with pytest.raises(UnsafeCheckpointError, match="TorchScript"):
        open_checkpoint(p)


# ---------------------------------------------------------------------------------------------
# broken files
def _broken(tmp_path):
    sd = _sd()
    st, pt = tmp_path / "ok.safetensors", tmp_path / "ok.pt"
    save_file(sd, str(st))
    torch.save(sd, pt)
    cases = {}
    cases["missing.safetensors"] = (tmp_path / "missing.safetensors", "does not exist")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    cases["empty"] = (tmp_path / "empty.safetensors", "empty file")
    (tmp_path / "empty.pt").write_bytes(b"")
    cases["empty.pt"] = (tmp_path / "empty.pt", "empty file")
    data = st.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) - 10])
    cases["trunc.safetensors"] = (tmp_path / "trunc.safetensors", "not a valid safetensors file")
    (tmp_path / "garbage.safetensors").write_bytes(os.urandom(64))
    cases["garbage.safetensors"] = (tmp_path / "garbage.safetensors", "not a valid safetensors file")
    data = pt.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    cases["trunc.pt"] = (tmp_path / "trunc.pt", "corrupt or truncated")
    (tmp_path / "garbage.pt").write_bytes(b"\x80\x02" + os.urandom(200))
    cases["garbage.pt"] = (tmp_path / "garbage.pt", "torch checkpoint")
    (tmp_path / "weights.npz").write_bytes(b"x")
    cases["npz"] = (tmp_path / "weights.npz", "unsupported checkpoint format")
    (tmp_path / "tensor.pt").write_bytes(b"")
    torch.save(torch.ones(3), tmp_path / "tensor.pt")
    cases["not a dict"] = (tmp_path / "tensor.pt", "not a state dict")
    torch.save({"step": 3, "lr": 0.1}, tmp_path / "notensors.pt")
    cases["no tensors"] = (tmp_path / "notensors.pt", "no state dict found")
    return cases


def test_broken_files_name_the_file_and_the_reason(tmp_path):
    for label, (path, reason) in _broken(tmp_path).items():
        with pytest.raises(CheckpointError) as err:
            open_checkpoint(path)
        assert str(path) in str(err.value), label
        assert reason in str(err.value), (label, str(err.value))


# ---------------------------------------------------------------------------------------------
# Hugging Face save_pretrained folders


@pytest.fixture(scope="module")
def tiny_neox():
    tr = pytest.importorskip("transformers")
    cfg = tr.GPTNeoXConfig(
        hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=64, vocab_size=50
    )
    return tr.GPTNeoXForCausalLM(cfg).eval()


@pytest.mark.parametrize("shard", [None, "20KB"])
def test_hf_folder_single_and_sharded(tmp_path, tiny_neox, shard):
    folder = tmp_path / "step100"
    kwargs = {"max_shard_size": shard} if shard else {}
    tiny_neox.save_pretrained(folder, **kwargs)
    assert is_checkpoint_dir(folder)
    if shard:
        assert (folder / "model.safetensors.index.json").exists()
    keys, get, meta = ckpt = open_checkpoint(folder)
    assert ckpt.format == "hf_folder" and meta["num_attention_heads"] == 4 and meta["model_type"] == "gpt_neox"
    sd = dict(tiny_neox.state_dict())
    # transformers 5 writes GPT-NeoX's lm_head under its original (Pythia) name embed_out
    sd["embed_out.weight"] = sd.pop("lm_head.weight")
    assert set(keys) == set(sd) and "gpt_neox.layers.1.attention.query_key_value.weight" in keys
    for k in keys:
        np.testing.assert_array_equal(get(k), sd[k].numpy())

    from ckptlens.adapters import get_adapter

    adapter = get_adapter("auto", keys, metadata=meta, shapes=ckpt.shapes)
    assert adapter.name == "gpt_neox" and adapter.n_heads == 4
    assert sorted(adapter.layer_names(keys)) == sorted(n for n, _ in adapter.weight_matrices(keys, get))


def test_hf_folder_pytorch_model_bin(tmp_path, tiny_neox):
    folder = tmp_path / "checkpoint-300"
    folder.mkdir()
    tiny_neox.config.to_json_file(folder / "config.json")
    torch.save(tiny_neox.state_dict(), folder / "pytorch_model.bin")
    keys, get, meta = open_checkpoint(folder)
    assert meta["hidden_size"] == 32 and len(keys) == len(tiny_neox.state_dict())


def test_hf_folder_broken_shards(tmp_path, tiny_neox):
    folder = tmp_path / "sharded"
    tiny_neox.save_pretrained(folder, max_shard_size="20KB")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[1]
    data = (folder / shard).read_bytes()
    (folder / shard).write_bytes(data[:100])
    with pytest.raises(CheckpointError, match=shard):
        open_checkpoint(folder)
    (folder / shard).unlink()
    with pytest.raises(CheckpointError, match=f"{shard}.*does not exist"):
        open_checkpoint(folder)
    # an untrusted index may not point outside the folder
    index["weight_map"] = {k: "../../etc/passwd" for k in index["weight_map"]}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="not a plain file name"):
        open_checkpoint(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json"):
        open_checkpoint(folder)


def test_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no checkpoint in this folder"):
        open_checkpoint(tmp_path)
