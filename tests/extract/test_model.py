"""Model extraction (ckptlens.extract.model): only what is asked is written, a series of checkpoints
builds the model once, the model kinds are told apart, a bad checkpoint in a series is named."""

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from ckptlens.extract.model import extract_model, extract_models, open_model
from ckptlens.sources.trained.induction import InductionTaskConfig
from ckptlens.sources.trained.train import checkpoint_metadata, save_checkpoint
from ckptlens.sources.trained.transformer import AttnOnlyTransformer, ToyModelConfig
from ckptlens.store.tensors import TensorFile


def test_extract_model_writes_only_what_is_asked(checkpoint, tmp_path):
    targets = {"activations": ["blocks.*"], "gradients": ["blocks.*.attn.k_proj"]}
    probe = {"batch_size": 4, "n_batches": 3, "seed": 1}
    extract_model(checkpoint, targets, probe, {"gradients": str(tmp_path / "g.safetensors")}, device="cpu")
    assert not (tmp_path / "a.safetensors").exists()
    grads = TensorFile(tmp_path / "g.safetensors", group_gradients=True)
    assert sorted(grads) == ["blocks.0.attn.k_proj", "blocks.1.attn.k_proj"]
    assert grads["blocks.1.attn.k_proj"].shape == (3, 16, 16)


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


def _neox_series(tmp_path, n=3, rows=48):
    """n random GPT-NeoX checkpoints (seeds 0…n−1, safetensors), a probe of ``rows`` × 16 token ids, the config."""
    import json

    from safetensors.torch import save_file
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    cfg = GPTNeoXConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    paths = []
    for seed in range(n):
        torch.manual_seed(seed)
        model = GPTNeoXForCausalLM(cfg).eval()
        paths.append(tmp_path / f"step{seed}.safetensors")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(paths[-1]))
    np.save(tmp_path / "ids.npy", np.random.default_rng(1).integers(0, 64, size=(rows, 16)))
    probe = {"tokens": str(tmp_path / "ids.npy"), "batch_size": 16, "n_batches": 3}
    return paths, probe, json.loads(model.config.to_json_string())


# ---------------------------------------------------------------- compact activation storage

#: metrics whose values change by less than this (relative) when the activations are stored as
#: float16 (measured ≤ 5e-5 on this probe: 256 tokens × 32 features, two GPT-NeoX checkpoints);
#: the others (mutual_knn_*, intrinsic_dimension, pwcca_*, linearity_*, consecutive_cosine) moved by
#: 5e-4 to 5e-2 there: keep float32 for them
FLOAT16_TOLERANT = {
    "activation_norm": {},
    "cka_to_previous": {},
    "svcca_to_final": {},
    "rankme": {},
    "anisotropy": {},
    "anisotropy_microscope": {},
    "activation_pca_evr": {},
}
FLOAT16_RTOL = 1e-3


def test_float16_activations_halve_the_bytes_and_keep_the_tolerant_metrics(tmp_path):
    from ckptlens import metrics as M
    from ckptlens.metrics.inputs import open_metric_inputs
    from ckptlens.store.tensors import SafetensorsFile

    paths, _, hf = _neox_series(tmp_path, 2, rows=64)
    targets = {"activations": ["gpt_neox.layers.*", "gpt_neox.layers.*.mlp.dense_4h_to_h"]}
    values, sizes = {}, {}
    for dtype in ("float32", "float16"):
        probe = {"tokens": str(tmp_path / "ids.npy"), "batch_size": 16, "n_batches": 1, "activation_dtype": dtype}
        outs = [{"activations": str(tmp_path / f"a{s}_{dtype}.safetensors")} for s in range(2)]
        extract_models(paths, targets, probe, outs, device="cpu", hf_config=hf)
        stored = SafetensorsFile(outs[0]["activations"])
        assert set(stored.dtypes.values()) == {"F16" if dtype == "float16" else "F32"}
        sizes[dtype] = sum(np.prod(s) for s in stored.shapes.values())
        other = outs[1]["activations"]
        current, refs, _ = open_metric_inputs({"current": outs[0]["activations"], "final": other, "previous": other})
        assert current["gpt_neox.layers.0"].dtype == np.float32  # metrics read float32
        for fam, names in M.group_by_family(FLOAT16_TOLERANT).items():
            rows = M.compute_family(fam, {n: FLOAT16_TOLERANT[n] for n in names}, current, refs)
            values[dtype] = {**values.get(dtype, {}), **{(r["layer"], r["metric"]): r["value"] for r in rows}}
    assert len(values["float32"]) == 4 * (len(FLOAT16_TOLERANT) + 4)  # activation_pca_evr: 5 values
    for key, v in values["float32"].items():
        assert np.isfinite(v) and values["float16"][key] == pytest.approx(v, rel=FLOAT16_RTOL), key
    for dtype in ("float32", "float16"):  # same tensors, half the bytes
        assert sizes[dtype] == sizes["float32"]
    a32, a16 = (tmp_path / f"a0_{d}.safetensors" for d in ("float32", "float16"))
    assert a16.stat().st_size < 0.55 * a32.stat().st_size


