"""Gradient statistics streamed during extraction: the statistics-based gradient metrics equal the
full-gradient computation (the old path, written out plainly here) on a tiny GPT-NeoX saved in
float32, float16 and bfloat16; accumulated from bf16/fp16 gradient tensors they equal float64 sums
of the same values; the extraction holds a fixed number of gradient-sized buffers whatever K, and
writes a few numbers a layer."""

import gc
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

pytest.importorskip("transformers")

from ckptlens import metrics as M  # noqa: E402
from ckptlens.extract.gradients import GradientStatistics  # noqa: E402
from ckptlens.extract.model import extract_model  # noqa: E402
from ckptlens.store.patterns import select  # noqa: E402
from ckptlens.store.tensors import GRADIENT_STATISTICS, GRADIENT_STATS_FORMAT, TensorFile  # noqa: E402

TARGETS = {
    "gradients": [
        "gpt_neox.layers.*.attention.query_key_value",
        "gpt_neox.layers.*.attention.dense",
        "gpt_neox.layers.*.mlp.dense_4h_to_h",
    ]
}
ALL = {
    "gradient_norm": {},
    "gradient_cosine": {},
    "gradient_snr": {},
    "gradient_snr.parameter": {"form": "parameter"},
    "gradient_snr.debiased": {"debiased": True},
}
#: statistics (float64 sums of float32 gradients, Welford) vs the two-pass float64 computation
RTOL = 1e-9


def _neox(tmp_path, dtype):
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
    sd = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    sd["embed_out.weight"] = sd.pop("lm_head.weight")
    path = tmp_path / f"step1_{str(dtype).split('.')[-1]}.safetensors"
    save_file(sd, str(path))
    ids = np.random.default_rng(1).integers(0, 40, size=(40, 12))
    np.save(tmp_path / "ids.npy", ids)
    return path, json.loads(model.config.to_json_string()), tmp_path / "ids.npy"


def _probe(ids, k):
    return {"tokens": str(ids), "batch_size": 4, "n_batches": k, "seed": 3}


def plain_metrics(g: np.ndarray) -> dict:
    """The old full-gradient computation, written out over the K per-batch gradients [K, ...]."""
    g = np.asarray(g, dtype=np.float64).reshape(len(g), -1)
    k = len(g)
    norms = np.linalg.norm(g, axis=1)
    cos = np.mean([a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) for a, b in zip(g[:-1], g[1:])])
    mean = g.mean(axis=0)
    snr = float(mean @ mean) / (sum(float((r - mean) @ (r - mean)) for r in g) / (k - 1))
    var = g.var(axis=0, ddof=1)
    used = var > 0
    gsnr = float(np.mean(mean[used] ** 2 / var[used]))
    return {
        "gradient_norm": float(norms.mean()),
        "gradient_cosine": float(cos),
        "gradient_snr": snr,
        "gradient_snr.parameter": gsnr,
        "gradient_snr.debiased": snr - 1 / k,
    }


def stats_metrics(path) -> dict:
    """The registered gradient metrics on a gradient_stats file, as a metric job reads it."""
    out = {}
    for label, params in ALL.items():
        name = label.split(".")[0]
        for r in M.compute_family("gradient", {name: params}, TensorFile(path)):
            out[(r["layer"], label)] = r["value"]
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_statistics_metrics_equal_the_full_gradient_computation(tmp_path, dtype):
    path, cfg, ids = _neox(tmp_path, dtype)
    k = 5
    raw, stats = tmp_path / "raw.safetensors", tmp_path / "stats.safetensors"
    extract_model(path, TARGETS, _probe(ids, k), {"gradients": str(raw)}, device="cpu", hf_config=cfg)
    extract_model(path, TARGETS, _probe(ids, k), {"gradient_stats": str(stats)}, device="cpu", hf_config=cfg)
    grads = TensorFile(raw, group_gradients=True)
    got = stats_metrics(stats)
    assert len(grads) == 6 and len(got) == 6 * len(ALL)
    for layer in grads:
        expected = plain_metrics(grads[layer])
        for label, value in expected.items():
            assert math.isfinite(value)
            assert got[(layer, label)] == pytest.approx(value, rel=RTOL), (layer, label)
    f = TensorFile(stats)
    assert f.metadata["format"] == GRADIENT_STATS_FORMAT and f.metadata["n_batches"] == str(k)
    assert f.metadata["statistics"] == ",".join(GRADIENT_STATISTICS)  # all by default
    layer = "gpt_neox.layers.1.attention.dense"
    assert f[f"{layer}#norm"].shape == (k,) and f[f"{layer}#dot"].shape == (k - 1,)
    assert f[f"{layer}#gsnr"].shape == (3,) and f[f"{layer}#mean_sq"].shape == (1,)


def test_raw_and_statistics_from_one_set_of_backward_passes(tmp_path):
    """Both kinds in one job: one backward per batch feeds both; the same values as separately."""
    path, cfg, ids = _neox(tmp_path, torch.float32)
    outs = {"gradients": str(tmp_path / "raw.safetensors"), "gradient_stats": str(tmp_path / "stats.safetensors")}
    extract_model(path, TARGETS, _probe(ids, 3), outs, device="cpu", hf_config=cfg)
    grads = TensorFile(outs["gradients"], group_gradients=True)
    got = stats_metrics(outs["gradient_stats"])
    for layer in grads:
        for label, value in plain_metrics(grads[layer]).items():
            assert got[(layer, label)] == pytest.approx(value, rel=RTOL)


