"""Hugging Face extraction on tiny random models built offline: hooks capture what a direct forward
computes, gradients equal autograd of the model's own loss, text probes are tokenized deterministically,
checkpoint naming (Pythia's embed_out, prefix-less GPT-2) is kept, loading is strict."""

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as load_np
from safetensors.torch import save_file

pytest.importorskip("transformers")
from ckptlens.extract.hf_model import (  # noqa: E402
    ExtractionError,
    _indices,
    load_hf_model,
    model_kind,
    probe_batches,
)
from ckptlens.extract.model import extract_model
from ckptlens.store.tensors import TensorFile

WORDS = "the a cat dog bird sat ran on under mat rug good bad very not".split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _save(model, path, rename=None, drop=(), extra=None):
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    for k in drop:
        sd.pop(k)
    for old, new in (rename or {}).items():
        sd[new] = sd.pop(old)
    sd.update(extra or {})
    save_file(sd, str(path))
    return path


def _config(model) -> dict:
    return json.loads(model.config.to_json_string())


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIAL + WORDS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    d = tmp_path_factory.mktemp("tok")
    PreTrainedTokenizerFast(
        tokenizer_object=tk,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    ).save_pretrained(str(d))
    return d


@pytest.fixture(scope="module")
def probe_text(tmp_path_factory):
    rng = np.random.default_rng(0)
    lines = []
    for i in range(24):
        n = int(rng.integers(2, 7))
        words = " ".join(rng.choice(WORDS, n))
        lines.append(f"{i % 2}\t{words}")
    p = tmp_path_factory.mktemp("probe") / "probe.txt"
    p.write_text("\n".join(lines) + "\n")
    return p