def test_float16_storage_keeps_out_of_range_activations_float32():
    from ckptlens.extract.model import ExtractionError, _compact

    acts = {"small": np.ones((3, 2), np.float32), "huge": np.full((3, 2), 1e5, np.float32)}
    with pytest.warns(RuntimeWarning, match="exceed float16's range"):
        out = _compact(acts, "float16", "ckpt")
    assert out["small"].dtype == np.float16 and out["huge"].dtype == np.float32
    with pytest.raises(ExtractionError, match="activation_dtype"):
        _compact(acts, "bfloat16", "ckpt")


# ---------------------------------------------------------------- one forward, and CKA's terms
def test_one_forward_serves_the_activations_and_the_first_gradient_batch(tmp_path, monkeypatch):
    """With gradients, a causal LM's activations come from the first gradient batch's forward (no
    forward of their own) and are the activations of a forward of their own."""
    from ckptlens.extract import model as extraction

    paths, probe, hf = _neox_series(tmp_path, 1)
    targets = {"activations": ["gpt_neox.layers.*", "gpt_neox.layers.*.attention.dense"], "gradients": ["**.dense"]}
    alone = str(tmp_path / "alone.safetensors")
    extract_models(paths, targets, probe, [{"activations": alone}], device="cpu", hf_config=hf)

    def no_forward_of_their_own(*a, **k):
        raise AssertionError("a forward of the activations' own")

    monkeypatch.setattr(extraction, "_activations", no_forward_of_their_own)
    shared = {"activations": str(tmp_path / "shared.safetensors"), "gradient_stats": str(tmp_path / "g.safetensors")}
    extract_models(paths, targets, probe, [shared], device="cpu", hf_config=hf)
    got, want = load_file(shared["activations"]), load_file(alone)
    assert sorted(got) == sorted(want) and len(got) == 4
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-6)


def test_similarity_terms_against_the_final_checkpoint_wherever_it_is(tmp_path):
    """The terms a chunk holding the final checkpoint keeps, those of a chunk without it (the
    final checkpoint loaded first) and those of the stored activations are the same, and give
    the CKA of the stored activations."""
    from ckptlens.extract.similarity import TERMS, Centred, similarity_terms
    from ckptlens.metrics.activation_similarity import ActivationContext, linear_cka

    paths, probe, hf = _neox_series(tmp_path, 3)
    targets = {"activations": ["gpt_neox.layers.*.attention.dense"], "gradients": ["**.dense"]}
    final = paths[-1]
    acts = [str(tmp_path / f"a{i}.safetensors") for i in range(3)]
    extract_models(paths, targets, probe, [{"activations": a} for a in acts], device="cpu", hf_config=hf)
    stored = [load_file(a) for a in acts]
    whole = [{"similarity_terms": str(tmp_path / f"t{i}.safetensors")} for i in range(3)]
    extract_models(paths, targets, probe, whole, device="cpu", hf_config=hf, reference=final)  # own forward
    first = [
        {"similarity_terms": str(tmp_path / f"u{i}.safetensors"), "gradient_stats": str(tmp_path / f"g{i}.st")}
        for i in range(2)
    ]
    extract_models(paths[:2], targets, probe, first, device="cpu", hf_config=hf, reference=final)  # shared
    every = [
        {"similarity_terms": str(tmp_path / f"v{i}.safetensors"), "gradient_stats": str(tmp_path / f"h{i}.st")}
        for i in range(3)
    ]
    extract_models(paths, targets, probe, every, device="cpu", hf_config=hf, reference=final)  # shared, in series
    ref = {n: Centred(a) for n, a in stored[2].items()}
    for i in range(3):
        want = similarity_terms(stored[i], ref)
        got = load_file(whole[i]["similarity_terms"])
        others = [load_file(every[i]["similarity_terms"])] + (
            [load_file(first[i]["similarity_terms"])] if i < 2 else []
        )
        for name in want:
            for terms in [got, *others]:
                np.testing.assert_allclose(terms[name], want[name], rtol=1e-6)
            t = dict(zip(TERMS, got[name]))
            cka = linear_cka(ActivationContext(stored[i][name]), ActivationContext(stored[2][name]))
            assert t["xy"] / np.sqrt(t["xx"] * t["yy"]) == pytest.approx(cka, rel=1e-6)
            if i == 2:
                assert t["xy"] == pytest.approx(t["xx"], rel=1e-12)  # the final checkpoint with itself
