"""Extraction: hooks capture the right outputs, gradients equal autograd, weights equal the file."""

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from ckptlens.extract import activations, extract_model, extract_weights, gradients, load_toy
from ckptlens.io import TensorFile
from ckptlens.toy.model import AttnOnlyTransformer, ToyModelConfig
from ckptlens.toy.tasks import InductionTaskConfig
from ckptlens.toy.train import checkpoint_metadata, save_checkpoint


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(3)
    mcfg = ToyModelConfig(vocab_size=12, d_model=16, n_layers=2, n_heads=2)
    tcfg = InductionTaskConfig(vocab_size=12, seq_len=12, min_segment=2, max_segment=5, ood_segment=6)
    path = tmp_path / "step5.safetensors"
    save_checkpoint(AttnOnlyTransformer(mcfg), path, checkpoint_metadata(mcfg, tcfg, 5))
    return path


def test_weights_are_the_checkpoint_tensors(checkpoint, tmp_path):
    out = tmp_path / "w.safetensors"
    names = extract_weights(checkpoint, ["blocks.*.attn.*"], out)
    assert len(names) == 8
    ckpt, got = load_file(checkpoint), load_file(out)
    for n in names:
        np.testing.assert_array_equal(got[n], ckpt[f"{n}.weight"])
    assert "embed" not in got


def test_activation_hooks_capture_block_outputs(checkpoint):
    model, task = load_toy(checkpoint)
    x = task.inputs(task.probe_batches(1, 4, 0)[0])
    acts = activations(model, x, ["blocks.0", "blocks.1.attn.v_proj"])
    with torch.no_grad():
        h0 = model.blocks[0](model.embed(x))
        v1 = model.blocks[1].attn.v_proj(h0)
    np.testing.assert_allclose(acts["blocks.0"], h0.reshape(-1, 16).numpy(), rtol=1e-6)
    np.testing.assert_allclose(acts["blocks.1.attn.v_proj"], v1.reshape(-1, 16).numpy(), rtol=1e-6)
    assert acts["blocks.0"].shape == (4 * 12, 16)


def test_gradients_per_probe_batch(checkpoint):
    model, task = load_toy(checkpoint)
    batches = task.probe_batches(2, 4, 0)
    g = gradients(model, batches, task.loss, ["blocks.0.attn.q_proj"])
    for i, b in enumerate(batches):
        w = model.blocks[0].attn.q_proj.weight
        (expected,) = torch.autograd.grad(task.loss(model, b), w)
        np.testing.assert_allclose(g[f"blocks.0.attn.q_proj#{i}"], expected.numpy(), rtol=1e-5, atol=1e-8)


def test_extract_model_writes_only_what_is_asked(checkpoint, tmp_path):
    targets = {"activations": ["blocks.*"], "gradients": ["blocks.*.attn.k_proj"]}
    probe = {"batch_size": 4, "n_batches": 3, "seed": 1}
    extract_model(checkpoint, targets, probe, {"gradients": str(tmp_path / "g.safetensors")}, device="cpu")
    assert not (tmp_path / "a.safetensors").exists()
    grads = TensorFile(tmp_path / "g.safetensors", group_gradients=True)
    assert sorted(grads) == ["blocks.0.attn.k_proj", "blocks.1.attn.k_proj"]
    assert grads["blocks.1.attn.k_proj"].shape == (3, 16, 16)


def test_streamed_safetensors_equal_the_reference_writer(tmp_path):
    """The streaming writer's files read back identically with the safetensors package."""
    from safetensors.numpy import load_file as load
    from safetensors import safe_open

    from ckptlens.io import save_tensors_streaming

    rng = np.random.default_rng(0)
    arrays = {"a": rng.normal(size=(3, 5)).astype(np.float32), "b.c": rng.normal(size=(7,)), "empty": np.zeros((0, 4), np.float32),
              "i": np.arange(6, dtype=np.int64).reshape(2, 3)}
    names = save_tensors_streaming(iter(arrays.items()), tmp_path / "s.safetensors", {"k": "v"})
    assert names == list(arrays)
    back = load(tmp_path / "s.safetensors")
    for k, v in arrays.items():
        np.testing.assert_array_equal(back[k], v)
        assert back[k].dtype == v.dtype
    with safe_open(str(tmp_path / "s.safetensors"), framework="numpy") as f:
        assert f.metadata() == {"k": "v"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.safetensors"]
