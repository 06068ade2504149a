"""Tiny random Hugging Face models (GPT-NeoX, GPT-2, BERT) built offline, shared by the adapter tests."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from tests.adapters.helpers import D, H, L, V, _randomize  # noqa: E402


# ---------------------------------------------------------------------------------------------
# GPT-NeoX (Pythia)
@pytest.fixture(scope="module")
def neox():
    cfg = transformers.GPTNeoXConfig(
        hidden_size=D, num_attention_heads=H, num_hidden_layers=L, intermediate_size=64, vocab_size=V, rotary_pct=0.5
    )
    cfg._attn_implementation = "eager"
    model = _randomize(transformers.GPTNeoXForCausalLM(cfg))
    return model, cfg


# ---------------------------------------------------------------------------------------------
# GPT-2
@pytest.fixture(scope="module")
def gpt2():
    cfg = transformers.GPT2Config(
        n_embd=D, n_head=H, n_layer=L, vocab_size=V, n_positions=16, bos_token_id=0, eos_token_id=0
    )
    cfg._attn_implementation = "eager"
    return _randomize(transformers.GPT2LMHeadModel(cfg), seed=1), cfg


# ---------------------------------------------------------------------------------------------
# BERT
@pytest.fixture(scope="module")
def bert():
    cfg = transformers.BertConfig(
        hidden_size=D, num_attention_heads=H, num_hidden_layers=L, intermediate_size=64, vocab_size=V
    )
    cfg._attn_implementation = "eager"
    return _randomize(transformers.BertModel(cfg), seed=2), cfg
