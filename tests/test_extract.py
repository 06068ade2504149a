"""Extraction: hooks capture the right outputs, gradients equal autograd, weights equal the file."""

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from ckptlens.extract.capture import capture_outputs, weight_gradients
from ckptlens.extract.model import extract_model, extract_models, open_model
from ckptlens.extract.trained_model import load_trained
from ckptlens.extract.weights import extract_weights
from ckptlens.sources.trained.induction import InductionTaskConfig
from ckptlens.sources.trained.train import checkpoint_metadata, save_checkpoint
from ckptlens.sources.trained.transformer import AttnOnlyTransformer, ToyModelConfig
from ckptlens.store.tensors import TensorFile


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


def test_extract_model_writes_only_what_is_asked(checkpoint, tmp_path):
    targets = {"activations": ["blocks.*"], "gradients": ["blocks.*.attn.k_proj"]}
    probe = {"batch_size": 4, "n_batches": 3, "seed": 1}
    extract_model(checkpoint, targets, probe, {"gradients": str(tmp_path / "g.safetensors")}, device="cpu")
    assert not (tmp_path / "a.safetensors").exists()
    grads = TensorFile(tmp_path / "g.safetensors", group_gradients=True)
    assert sorted(grads) == ["blocks.0.attn.k_proj", "blocks.1.attn.k_proj"]
    assert grads["blocks.1.attn.k_proj"].shape == (3, 16, 16)


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


def test_a_series_of_checkpoints_builds_the_model_once(checkpoint, tmp_path, monkeypatch):
    """extract_models over two checkpoints = extract_model on each, with one model build."""
    from ckptlens.extract import trained_model

    other = tmp_path / "step9.safetensors"
    torch.manual_seed(4)
    mcfg = ToyModelConfig(vocab_size=12, d_model=16, n_layers=2, n_heads=2)
    tcfg = InductionTaskConfig(vocab_size=12, seq_len=12, min_segment=2, max_segment=5, ood_segment=6)
    save_checkpoint(AttnOnlyTransformer(mcfg), other, checkpoint_metadata(mcfg, tcfg, 9))
    targets = {"activations": ["blocks.*"], "gradients": ["blocks.*.attn.q_proj"]}
    probe = {"batch_size": 4, "n_batches": 2, "seed": 1}
    single = []
    for i, c in enumerate((checkpoint, other)):
        outs = {k: str(tmp_path / f"single{i}_{k}.safetensors") for k in ("activations", "gradients")}
        extract_model(c, targets, probe, outs, device="cpu")
        single.append(outs)
    builds = []
    real = trained_model._build
    monkeypatch.setattr(trained_model, "_build", lambda ckpt: builds.append(ckpt) or real(ckpt))
    series = [{k: str(tmp_path / f"series{i}_{k}.safetensors") for k in ("activations", "gradients")} for i in range(2)]
    extract_models([checkpoint, other], targets, probe, series, device="cpu")
    assert len(builds) == 1
    for a, b in zip(single, series):
        for k in a:
            x, y = load_file(a[k]), load_file(b[k])
            assert sorted(x) == sorted(y)
            for name in x:
                np.testing.assert_array_equal(x[name], y[name])


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


def test_open_model_tells_the_models_apart(checkpoint):
    pm = open_model(checkpoint, {"batch_size": 2, "n_batches": 1, "seed": 0}, device="cpu")
    assert pm.kind == "toy" and "blocks.0.attn" in pm.modules and pm.loss is not None


def test_a_bad_checkpoint_in_a_series_is_a_checkpoint_error_naming_it(checkpoint, tmp_path):
    """The weights of every checkpoint of a series go through the project's one reader: a file that
    is not safetensors fails with its name, not with the parser's bare message."""
    from ckptlens.store.records import CheckpointError

    bad = tmp_path / "step9.safetensors"
    bad.write_bytes(b"PK\x03\x04 not a safetensors file")
    probe = {"batch_size": 2, "n_batches": 1, "seed": 0}
    outs = [{"activations": str(tmp_path / f"a{i}.safetensors")} for i in range(2)]
    with pytest.raises(CheckpointError, match=r"step9\.safetensors.*zip archive"):
        extract_models([checkpoint, bad], {"activations": ["blocks.*"]}, probe, outs, device="cpu")
    assert (tmp_path / "a0.safetensors").exists()
