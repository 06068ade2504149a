"""MiniLM fine-tuning for real (slow): checkpoints load as BERT, learning happens, a seed fixes the
weights, and the workflow's model extraction runs on a saved step."""

import numpy as np
import pytest

from ckptlens.sources import minilm

try:
    MINILM = minilm.minilm_dir()
except minilm.MiniLMNotInstalled as exc:
    pytest.skip(f"MiniLM model files unavailable ({exc})", allow_module_level=True)
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("minilm")
    return out, minilm.finetune(out, seed=0, steps=6, save_every=3, lr=1e-4)


def test_checkpoints_load_as_bert_and_learning_happens(run):
    from transformers import AutoTokenizer

    from ckptlens.adapters import get_adapter
    from ckptlens.sources.readers import open_checkpoint

    out, saved = run
    assert sorted(saved) == [0, 3, 6]
    assert saved[6] == out / "seed0" / "step6"
    assert (out / "tokenizer" / "tokenizer.json").is_file() or (out / "tokenizer" / "vocab.txt").is_file()
    lines = (out / "probe.txt").read_text().splitlines()
    assert len(lines) == 64 and all(ln.split("\t")[0] in ("0", "1") for ln in lines)
    with open_checkpoint(saved[6]) as ckpt:
        assert ckpt.format == "hf_folder" and (saved[6] / "model.safetensors").is_file()
        assert "classifier.weight" in ckpt.keys and ckpt.shapes["classifier.weight"] == (2, 384)
        arch = get_adapter("auto", ckpt.keys, ckpt.metadata, shapes=ckpt.shapes)
        assert arch.name == "bert" and arch.n_heads == 12
        assert len(arch.attention_modules(ckpt.keys)) == 6
    tok = AutoTokenizer.from_pretrained(str(out / "tokenizer"), local_files_only=True)
    before = minilm.evaluate(minilm.load_classifier(saved[0]), tok)
    after = minilm.evaluate(minilm.load_classifier(saved[6]), tok)
    assert after["loss"] < before["loss"] - 0.05, (before, after)
    assert after["accuracy"] >= before["accuracy"]


def test_same_seed_same_weights_other_seed_other_head_unless_head_seed(run, tmp_path):
    from ckptlens.sources.readers import open_checkpoint

    _, saved = run
    again = minilm.finetune(tmp_path / "a", seed=0, steps=3, save_every=3, lr=1e-4)
    other = minilm.finetune(tmp_path / "b", seed=1, steps=0, save_every=3)
    with (
        open_checkpoint(saved[3]) as a,
        open_checkpoint(again[3]) as b,
        open_checkpoint(other[0]) as c,
        open_checkpoint(saved[0]) as a0,
    ):
        assert a.keys == b.keys
        for k in a.keys:
            np.testing.assert_array_equal(a.get(k), b.get(k), err_msg=k)
        assert not np.array_equal(a0.get("classifier.weight"), c.get("classifier.weight"))  # the seed draws the head
        k = "encoder.layer.0.attention.self.query.weight"
        k = k if k in c.keys else f"bert.{k}"
        np.testing.assert_array_equal(a0.get(k), c.get(k))  # step 0 = the same pretrained encoder

    # head_seed: seed 1 starting from seed 0's head, so that both runs share step 0 entirely
    shared = minilm.finetune(tmp_path / "c", seed=1, head_seed=0, steps=0, save_every=3)
    with open_checkpoint(saved[0]) as a0, open_checkpoint(shared[0]) as s0:
        assert a0.keys == s0.keys
        for k in a0.keys:
            np.testing.assert_array_equal(a0.get(k), s0.get(k), err_msg=k)


def test_workflow_extraction_on_a_minilm_step(run, tmp_path):
    from ckptlens.extract.model import extract_model
    from ckptlens.sources.importer import import_checkpoint
    from ckptlens.store.tensors import TensorFile

    out, saved = run
    ckpt = tmp_path / "step6.safetensors"
    import_checkpoint(saved[6], ckpt)  # as the workflow's import rule does
    probe = {
        "text": str(out / "probe.txt"),
        "tokenizer": str(out / "tokenizer"),
        "seq_len": 32,
        "batch_size": 16,
        "n_batches": 2,
        "seed": 0,
    }
    targets = {"activations": ["bert.encoder.layer.*"], "gradients": ["bert.encoder.layer.*.attention.output.dense"]}
    outs = {"activations": str(tmp_path / "a.safetensors"), "gradients": str(tmp_path / "g.safetensors")}
    extract_model(ckpt, targets, probe, outs, device="cpu")
    acts = TensorFile(outs["activations"])
    grads = TensorFile(outs["gradients"], group_gradients=True)
    assert sorted(acts) == [f"bert.encoder.layer.{i}" for i in range(6)]
    assert acts["bert.encoder.layer.5"].shape[1] == 384 and 16 * 6 < acts["bert.encoder.layer.5"].shape[0] < 16 * 32
    assert grads["bert.encoder.layer.0.attention.output.dense"].shape == (2, 384, 384)
    assert np.abs(grads["bert.encoder.layer.0.attention.output.dense"]).sum() > 0
