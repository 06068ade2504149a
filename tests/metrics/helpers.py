"""Peer code the metric tests compare with: WeightWatcher's analyze() on the same matrices (the ESD
metrics), llm-microscope's functions (linearity, anisotropy, TwoNN)."""

import contextlib
import io
import warnings

from ckptlens import metrics as M

ESD = ["alpha", "alpha_xmin", "alpha_ks_distance", "alpha_weighted", "log_spectral_norm", "mp_softrank", "num_spikes"]
#: WeightWatcher column -> our metric
WW_COLUMNS = {
    "alpha": "alpha",
    "xmin": "alpha_xmin",
    "D": "alpha_ks_distance",
    "alpha_weighted": "alpha_weighted",
    "log_spectral_norm": "log_spectral_norm",
    "stable_rank": "stable_rank",
}
MP_COLUMNS = {"mp_softrank": "mp_softrank", "num_spikes": "num_spikes"}


def values(mats: dict, metrics, **params) -> dict:
    rows = M.compute_family("weight_spectrum", {m: params.get(m, {}) for m in metrics}, mats)
    return {(r["layer"], r["metric"]): r["value"] for r in rows}


def analyze(ww, mats: dict, **kw):
    """WeightWatcher's analyze() on a state dict of the matrices (float64 stays float64), by name."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = ww.WeightWatcher(model={f"{k}.weight": v for k, v in mats.items()}).analyze(**kw)
    return {row["name"]: row for _, row in df.iterrows()}


def _llm_microscope():
    """llm-microscope 0.0.7's functions.py, loaded by path (``import llm_microscope`` fails: its
    __init__ imports a module it does not ship); None where it is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("llm_microscope")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = f"{spec.submodule_search_locations[0]}/functions.py"
    mod_spec = importlib.util.spec_from_file_location("llm_microscope_functions", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod
