"""ckptlens.adapters.modernbert on tiny ModernBERT encoders (base and masked LM) built offline with
eager attention and random weights: the probabilities rebuilt from the per-head q/k pieces (the
model's rotary embedding applied with its own cos/sin, global and local layers) equal the model's
own, and the per-head OV paths summed (+ biases) equal ``attn.Wo``'s output, to 1e-5. The masked LM
saved with ``save_pretrained`` is built as a masked LM at extraction (its ``head.*``/``decoder``
keys are recognised), not as a headless model missing weights."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from ckptlens.adapters import ModernBertAdapter, default_targets, get_adapter  # noqa: E402
from ckptlens.sources.layer_names import names_from_keys  # noqa: E402
from tests.adapters.rebuild import (  # noqa: E402
    check_circuits,
    head_pieces,
    module_rope,
    randomize,
    rebuild,
    run_attention,
    state,
)

D, H, L, V, T = 32, 4, 3, 50, 7


def _cfg(**over):
    kw = dict(
        hidden_size=D,
        num_attention_heads=H,
        num_hidden_layers=L,
        intermediate_size=48,
        vocab_size=V,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        cls_token_id=1,
        sep_token_id=2,
        mask_token_id=3,
        global_attn_every_n_layers=2,
        attention_bias=True,
    )
    kw.update(over)
    cfg = transformers.ModernBertConfig(**kw)
    cfg._attn_implementation = "eager"
    return cfg


@pytest.fixture(scope="module", params=["ModernBertModel", "ModernBertForMaskedLM"])
def mbert(request):
    cfg = _cfg()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = getattr(transformers, request.param)(cfg)
    return randomize(model, seed=7), cfg


def test_modernbert_heads_rebuild_attention(mbert):
    model, cfg = mbert
    keys, get, sd = state(model)
    adapter = get_adapter("auto", keys, metadata=cfg.to_dict())
    assert isinstance(adapter, ModernBertAdapter) and adapter.n_heads == H
    base = model if isinstance(model, transformers.ModernBertModel) else model.model
    prefix = "" if base is model else "model."
    tokens = torch.randint(4, V, (1, T), generator=torch.Generator().manual_seed(4))
    for i, layer in enumerate(base.layers):
        module = f"{prefix}layers.{i}.attn"
        x, pos, probs, y = run_attention(model, layer.attn, tokens, output_module=layer.attn.Wo)
        p = head_pieces(adapter, keys, get, module)
        aw = adapter.attention_weights(keys, get, module)
        got, out, out_ov = rebuild(p, aw, x, causal=False, rope=module_rope(layer.attn, pos))
        torch.testing.assert_close(got, probs, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out, y, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out_ov, y, rtol=1e-5, atol=1e-5)
        check_circuits(p, aw)
    names = names_from_keys(keys, cfg.to_dict(), {k: v.shape for k, v in sd.items()})
    a = f"{prefix}layers.*.attn"
    assert default_targets(names, cfg.to_dict()) == {
        "weights": [f"{a}.Wo", f"{a}.head*.ov", f"{a}.head*.qk", f"{prefix}layers.*.mlp.Wo"],
        "activations": [f"{prefix}layers.*"],
        "gradients": [f"{a}.Wo", f"{prefix}layers.*.mlp.Wo"],
    }
    listed = adapter.layer_names(keys)
    assert listed.count("embed") == 1 and f"{prefix}embeddings.tok_embeddings" not in listed
    assert f"{prefix}layers.0.mlp.Wi" in listed  # the fused GLU input, one matrix [2·d_ff, d]


def test_modernbert_masked_lm_is_built_with_its_head_at_extraction(tmp_path):
    from ckptlens.extract.hf_model import MASKED_LM, HFModel, model_kind

    cfg = _cfg()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = randomize(transformers.ModernBertForMaskedLM(cfg), seed=8)
    model.save_pretrained(tmp_path / "checkpoint-10")
    keys = list(model.state_dict())
    assert model_kind({"model_type": "modernbert"}, keys) == MASKED_LM  # by its head keys alone
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = HFModel(tmp_path / "checkpoint-10")
        hf.load(tmp_path / "checkpoint-10")  # strict: a weight the model needs and lacks is an error
    assert hf.kind == MASKED_LM and isinstance(hf.model, transformers.ModernBertForMaskedLM)
    torch.testing.assert_close(
        hf.model.model.layers[1].attn.Wqkv.weight, model.model.layers[1].attn.Wqkv.weight, rtol=0, atol=0
    )


def test_modernbert_masked_lm_default_targets_extract_activations_and_gradients(tmp_path):
    """The masked LM's default targets extract: block outputs equal the direct forward's hidden
    states (1e-5), and gradients come from its own masked-LM loss (a headless model would refuse)."""
    from safetensors.numpy import load_file

    from ckptlens.extract.hf_model import _indices
    from ckptlens.extract.model import extract_model
    from ckptlens.store.tensors import TensorFile

    cfg = _cfg()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = randomize(transformers.ModernBertForMaskedLM(cfg), seed=9)
    model.save_pretrained(tmp_path / "checkpoint-10")
    ids = np.random.default_rng(1).integers(4, V, size=(8, T))
    np.save(tmp_path / "ids.npy", ids)
    probe = {"tokens": str(tmp_path / "ids.npy"), "batch_size": 2, "n_batches": 1, "seed": 0, "mask_token_id": 3}
    keys, _, sd = state(model)
    targets = default_targets(names_from_keys(keys, cfg.to_dict(), {k: v.shape for k, v in sd.items()}))
    outs = {"activations": str(tmp_path / "a.safetensors"), "gradients": str(tmp_path / "g.safetensors")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        extract_model(tmp_path / "checkpoint-10", targets, probe, outs, device="cpu")
    acts = load_file(outs["activations"])
    assert sorted(acts) == [f"model.layers.{i}" for i in range(L)]
    x = torch.as_tensor(ids[_indices(8, 2, 1, 0, "")[0]])
    with torch.no_grad():
        ref = model(x, output_hidden_states=True)
    np.testing.assert_allclose(
        acts["model.layers.0"], ref.hidden_states[1].reshape(-1, D).numpy(), rtol=1e-5, atol=1e-5
    )
    grads = TensorFile(outs["gradients"], group_gradients=True)
    assert sorted(grads) == sorted(f"model.layers.{i}.{m}" for i in range(L) for m in ("attn.Wo", "mlp.Wo"))
    assert all(np.isfinite(grads[k]).all() and np.abs(grads[k]).sum() > 0 for k in grads)
