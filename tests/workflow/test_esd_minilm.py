"""The ESD metrics against WeightWatcher on the real MiniLM weights (slow: fine-tunes MiniLM)."""

import os
import warnings

import numpy as np
import pytest

from tests.metrics.helpers import ESD, MP_COLUMNS, WW_COLUMNS, analyze, values


@pytest.fixture(scope="module")
def ww():
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    with warnings.catch_warnings():  # its import calls warnings.simplefilter("ignore")
        return pytest.importorskip("weightwatcher")


def test_esd_metrics_match_weightwatcher_on_minilm(ww):
    """MiniLM-L6's 2-D weights (39 matrices, the 30522×384 embedding included): every column of
    analyze(); the MP fit (about 1 s per matrix in WeightWatcher) on two of them."""
    from safetensors.numpy import load_file

    from ckptlens.sources.minilm import minilm_dir

    weights = load_file(minilm_dir() / "model.safetensors")
    mats = {k[: -len(".weight")]: v for k, v in weights.items() if v.ndim == 2 and v.dtype == np.float32}
    mats = {k: v for k, v in mats.items() if min(v.shape) >= 8}  # WW skips the 2×384 token types
    assert len(mats) == 39
    ref = analyze(ww, mats)
    got = values(mats, ESD + ["stable_rank", "spectral_norm"])
    for name in mats:
        for col, ours in WW_COLUMNS.items():
            assert got[(name, ours)] == pytest.approx(float(ref[name][col]), rel=1e-9), (name, col)
        assert got[(name, "spectral_norm")] ** 2 == pytest.approx(float(ref[name]["spectral_norm"]), rel=1e-12)
    some = [
        "embeddings.position_embeddings",
        "encoder.layer.0.attention.self.query",
        "encoder.layer.0.intermediate.dense",
    ]
    ref_mp = analyze(ww, {k: mats[k] for k in some}, mp_fit=True)
    for name in some:
        for col, ours in MP_COLUMNS.items():
            assert got[(name, ours)] == pytest.approx(float(ref_mp[name][col]), rel=1e-9), (name, col)
