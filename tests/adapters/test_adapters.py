"""The adapter registry (ckptlens.adapters): lookup, detection, the default targets of every adapter."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from ckptlens import config as ckcfg
from ckptlens.adapters import adapter_for_names, default_targets, target_groups
from ckptlens.sources.layer_names import names_from_keys
from ckptlens.store.patterns import select, unmatched

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
import warnings  # noqa: E402

import pytest  # noqa: E402

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from ckptlens.adapters import (  # noqa: E402
    ADAPTERS,
    BertAdapter,
    GenericAdapter,
    GPT2Adapter,
    GPTNeoXAdapter,
    get_adapter,
)
from tests.adapters.helpers import _state  # noqa: E402


def _hf(kind: str):
    """(state dict as numpy, config.json dict) of a tiny transformers model."""
    if kind == "gpt_neox":
        cfg = transformers.GPTNeoXConfig(
            vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
        )
        model = transformers.GPTNeoXForCausalLM(cfg)
    elif kind == "gpt2":
        cfg = transformers.GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=4, n_positions=32)
        model = transformers.GPT2LMHeadModel(cfg)
    else:
        cfg = transformers.BertConfig(
            vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
        )
        model = transformers.BertForSequenceClassification(cfg)
    sd = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    return sd, cfg.to_dict()


def _names(sd, meta):
    return names_from_keys(list(sd), meta, {k: v.shape for k, v in sd.items()})


EXPECTED = {
    "gpt_neox": {
        "weights": [
            "gpt_neox.layers.*.attention.dense",
            "gpt_neox.layers.*.attention.head*.ov",
            "gpt_neox.layers.*.attention.head*.qk",
            "gpt_neox.layers.*.mlp.dense_4h_to_h",
        ],
        "activations": ["gpt_neox.layers.*"],
        "gradients": ["gpt_neox.layers.*.attention.dense", "gpt_neox.layers.*.mlp.dense_4h_to_h"],
    },
    "gpt2": {
        "weights": [
            "transformer.h.*.attn.c_proj",
            "transformer.h.*.attn.head*.ov",
            "transformer.h.*.attn.head*.qk",
            "transformer.h.*.mlp.c_proj",
        ],
        "activations": ["transformer.h.*"],
        "gradients": ["transformer.h.*.attn.c_proj", "transformer.h.*.mlp.c_proj"],
    },
    "bert": {
        "weights": [
            "bert.encoder.layer.*.attention.output.dense",
            "bert.encoder.layer.*.attention.head*.ov",
            "bert.encoder.layer.*.attention.head*.qk",
            "bert.encoder.layer.*.output.dense",
        ],
        "activations": ["bert.encoder.layer.*"],
        "gradients": ["bert.encoder.layer.*.attention.output.dense", "bert.encoder.layer.*.output.dense"],
    },
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_transformers_architectures_default_to_attention_output_heads_mlp_output_and_blocks(kind):
    sd, meta = _hf(kind)
    names = _names(sd, meta)
    assert adapter_for_names(names).name == kind
    targets = default_targets(names)
    assert targets == EXPECTED[kind]
    pools = {"weights": names["weights"], "activations": names["activations"], "gradients": names["gradients"]}
    for k, pats in targets.items():
        assert not unmatched(pats, pools[k]), (k, pats)
    # per block: one attention output, n_heads OV + n_heads QK circuits, one MLP output
    assert len(select(targets["weights"], names["weights"])) == 2 * (1 + 4 + 4 + 1)
    assert select(targets["activations"], names["activations"]) == [
        p.replace("*", str(i)) for p in targets["activations"] for i in (0, 1)
    ]


def test_the_demo_transformer_defaults():
    from ckptlens.sources.trained.names import transformer_state_keys

    model = {"vocab_size": 16, "d_model": 16, "n_layers": 2, "n_heads": 2}
    names = names_from_keys(transformer_state_keys(model), {"ckptlens_arch": "toy", "ckptlens_model": model})
    assert default_targets(names) == {
        "weights": ["blocks.*.attn.o_proj", "blocks.*.attn.head*.ov", "blocks.*.attn.head*.qk"],
        "activations": ["blocks.*"],
        "gradients": ["blocks.*.attn.o_proj"],
    }


def test_without_heads_the_circuits_are_left_out_not_invented():
    sd, meta = _hf("gpt_neox")
    with pytest.warns(UserWarning, match="number of attention heads unknown"):
        names = _names(sd, {})  # no config.json: the number of heads is unknown
    targets = default_targets(names)
    assert targets["weights"] == ["gpt_neox.layers.*.attention.dense", "gpt_neox.layers.*.mlp.dense_4h_to_h"]


def test_generic_models_default_to_every_matrix_and_their_block_list():
    keys = [f"net.{i}.{p}" for i in range(3) for p in ("weight", "bias")] + ["head.weight"]
    shapes = {k: (4, 4) if k.endswith("weight") else (4,) for k in keys}
    names = names_from_keys(keys, {}, shapes)
    assert adapter_for_names(names).name == "generic"
    assert default_targets(names) == {"weights": ["**"], "activations": ["net.*"], "gradients": []}
    groups = {g.label: g for g in target_groups(names)}
    assert groups["every weight matrix"].patterns == ["**"] and groups["every weight matrix"].n == 4


# --------------------------------------------------------------------------- config.targets()
def _folder(tmp_path, kind="gpt_neox", steps=(0, 10)):
    sd, meta = _hf(kind)
    for s in steps:
        d = tmp_path / f"checkpoint-{s}"
        d.mkdir(parents=True)
        save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, str(d / "model.safetensors"))
        (d / "config.json").write_text(json.dumps(meta, default=str))
    return tmp_path


def test_a_run_without_targets_gets_its_architectures_defaults(tmp_path):
    folder = _folder(tmp_path / "ck")
    cfg = {
        "runs": {"r": {"source": {"type": "local", "path": str(folder)}}},
        "metrics": {"frobenius_norm": {}, "cka_to_final": {}},
    }
    ckcfg.validate(cfg)  # activations are needed, and the defaults provide them
    t = ckcfg.targets(cfg, "r")
    assert t["weights"] == EXPECTED["gpt_neox"]["weights"] and t["activations"] == ["gpt_neox.layers.*"]
    # a config that gives targets overrides them exactly as before: the schema's defaults underneath
    cfg["runs"]["r"]["targets"] = {"weights": ["gpt_neox.layers.*.attention.query_key_value"]}
    assert ckcfg.targets(cfg, "r") == {
        "weights": ["gpt_neox.layers.*.attention.query_key_value"],
        "activations": [],
        "gradients": [],
        "activation_gradients": [],
        "attentions": [],
    }
    cfg["runs"]["r"]["targets"] = {}
    assert ckcfg.targets(cfg, "r")["weights"] == ["**"]


def test_where_names_are_unknown_at_parse_time_every_matrix_stays_the_default(tmp_path):
    for s in (0, 10):
        torch.save({"layer.weight": torch.ones(3, 3)}, tmp_path / f"ckpt_{s}.pt")
    pickles = {"runs": {"r": {"source": {"type": "local", "path": str(tmp_path)}}}, "metrics": {"frobenius_norm": {}}}
    hub = {
        "runs": {"r": {"source": {"type": "huggingface", "model": "tiny/x", "revisions": ["step0", "step8"]}}},
        "metrics": {"frobenius_norm": {}},
    }
    for cfg in (pickles, hub):
        ckcfg.validate(cfg)
        assert ckcfg.targets(cfg, "r")["weights"] == ["**"] and ckcfg.targets(cfg, "r")["activations"] == []


def test_an_unreadable_source_keeps_the_schema_defaults_and_validate_names_the_key(tmp_path):
    cfg = {
        "runs": {"r": {"source": {"type": "local", "path": str(tmp_path / "nope")}}},
        "metrics": {"frobenius_norm": {}},
    }
    assert ckcfg.targets(cfg, "r")["weights"] == ["**"]
    with pytest.raises(ckcfg.ConfigError, match="runs.r.source"):
        ckcfg.validate(cfg)


def test_get_adapter_unknown_name_lists_adapters():
    with pytest.raises(
        ValueError,
        match="unknown adapter 'mamba'.*toy.*gpt_neox.*gpt2.*bert.*llama.*bloom.*modernbert.*hf_olmo.*generic",
    ):
        get_adapter("mamba", ["a.weight"])


def test_get_adapter_named_arch_must_fit_the_keys(gpt2):
    model, cfg = gpt2
    keys, _, _ = _state(model)
    with pytest.raises(ValueError, match="'gpt_neox' does not fit"):
        get_adapter("gpt_neox", keys, metadata=cfg.to_dict())


def test_auto_detection_each_arch(neox, gpt2, bert):
    for (model, cfg), cls in ((neox, GPTNeoXAdapter), (gpt2, GPT2Adapter), (bert, BertAdapter)):
        keys = list(model.state_dict())
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert type(get_adapter("auto", keys, metadata=cfg.to_dict())) is cls
            assert cls.detect(keys)
            assert not any(c.detect(keys) for c in ADAPTERS.values() if c not in (cls, GenericAdapter))