@pytest.fixture(scope="module")
def neox(tmp_path_factory):
    """A tiny GPT-NeoX saved like a Pythia checkpoint: 'embed_out', old attention buffers."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    cfg = GPTNeoXConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        tie_word_embeddings=False,
    )
    model = GPTNeoXForCausalLM(cfg).eval()
    d = tmp_path_factory.mktemp("neox")
    extra = {
        "gpt_neox.layers.0.attention.bias": torch.ones(1, 1, 4, 4, dtype=torch.bool),
        "gpt_neox.layers.0.attention.rotary_emb.inv_freq": torch.ones(2),
    }
    path = _save(model, d / "step10.safetensors", rename={"lm_head.weight": "embed_out.weight"}, extra=extra)
    ids = np.random.default_rng(1).integers(0, 40, size=(20, 12))
    np.save(d / "ids.npy", ids)
    return model, path, _config(model), d / "ids.npy"


def _forward_ids(model, ids):
    with torch.no_grad():
        return model(torch.as_tensor(ids), output_hidden_states=True)


def test_probe_indices_are_seeded_disjoint_slices():
    a = _indices(20, 4, 3, seed=5, what="x")
    assert [len(i) for i in a] == [4, 4, 4]
    assert len(set(np.concatenate(a).tolist())) == 12  # disjoint
    for x, y in zip(a, _indices(20, 4, 3, seed=5, what="x")):
        np.testing.assert_array_equal(x, y)
    small = _indices(5, 4, 3, seed=5, what="x")  # set too small for disjoint batches: sampled per batch
    assert all(len(set(i.tolist())) == 4 for i in small)
    with pytest.raises(ExtractionError, match="larger than the probe set"):
        _indices(3, 4, 1, seed=0, what="x")


def test_neox_activations_equal_direct_forward(neox, tmp_path):
    model, path, cfg, ids_path = neox
    probe = {"tokens": str(ids_path), "batch_size": 4, "n_batches": 2, "seed": 3}
    targets = {"activations": ["gpt_neox.layers.*", "gpt_neox.layers.0.mlp.dense_h_to_4h", "embed_out"]}
    out = tmp_path / "a.safetensors"
    extract_model(path, targets, probe, {"activations": str(out)}, device="cpu", hf_config=cfg)
    acts = load_np(out)
    # the checkpoint's own names: 'embed_out' (transformers 5 calls the module lm_head)
    assert sorted(acts) == [
        "embed_out",
        "gpt_neox.layers.0",
        "gpt_neox.layers.0.mlp.dense_h_to_4h",
        "gpt_neox.layers.1",
    ]
    batch0 = np.load(ids_path)[_indices(20, 4, 2, 3, "")[0]]
    ref = _forward_ids(model, batch0)
    np.testing.assert_allclose(
        acts["gpt_neox.layers.0"], ref.hidden_states[1].reshape(-1, 16).numpy(), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(acts["embed_out"], ref.logits.reshape(-1, 40).numpy(), rtol=1e-5, atol=1e-6)
    layer = model.gpt_neox.layers[0]  # parallel residual: mlp(post_attention_layernorm(layer input))
    with torch.no_grad():
        h4 = layer.mlp.dense_h_to_4h(layer.post_attention_layernorm(ref.hidden_states[0]))
    np.testing.assert_allclose(
        acts["gpt_neox.layers.0.mlp.dense_h_to_4h"], h4.reshape(-1, 32).numpy(), rtol=1e-5, atol=1e-6
    )
    assert acts["gpt_neox.layers.1"].shape == (4 * 12, 16)


def test_neox_gradients_equal_autograd_of_hf_loss(neox, tmp_path):
    model, path, cfg, ids_path = neox
    probe = {"tokens": str(ids_path), "batch_size": 4, "n_batches": 2, "seed": 3}
    targets = {"gradients": ["gpt_neox.layers.*.attention.query_key_value", "embed_out"]}
    out = tmp_path / "g.safetensors"
    extract_model(path, targets, probe, {"gradients": str(out)}, device="cpu", hf_config=cfg)
    grads = TensorFile(out, group_gradients=True)
    assert sorted(grads) == [
        "embed_out",
        "gpt_neox.layers.0.attention.query_key_value",
        "gpt_neox.layers.1.attention.query_key_value",
    ]
    assert grads["embed_out"].shape == (2, 40, 16)
    ids = np.load(ids_path)
    for i, idx in enumerate(_indices(20, 4, 2, 3, "")):
        x = torch.as_tensor(ids[idx])
        loss = model(x, labels=x).loss  # transformers' own shifted next-token loss
        w = [model.gpt_neox.layers[1].attention.query_key_value.weight, model.lm_head.weight]
        g_qkv, g_out = torch.autograd.grad(loss, w)
        np.testing.assert_allclose(
            grads["gpt_neox.layers.1.attention.query_key_value"][i], g_qkv.numpy(), rtol=1e-4, atol=1e-7
        )
        np.testing.assert_allclose(grads["embed_out"][i], g_out.numpy(), rtol=1e-4, atol=1e-7)


def test_gpt2_prefixless_checkpoint_tied_head_conv1d_transposed(tmp_path):
    """Saved like the hub's gpt2: no 'transformer.' prefix, no lm_head (tied to wte)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=30, n_embd=16, n_layer=2, n_head=2, n_positions=16, bos_token_id=0, eos_token_id=0)
    ).eval()
    sd = {k.removeprefix("transformer."): v.clone() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    path = tmp_path / "gpt2.safetensors"
    save_file(sd, str(path))
    ids = np.random.default_rng(2).integers(0, 30, size=(8, 10))
    np.save(tmp_path / "ids.npy", ids)
    probe = {"tokens": str(tmp_path / "ids.npy"), "batch_size": 4, "n_batches": 2, "seed": 0}
    targets = {"activations": ["h.*"], "gradients": ["h.0.attn.c_attn", "h.1.mlp.c_fc"]}
    outs = {"activations": str(tmp_path / "a.safetensors"), "gradients": str(tmp_path / "g.safetensors")}
    extract_model(path, targets, probe, outs, device="cpu", hf_config=_config(model))
    acts, grads = load_np(outs["activations"]), TensorFile(outs["gradients"], group_gradients=True)
    assert sorted(acts) == ["h.0", "h.1"] and sorted(grads) == ["h.0.attn.c_attn", "h.1.mlp.c_fc"]
    b0, b1 = _indices(8, 4, 2, 0, "")
    ref = _forward_ids(model, ids[b0])
    np.testing.assert_allclose(acts["h.0"], ref.hidden_states[1].reshape(-1, 16).numpy(), rtol=1e-5, atol=1e-6)
    x = torch.as_tensor(ids[b1])
    (g,) = torch.autograd.grad(model(x, labels=x).loss, model.transformer.h[0].attn.c_attn.weight)
    assert grads["h.0.attn.c_attn"].shape == (2, 48, 16)  # Conv1D [in, out] -> [out, in], as the adapter
    np.testing.assert_allclose(grads["h.0.attn.c_attn"][1], g.T.numpy(), rtol=1e-4, atol=1e-7)


@pytest.fixture(scope="module")
def bert_cls(tmp_path_factory):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(2)
    cfg = BertConfig(
        vocab_size=len(SPECIAL) + len(WORDS),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=2,
    )
    model = BertForSequenceClassification(cfg).eval()
    path = _save(model, tmp_path_factory.mktemp("bert") / "bert.safetensors")
    return model, path, _config(model)


def test_text_probe_is_tokenized_deterministically(tokenizer_dir, probe_text):
    from transformers import AutoTokenizer

    probe = {
        "text": str(probe_text),
        "tokenizer": str(tokenizer_dir),
        "seq_len": 10,
        "batch_size": 4,
        "n_batches": 3,
        "seed": 7,
    }
    a, b = probe_batches(probe), probe_batches(probe)
    lines = probe_text.read_text().splitlines()
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    for i, idx in enumerate(_indices(len(lines), 4, 3, 7, "")):
        assert set(a[i]) == {"input_ids", "attention_mask", "labels"}
        for k in a[i]:
            assert torch.equal(a[i][k], b[i][k])
        texts = [lines[j].split("\t", 1)[1] for j in idx]
        enc = tok(texts, padding="max_length", max_length=10, truncation=True)
        assert a[i]["input_ids"].tolist() == enc["input_ids"]
        assert a[i]["labels"].tolist() == [int(lines[j].split("\t")[0]) for j in idx]
        assert (a[i]["input_ids"][:, 0] == 2).all()  # [CLS]
    plain = probe_batches({**probe, "text_format": "plain"})  # tabs kept as text: no labels
    assert "labels" not in plain[0]


def test_bert_classifier_activations_skip_padding_and_gradients(bert_cls, tokenizer_dir, probe_text, tmp_path):
    model, path, cfg = bert_cls
    assert model_kind(cfg, ["classifier.weight", "bert.embeddings.word_embeddings.weight"]) == "sequence_classification"
    probe = {
        "text": str(probe_text),
        "tokenizer": str(tokenizer_dir),
        "seq_len": 10,
        "batch_size": 6,
        "n_batches": 2,
        "seed": 1,
    }
    targets = {
        "activations": ["bert.encoder.layer.*", "classifier"],
        "gradients": ["bert.encoder.layer.*.attention.self.query", "classifier"],
    }
    outs = {"activations": str(tmp_path / "a.safetensors"), "gradients": str(tmp_path / "g.safetensors")}
    extract_model(path, targets, probe, outs, device="cpu", hf_config=cfg)
    acts, grads = load_np(outs["activations"]), TensorFile(outs["gradients"], group_gradients=True)
    batches = probe_batches(probe)
    b0 = batches[0]
    mask = b0["attention_mask"].bool()
    with torch.no_grad():
        ref = model(input_ids=b0["input_ids"], attention_mask=b0["attention_mask"], output_hidden_states=True)
    assert acts["bert.encoder.layer.1"].shape == (int(mask.sum()), 16)  # padding positions dropped
    np.testing.assert_allclose(acts["bert.encoder.layer.1"], ref.hidden_states[2][mask].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(acts["classifier"], ref.logits.numpy(), rtol=1e-5, atol=1e-6)
    for i, b in enumerate(batches):
        loss = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
        w = [model.bert.encoder.layer[0].attention.self.query.weight, model.classifier.weight]
        gq, gc = torch.autograd.grad(loss, w)
        np.testing.assert_allclose(
            grads["bert.encoder.layer.0.attention.self.query"][i], gq.numpy(), rtol=1e-4, atol=1e-7
        )
        np.testing.assert_allclose(grads["classifier"][i], gc.numpy(), rtol=1e-4, atol=1e-7)


def test_bert_attention_probabilities_of_the_real_tokens(bert_cls, tokenizer_dir, probe_text, tmp_path):
    """The attentions extraction against softmax(QKᵀ/√d_head) over the real keys, written out from
    the layer's own q/k weights and its input: one row per real query token, padding left out."""
    model, path, cfg = bert_cls
    probe = {
        "text": str(probe_text),
        "tokenizer": str(tokenizer_dir),
        "seq_len": 10,
        "batch_size": 6,
        "n_batches": 1,
        "seed": 1,
    }
    out = tmp_path / "att.safetensors"
    extract_model(
        path,
        {"attentions": ["bert.encoder.layer.*.attention"]},
        probe,
        {"attentions": str(out)},
        device="cpu",
        hf_config=cfg,
    )
    att = load_np(out)
    assert sorted(att) == ["bert.encoder.layer.0.attention", "bert.encoder.layer.1.attention"]
    b0 = probe_batches(probe)[0]
    mask = b0["attention_mask"].bool()
    with torch.no_grad():
        hidden = model(input_ids=b0["input_ids"], attention_mask=b0["attention_mask"], output_hidden_states=True)
        x = hidden.hidden_states[1]  # the input of layer 1
        layer = model.bert.encoder.layer[1].attention.self
        n_heads = model.config.num_attention_heads
        dh = x.shape[-1] // n_heads
        q = (x @ layer.query.weight.T + layer.query.bias).view(*x.shape[:2], n_heads, dh).transpose(1, 2)
        k = (x @ layer.key.weight.T + layer.key.bias).view(*x.shape[:2], n_heads, dh).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / dh**0.5
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        want = scores.softmax(-1).permute(0, 2, 1, 3)[mask]  # [real query tokens, heads, keys]
    got = att["bert.encoder.layer.1.attention"]
    assert got.shape == (int(mask.sum()), n_heads, 10)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=2), 1.0, rtol=1e-5)
    assert (got[..., ~mask[0].numpy()][: int(mask[0].sum())] == 0).all()  # no weight on padding keys


