"""Resource estimates of the heavy jobs (ckptlens.plan.extraction_resources, metric_resources):
what each term adds, GPU against CPU, and the Pythia sizes against a cluster's 4 GB default."""

import pytest

from ckptlens.plan import EXTRACTION_THREADS, extraction_resources, metric_resources

#: Pythia shapes: parameters, hidden, layers, heads; the pythia_hf targets (qkv, dense, 4h_to_h)
PYTHIA = {"160m": (162e6, 768, 12, 12), "1.4b": (1.41e9, 2048, 24, 16), "2.8b": (2.78e9, 2560, 32, 32)}


def pythia(size, **kw):
    p, h, layers, heads = PYTHIA[size]
    shape = dict(hidden=h, n_layers=layers, heads=heads, seq_len=128, tokens_per_batch=8 * 128, n_batches=8)
    targets = layers * 8 * h * h
    acts = 8 * 128 * layers * 5 * h
    return extraction_resources(int(2 * p), target_params=targets, activation_floats=acts, **{**shape, **kw})


def test_each_statistic_adds_its_buffers():
    base = extraction_resources(10**9, target_params=10**8, statistics=["norm"])
    dot = extraction_resources(10**9, target_params=10**8, statistics=["norm", "dot"])
    var = extraction_resources(10**9, target_params=10**8, statistics=["norm", "dot", "mean", "variance"])
    mb = 1.3 * 10**8 / 2**20  # 1.3 (slack) × 10⁸ parameters, in MB per byte a parameter
    assert dot["mem_mb"] - base["mem_mb"] == pytest.approx(4 * mb, abs=100)  # the previous gradient
    assert var["mem_mb"] - dot["mem_mb"] == pytest.approx(16 * mb, abs=100)  # float64 mean and M2
    assert base["runtime"] == var["runtime"]


def test_the_pythia_sizes_ask_for_more_than_a_4gb_default_and_a_gpu_moves_the_model_off_the_host():
    cpu = {size: pythia(size, statistics=["norm", "dot"]) for size in PYTHIA}
    assert 4000 < cpu["160m"]["mem_mb"] < cpu["1.4b"]["mem_mb"] < cpu["2.8b"]["mem_mb"] < 128_000
    gpu = pythia("1.4b", statistics=["norm", "dot"], gpu=True)
    assert gpu["mem_mb"] < cpu["1.4b"]["mem_mb"] / 2 and gpu["runtime"] < cpu["1.4b"]["runtime"]
    # raw gradients are written one layer at a time: a layer's worth more, not K gradients
    raw = pythia("1.4b", statistics=["norm", "dot"], raw_gradients=True)
    assert raw["mem_mb"] - cpu["1.4b"]["mem_mb"] < 1000
    # a chunk of checkpoints takes longer, not more memory
    chunk = pythia("160m", statistics=["norm", "dot"], n_checkpoints=10)
    assert chunk["mem_mb"] == cpu["160m"]["mem_mb"] and chunk["runtime"] > cpu["160m"]["runtime"]


def test_compact_activations_and_a_small_job_get_the_floor():
    f32 = pythia("160m", activation_bytes=4)
    f16 = pythia("160m", activation_bytes=2)
    assert f16["mem_mb"] < f32["mem_mb"]
    assert extraction_resources(10**6) == {"mem_mb": 1000, "runtime": 3}


def test_similarity_terms_add_the_held_reference():
    """Pythia-1.4B's targets, probe 8 × 128: the final checkpoint's activations in float64 (1,024
    tokens × 10,240 features × 24 layers) and a 1,024² Gram matrix for each of the 72 layers."""
    floats = 1024 * (6144 + 2048 + 2048) * 24
    base = extraction_resources(2_800_000_000, activation_floats=floats)
    held = extraction_resources(2_800_000_000, activation_floats=floats, similarity_layers=72)
    extra = (floats * 8 + 72 * 8 * 1024**2) * 1.3 / 2**20
    assert held["mem_mb"] - base["mem_mb"] == pytest.approx(extra, abs=200)
    assert held["runtime"] == base["runtime"]


def test_metric_jobs():
    assert metric_resources("gradient") == {"mem_mb": 1000, "runtime": 5}  # a few numbers a layer
    assert metric_resources("similarity_to_final", n_checkpoints=27, n_layers=72) == {"mem_mb": 1000, "runtime": 5}
    act = metric_resources("activation_similarity", n_checkpoints=27, n_layers=36, rows=8192, width=2304, references=2)
    assert act["mem_mb"] > 2000  # n×n Grams over 8192 probe tokens
    small = metric_resources("activation_similarity", rows=1024, width=2304, references=2)
    assert small["mem_mb"] < act["mem_mb"] and small["runtime"] < act["runtime"]
    one = metric_resources("weight_spectrum", rows=10240, width=2560)
    many = metric_resources("weight_spectrum", n_checkpoints=27, n_layers=72, rows=10240, width=2560)
    assert many["mem_mb"] == one["mem_mb"] and many["runtime"] > one["runtime"]
    with pytest.raises(KeyError):
        metric_resources("no_such_family")