def test_only_the_statistics_asked_for(tmp_path):
    path, cfg, ids = _neox(tmp_path, torch.float32)
    out = tmp_path / "stats.safetensors"
    probe = _probe(ids, 3)
    extract_model(path, TARGETS, probe, {"gradient_stats": str(out)}, "cpu", cfg, gradient_statistics=["norm"])
    f = TensorFile(out)
    assert {k.rpartition("#")[2] for k in f} == {"norm"} and f.metadata["statistics"] == "norm"
    rows = M.compute_family("gradient", {"gradient_norm": {}}, f)
    assert all(math.isfinite(r["value"]) for r in rows) and len(rows) == 6
    with pytest.raises(ValueError, match="lack 'dot'"):
        M.compute_family("gradient", {"gradient_cosine": {}}, f)
    with pytest.raises(ValueError, match="unknown gradient statistics"):
        GradientStatistics(["norms"])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_accumulated_from_half_precision_gradients_equals_float64_sums(dtype):
    """A model run in bf16/fp16 gives bf16/fp16 gradients: the statistics are float64 sums of
    exactly those values (each converted exactly), so they equal the plain float64 computation."""
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((6, 5))
    gs = [torch.tensor(signal + 0.5 * rng.standard_normal((6, 5))).to(dtype) for _ in range(4)]
    acc = GradientStatistics()
    for g in gs:
        acc.update({"l": g})
    got, stats = {}, acc.result()
    for label, params in ALL.items():
        for r in M.compute_family("gradient", {label.split(".")[0]: params}, stats):
            got[label] = r["value"]
    expected = plain_metrics(np.stack([g.to(torch.float64).numpy() for g in gs]))
    for label, value in expected.items():
        assert got[label] == pytest.approx(value, rel=1e-12), label


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_block_sums_equal_whole_vector_float64_sums(dtype, monkeypatch):
    """The norm and the dot are summed block by block (no gradient-sized float64 copy): across many
    blocks, with a short last one, they equal numpy's float64 sums of the same values."""
    import ckptlens.extract.gradients as G

    monkeypatch.setattr(G, "CPU_BLOCK", 1000)
    rng = np.random.default_rng(3)
    g, prev = (torch.tensor(rng.standard_normal(10_537), dtype=torch.float32).to(dtype) for _ in range(2))
    norm_sq, dot = G._norm_sq_and_dot(g, prev, torch.float64)
    x, p = g.to(torch.float64).numpy(), prev.to(torch.float64).numpy()
    assert float(norm_sq) == pytest.approx(float(x @ x), rel=1e-14)
    assert float(dot) == pytest.approx(float(p @ x), rel=1e-12, abs=1e-12 * float(np.abs(p * x).sum()))
    assert G._norm_sq_and_dot(g, None, torch.float64)[1] is None
    acc = GradientStatistics(["norm", "dot"])
    acc.update({"l": prev})
    acc.update({"l": g})
    out = acc.result()
    assert out["l#norm"] == pytest.approx([np.sqrt(p @ p), np.sqrt(x @ x)], rel=1e-14)
    assert out["l#dot"][0] == pytest.approx(float(p @ x), rel=1e-12, abs=1e-12 * float(np.abs(p * x).sum()))


def test_welford_keeps_a_small_noise_exact():
    """Batches agreeing to 1e-7 relative: Σ‖g_k‖² − K‖ḡ‖² would lose every digit of the noise in
    float32 and most in float64; the running deviations keep it."""
    rng = np.random.default_rng(1)
    base = 1e3 * rng.standard_normal(200)
    g = np.stack([base + 1e-4 * rng.standard_normal(200) for _ in range(6)])
    acc = GradientStatistics(["norm", "mean"])
    for row in g:
        acc.update({"l": torch.tensor(row)})
    out = acc.result()
    mean = g.mean(axis=0)
    deviation = sum(float((r - mean) @ (r - mean)) for r in g)
    assert out["l#deviation_sq"][0] == pytest.approx(deviation, rel=1e-6)


def _tensors_of_size(sizes) -> int:
    """gc-visible torch tensors with as many elements as one of the target weights."""
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor) and o.numel() in sizes)


@pytest.mark.parametrize("statistics", [None, ["norm", "dot"]])
def test_gradient_sized_buffers_and_bytes_written_do_not_grow_with_k(tmp_path, monkeypatch, statistics):
    """The extraction holds a fixed number of gradient-sized tensors however many batches, and
    writes (2K + 4) float64 numbers a layer, not K gradients."""
    import ckptlens.extract.gradients as G

    path, cfg, ids = _neox(tmp_path, torch.float32)
    shapes = TensorFile(path).shapes
    weights = select([p + ".weight" for p in TARGETS["gradients"]], list(shapes))
    sizes = {int(np.prod(shapes[w])) for w in weights}
    params = sum(int(np.prod(shapes[w])) for w in weights)
    seen: dict[int, list] = {}
    update = G.GradientStatistics.update

    def counting(self, grads):
        update(self, grads)
        seen.setdefault(current_k, []).append((len(self.buffers()), _tensors_of_size(sizes)))

    monkeypatch.setattr(G.GradientStatistics, "update", counting)
    written = {}
    for current_k in (2, 8):
        out = tmp_path / f"stats{current_k}.safetensors"
        extract_model(path, TARGETS, _probe(ids, current_k), {"gradient_stats": str(out)}, "cpu", cfg, statistics)
        written[current_k] = out.stat().st_size
    steady = {k: max(v[1:]) for k, v in seen.items()}  # after the first batch (buffers made)
    assert steady[2] == steady[8], seen  # independent of K
    n_layers = 6
    per_layer = 3 if statistics is None else 1  # prev, mean, M2 (or prev only)
    assert max(b for b, _ in seen[8]) == n_layers * per_layer
    # bytes: the header plus a few float64 numbers a layer; raw gradients would be K × 4 × params
    assert written[8] - written[2] <= n_layers * 2 * 6 * 8 + 512
    assert written[8] < 8 * 4 * params / 10
