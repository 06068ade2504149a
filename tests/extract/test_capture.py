"""Hooks (ckptlens.extract.capture): block outputs, per-batch gradients, the real tokens of a masked batch."""

import numpy as np
import torch

from ckptlens.extract.capture import capture_outputs, weight_gradients
from ckptlens.extract.trained_model import load_trained


def test_activation_hooks_capture_block_outputs(checkpoint):
    model, task = load_trained(checkpoint)
    x = task.inputs(task.probe_batches(1, 4, 0)[0])
    acts = capture_outputs(model, lambda: model(x), {n: n for n in ["blocks.0", "blocks.1.attn.v_proj"]})
    with torch.no_grad():
        h0 = model.blocks[0](model.embed(x))
        v1 = model.blocks[1].attn.v_proj(h0)
    np.testing.assert_allclose(acts["blocks.0"], h0.reshape(-1, 16).numpy(), rtol=1e-6)
    np.testing.assert_allclose(acts["blocks.1.attn.v_proj"], v1.reshape(-1, 16).numpy(), rtol=1e-6)
    assert acts["blocks.0"].shape == (4 * 12, 16)


def test_gradients_per_probe_batch(checkpoint):
    model, task = load_trained(checkpoint)
    batches = task.probe_batches(2, 4, 0)
    g = weight_gradients(
        model, lambda i: task.loss(model, batches[i]), 2, {"blocks.0.attn.q_proj": "blocks.0.attn.q_proj"}
    )
    for i, b in enumerate(batches):
        w = model.blocks[0].attn.q_proj.weight
        (expected,) = torch.autograd.grad(task.loss(model, b), w)
        np.testing.assert_allclose(g[f"blocks.0.attn.q_proj#{i}"], expected.numpy(), rtol=1e-5, atol=1e-8)


def test_captured_rows_are_the_real_tokens_of_a_masked_batch():
    """[batch, position] outputs keep the positions where the mask is true, in row order."""
    lin = torch.nn.Linear(3, 2)
    x = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    model = torch.nn.Sequential(lin)
    out = capture_outputs(model, lambda: model(x), {"lin": "0"}, mask)["lin"]
    with torch.no_grad():
        want = lin(x)[mask].numpy()
    np.testing.assert_allclose(out, want)
    assert out.shape == (5, 2)
