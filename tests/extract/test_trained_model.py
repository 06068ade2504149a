"""The demo transformer as a probed model (ckptlens.extract.trained_model): attention probabilities."""

import numpy as np
import torch
from safetensors.numpy import load_file

from ckptlens.extract.model import extract_model
from ckptlens.extract.trained_model import load_trained


def test_attention_probabilities_of_the_demo_transformer(checkpoint, tmp_path):
    """The attentions extraction against the causal softmax of rotary q·k, written out with numpy
    from the block's input and its q/k weights."""
    out = tmp_path / "att.safetensors"
    probe = {"batch_size": 3, "n_batches": 1, "seed": 2}
    extract_model(checkpoint, {"attentions": ["blocks.*.attn"]}, probe, {"attentions": str(out)}, device="cpu")
    att = load_file(out)
    assert sorted(att) == ["blocks.0.attn", "blocks.1.attn"]
    model, task = load_trained(checkpoint)
    x = task.inputs(task.probe_batches(1, 3, 2)[0])
    with torch.no_grad():
        h = model.embed(x).numpy().astype(np.float64)  # the input of blocks.0.attn
    w = {p: model.blocks[0].attn.__getattr__(f"{p}_proj").weight.detach().numpy().astype(np.float64) for p in "qk"}
    b, t, d = h.shape
    n_heads, dh = 2, d // 2
    ang = np.arange(t)[:, None] * 10000.0 ** (-np.arange(0, dh, 2) / dh)[None, :]

    def rotate(y):  # y [b, heads, t, dh]: pairs (2i, 2i+1) rotated by position · ω_i
        out = np.empty_like(y)
        c, s = np.cos(ang), np.sin(ang)
        out[..., 0::2] = c * y[..., 0::2] - s * y[..., 1::2]
        out[..., 1::2] = s * y[..., 0::2] + c * y[..., 1::2]
        return out

    q, k = ((h @ w[p].T).reshape(b, t, n_heads, dh).transpose(0, 2, 1, 3) for p in "qk")
    scores = rotate(q) @ rotate(k).transpose(0, 1, 3, 2) / np.sqrt(dh)
    scores[:, :, ~np.tril(np.ones((t, t), bool))] = -np.inf
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    want = p.transpose(0, 2, 1, 3).reshape(b * t, n_heads, t)  # every position is a real token
    np.testing.assert_allclose(att["blocks.0.attn"], want, rtol=1e-5, atol=1e-7)


def test_a_reference_to_a_checkpoint_trained_here_opens_its_model(checkpoint, tmp_path):
    """A local folder of checkpoints trained by ckptlens is read in place (a reference): the model
    family is told from the file the reference names, and its weights load from there."""
    import os

    import pytest

    from ckptlens.extract import trained_model
    from ckptlens.sources.importer import import_or_reference
    from ckptlens.store.records import CheckpointError

    ref = tmp_path / "ref" / "step5.safetensors"
    assert import_or_reference(checkpoint, ref) == "reference"
    assert trained_model.recognises(ref)
    model, _ = load_trained(ref)
    direct, _ = load_trained(checkpoint)
    for (name, a), (_, b) in zip(model.state_dict().items(), direct.state_dict().items()):
        assert torch.equal(a, b), name
    os.utime(checkpoint, ns=(1, 1))  # touched: no longer the file the reference was made for
    with pytest.raises(CheckpointError, match="changed since the workflow read it"):
        trained_model.recognises(ref)