def _neox_folder(folder, hidden=64, layers=2, dtype="float16"):
    """A save_pretrained-shaped folder of a GPT-NeoX model (zeros; only its header is read)."""
    import json

    import numpy as np

    from ckptlens.store.tensors import write_tensors

    t = {"gpt_neox.embed_in.weight": (256, hidden), "embed_out.weight": (256, hidden)}
    for i in range(layers):
        p = f"gpt_neox.layers.{i}"
        t |= {
            f"{p}.attention.query_key_value.weight": (3 * hidden, hidden),
            f"{p}.attention.dense.weight": (hidden, hidden),
        }
        t |= {
            f"{p}.mlp.dense_h_to_4h.weight": (4 * hidden, hidden),
            f"{p}.mlp.dense_4h_to_h.weight": (hidden, 4 * hidden),
        }
        t |= {f"{p}.input_layernorm.weight": (hidden,)}
    write_tensors({k: np.zeros(s, dtype) for k, s in t.items()}, folder / "model.safetensors")
    cfg = {"model_type": "gpt_neox", "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": 4}
    (folder / "config.json").write_text(json.dumps(cfg))
    return sum(int(np.prod(s)) for s in t.values())


def test_the_plan_sizes_jobs_from_the_checkpoint_header(tmp_path):
    """Plan.extraction_resources / metric_resources: the arguments from the first checkpoint's
    safetensors header and config.json (parameters, dtype, gradient targets matched against its
    shapes, activation widths) and the probe; a run's `resources` overrides them."""
    import numpy as np

    from ckptlens import config as ckcfg
    from ckptlens.plan import Plan, checkpoint_shape

    for step in (0, 10):
        (tmp_path / f"step{step}").mkdir()
        n = _neox_folder(tmp_path / f"step{step}")
    tokens = tmp_path / "tokens.npy"
    np.save(tokens, np.zeros((16, 32), np.int64))
    targets = {
        "weights": ["gpt_neox.layers.*.attention.dense"],
        "activations": ["gpt_neox.layers.*.mlp.dense_4h_to_h"],
        "gradients": ["gpt_neox.layers.*.attention.query_key_value", "gpt_neox.layers.*.mlp.dense_4h_to_h"],
    }
    run = {"source": {"type": "local", "path": str(tmp_path)}, "targets": targets}
    run["probe"] = {"tokens": str(tokens), "batch_size": 8, "n_batches": 4}
    cfg = {"runs": {"r": run}, "metrics": {"frobenius_norm": {}, "cka_to_final": {}, "gradient_norm": {}}}
    ckcfg.validate(cfg)
    plan = Plan(cfg)
    shape = plan.checkpoint_shape("r")
    assert (shape.params, shape.bytes_per_param, shape.hidden, shape.n_layers) == (n, 2, 64, 2)
    assert shape.weight_params(targets["gradients"]) == 2 * (3 + 4) * 64 * 64
    assert shape.output_widths(targets["activations"]) == [64, 64]
    got = plan.extraction_resources("r", 0)
    want = extraction_resources(
        2 * n,
        n_checkpoints=len(plan.chunk_steps("r", 0)),
        target_params=2 * 7 * 64 * 64,
        tokens_per_batch=8 * 32,
        n_batches=4,
        seq_len=32,
        hidden=64,
        n_layers=2,
        heads=4,
        activation_floats=8 * 32 * 2 * 64,
        statistics=plan.gradient_statistics("r"),
    )
    assert got == {**want, "gpu": 1}  # extraction uses a GPU where the node has one
    assert plan.extraction_threads("r") == EXTRACTION_THREADS  # torch uses every core it is given
    weights = plan.metric_resources("r", "weight_spectrum", 0)
    assert weights == {**metric_resources("weight_spectrum", n_checkpoints=2, n_layers=2, rows=64, width=64), "gpu": 0}
    assert plan.metric_resources("r", "gradient", 0) == {**metric_resources("gradient"), "gpu": 0}
    # the run's own numbers win
    run["resources"] = {"mem_mb": 64000, "runtime": 600, "gpu": 0, "threads": 3, "metrics": {"mem_mb": 8000, "gpu": 1}}
    ckcfg.validate(cfg)
    plan = Plan(cfg)
    assert plan.extraction_resources("r", 0) == {"mem_mb": 64000, "runtime": 600, "gpu": 0}
    assert plan.extraction_threads("r") == 3
    assert plan.metric_resources("r", "weight_spectrum", 0) == {**weights, "mem_mb": 8000, "gpu": 1}
    # a pickle's header is not read before its job: the source's guess sizes it
    assert checkpoint_shape([tmp_path / "ckpt_0.pt"]) is None


def test_a_checkpoint_known_only_by_its_size_is_sized_as_a_transformer_of_that_size():
    """A hub run's checkpoints are not on disk when the workflow is parsed: hidden size and depth
    are guessed from the parameters the model's name says, over rather than under Pythia's own."""
    from ckptlens.plan import guessed_transformer

    for size, (p, hidden, layers, _) in PYTHIA.items():
        h, n = guessed_transformer(p)
        assert hidden <= h < 1.4 * hidden and layers <= n < 1.4 * layers, size
    assert guessed_transformer(0) == (None, None)
