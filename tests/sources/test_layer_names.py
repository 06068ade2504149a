"""What target patterns select from, known from a state dict's keys
(ckptlens.sources.layer_names), on a real GPT-2 built offline."""

import pytest

from ckptlens.sources.layer_names import names_from_keys


def test_names_of_a_gpt2_state_dict():
    transformers = pytest.importorskip("transformers")
    model = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=20, n_embd=8, n_layer=2, n_head=2, n_positions=16)
    )
    state = model.state_dict()
    names = names_from_keys(list(state), model.config.to_dict(), {k: tuple(v.shape) for k, v in state.items()})
    # gradients: every weight's owner module; activations: every dotted prefix of a key
    assert set(names["gradients"]) == {k[: -len(".weight")] for k in state if k.endswith(".weight")}
    assert {"transformer", "transformer.h", "transformer.h.1", "transformer.h.1.attn.c_attn"} <= set(
        names["activations"]
    )
    # weights as the GPT-2 adapter names them: per-head circuits of each block's attention
    assert {f"transformer.h.{b}.attn.head{h}.{c}" for b in (0, 1) for h in (0, 1) for c in ("ov", "qk")} <= set(
        names["weights"]
    )
    assert names["attentions"] == ["transformer.h.0.attn", "transformer.h.1.attn"]
