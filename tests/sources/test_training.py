"""The sources trained here (ckptlens.sources.training): steps, names and sizes from the config
entry alone, checked against the models the training code builds."""

import pytest

from ckptlens.sources import SOURCES, SourceError


def test_steps_from_the_training_settings():
    toy = SOURCES["train_toy"]
    assert toy.steps({"train": {"steps": 60, "save_every": 20}}) == [0, 20, 40, 60]
    assert toy.steps({"train": {"steps": 10, "save_steps": [0, 3, 10]}}) == [0, 3, 10]
    with pytest.raises(SourceError) as err:
        toy.steps({"train": {"steps": 10, "save_steps": [0, 30]}})
    assert err.value.key == "train"


def test_names_and_bytes_match_the_models_built_by_the_training_code():
    from ckptlens.sources.trained.transformer import AttnOnlyTransformer, ToyModelConfig

    model_cfg = {"vocab_size": 16, "d_model": 16, "n_layers": 2, "n_heads": 2}
    model = AttnOnlyTransformer(ToyModelConfig(**model_cfg))
    state = model.state_dict()
    toy = SOURCES["train_toy"]
    spec = {"model": model_cfg, "train": {"steps": 10}}
    assert toy.checkpoint_bytes(spec) == 4 * sum(t.numel() for t in state.values())
    names = toy.layer_names(spec)
    assert set(names["gradients"]) == {k[: -len(".weight")] for k in state if k.endswith(".weight")}
    assert "blocks.1" in names["activations"]
    # per-head pieces of the toy transformer's attention (2 heads per block)
    assert {n for n in names["weights"] if n.startswith("blocks.0.attn.head")} >= {
        "blocks.0.attn.head0.ov",
        "blocks.0.attn.head1.qk",
    }
