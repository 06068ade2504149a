"""What names say: axis labels for metric names, the correlation table's summary rows, and model
sizes written in run names.

Every registered metric has an axis label (a test checks), and so do the metrics of the published
Pythia table. A value of a multi-valued metric (``qk_ov_overlap_max.k8``) gets its metric's label
with the suffix in parentheses; an unknown name is its own label. Only the standard library is
used, so that plotting and config code can both import this.
"""

from __future__ import annotations

import re

#: ``layer`` values of the correlation table's summary rows (:func:`ckptlens.analysis.metric_correlations`)
#: and how figures label them: the mean of the per-layer r, and (metrics on different layers) r of
#: the two metrics' mean-over-layers trajectories.
MEAN_LAYER = "mean"
MEAN_TRAJECTORY_LAYER = "layer_mean"
SUMMARY_ROW_LABELS = {MEAN_LAYER: "mean over layers", MEAN_TRAJECTORY_LAYER: "layer-mean trajectories"}

METRIC_LABELS = {
    # weight_spectrum
    "frobenius_norm": "Frobenius norm ‖W‖_F",
    "spectral_norm": "spectral norm ‖W‖₂",
    "stable_rank": "stable rank ‖W‖²_F / ‖W‖²₂",
    "effective_rank": "effective rank",
    "proportional_effective_rank": "effective rank / dimension",
    "screenot_rank": "ScreeNOT rank",
    # weight_update
    "update_norm_previous": "update norm ‖W_t − W_prev‖_F",
    "update_norm_initial": "distance from init ‖W_t − W_0‖_F",
    "relative_update_norm_previous": "relative update ‖W_t − W_prev‖_F / ‖W_t‖_F",
    "relative_update_norm_initial": "relative distance from init ‖W_t − W_0‖_F / ‖W_t‖_F",
    "update_cosine": "cosine of consecutive updates",
    # circuits
    "qk_ov_overlap_max": "QK–OV matching (max cos of principal angles)",
    "qk_ov_overlap_rms": "QK–OV matching (rms cos of principal angles)",
    "embed_ov_overlap_max": "embedding–OV matching (max cos of principal angles)",
    "embed_ov_overlap_rms": "embedding–OV matching (rms cos of principal angles)",
    "qk_ov_diag_zscore": "diagonal z-score of W_QK·W_OV",
    "qk_ov_token_diag_zscore": "token-space diagonal z-score",
    "qk_ov_token_mismatch": "token mismatch ratio",
    "qk_ov_rotary_sweep": "rotary QK–OV matching",
    # gradient, gradient_pca
    "gradient_norm": "gradient norm ‖∇W‖_F",
    "gradient_cosine": "cosine of probe-batch gradients",
    "gradient_pca_evr": "explained variance ratio of gradient PCs",
    "gradient_pca_variance": "explained variance of gradient PCs",
    "gradient_pca_cosine": "|cos| between the outputs' gradient PCs",
    # activations
    "cka_to_final": "linear CKA to the final checkpoint",
    "cka_to_previous": "linear CKA to the previous checkpoint",
    "cka_to_initial": "linear CKA to the initial checkpoint",
    "activation_norm": "mean activation norm",
    "activation_pca_evr": "explained variance ratio of activation PCs",
    "linearity_score": "linearity score",
    "linearity_score_no_residual": "linearity score without the residual",
    "linearity_per_sample": "per-sample linearity score",
    "consecutive_cosine": "cosine of consecutive layers' outputs",
    # the published Pythia table (../shared/data/pythia-learning-dynamics)
    "cka_scores": "linear CKA to the final checkpoint",
    "grad_sim": "cosine of consecutive batches' gradients",
    "grad_weight_magnitudes": "gradient norm ‖∇W‖_F",
    "weight_magnitudes": "weight norm ‖W‖_F",
}


def metric_label(metric: str) -> str:
    """``"cka_to_final"`` -> ``"linear CKA to the final checkpoint"``;
    ``"qk_ov_token_mismatch.k8"`` -> ``"token mismatch ratio (k8)"``; unknown names unchanged."""
    metric = str(metric)
    if metric in METRIC_LABELS:
        return METRIC_LABELS[metric]
    base, sep, suffix = metric.partition(".")
    if sep and base in METRIC_LABELS:
        return f"{METRIC_LABELS[base]} ({suffix})"
    return metric


_SIZE = re.compile(r"(?<![A-Za-z0-9.])(\d+(?:\.\d+)?)([kmbt])(?![A-Za-z])", re.IGNORECASE)
_SIZE_FACTOR = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}


def parse_model_size(name: str) -> float | None:
    """Parameter count written in a model name: "pythia-1.4b-deduped" -> 1.4e9, "70m" -> 7e7."""
    m = _SIZE.search(name)
    return None if m is None else float(m.group(1)) * _SIZE_FACTOR[m.group(2).lower()]