def test_bert_masked_lm_and_headless(tokenizer_dir, probe_text, tmp_path):
    from transformers import BertConfig, BertForMaskedLM, BertModel

    torch.manual_seed(3)
    cfg = BertConfig(
        vocab_size=len(SPECIAL) + len(WORDS),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    mlm = BertForMaskedLM(cfg).eval()
    path = _save(mlm, tmp_path / "mlm.safetensors", drop=["cls.predictions.decoder.weight"])  # tied to the embedding
    probe = {
        "text": str(probe_text),
        "tokenizer": str(tokenizer_dir),
        "text_format": "plain",
        "seq_len": 10,
        "batch_size": 4,
        "n_batches": 2,
        "seed": 0,
    }
    targets = {"gradients": ["bert.encoder.layer.0.attention.self.value"]}
    g1, g2 = tmp_path / "g1.safetensors", tmp_path / "g2.safetensors"
    extract_model(path, targets, probe, {"gradients": str(g1)}, device="cpu", hf_config=_config(mlm))
    extract_model(path, targets, probe, {"gradients": str(g2)}, device="cpu", hf_config=_config(mlm))
    a, b = load_np(g1), load_np(g2)
    assert sorted(a) == ["bert.encoder.layer.0.attention.self.value#0", "bert.encoder.layer.0.attention.self.value#1"]
    for k in a:  # deterministic masking
        np.testing.assert_array_equal(a[k], b[k])
        assert np.abs(a[k]).sum() > 0

    # a bare encoder (no head, keys without the 'bert.' prefix): activations yes, gradients refused
    torch.manual_seed(4)
    bare = BertModel(cfg).eval()
    bpath = _save(bare, tmp_path / "bare.safetensors")
    out = tmp_path / "a.safetensors"
    extract_model(
        bpath,
        {"activations": ["encoder.layer.0"]},
        probe,
        {"activations": str(out)},
        device="cpu",
        hf_config=_config(bare),
    )
    assert list(load_np(out)) == ["encoder.layer.0"]
    with pytest.raises(ExtractionError, match="no task head"):
        extract_model(
            bpath,
            {"gradients": ["encoder.layer.0.output.dense"]},
            probe,
            {"gradients": str(tmp_path / "g.safetensors")},
            device="cpu",
            hf_config=_config(bare),
        )


def test_strict_loading_and_clear_errors(neox, tmp_path):
    model, path, cfg, ids_path = neox
    from safetensors.torch import load_file

    sd = load_file(str(path))
    sd.pop("gpt_neox.layers.1.mlp.dense_4h_to_h.weight")
    bad = tmp_path / "bad.safetensors"
    save_file(sd, str(bad))
    with pytest.raises(ExtractionError, match=r"bad\.safetensors.*dense_4h_to_h"):
        load_hf_model(bad, cfg)
    with pytest.raises(ExtractionError, match="model_type"):
        load_hf_model(path, {})  # no config given, none in the metadata
    wrong = {**cfg, "hidden_size": 32, "intermediate_size": 64}
    with pytest.raises(ExtractionError, match="do not fit"):
        load_hf_model(path, wrong)
    probe = {"tokens": str(ids_path), "batch_size": 2, "n_batches": 1}
    with pytest.raises(ExtractionError, match="no module matches"):
        extract_model(
            path,
            {"activations": ["nothing.*"]},
            probe,
            {"activations": str(tmp_path / "x")},
            device="cpu",
            hf_config=cfg,
        )
    with pytest.raises(ExtractionError, match="exactly one of"):
        probe_batches({"batch_size": 2})
