"""Metric registry and the metrics that ship with ckptlens (numpy only: no torch here).

Families (see each module's docstring for its metrics, parameters and input layout):
    weight_spectrum        (weights, per layer)         weights.py
    weight_update          (weights, per layer, refs)   updates.py
    circuits               (weights, model scope)       circuits.py
    activation_similarity  (activations, per layer)     activations.py
    activation_spectrum    (activations, per layer)     activation_stats.py
    activation_pairs       (activations, model scope)   linearity.py
    gradient               (gradients, per layer)       gradients.py
    gradient_pca           (activation_gradients, model scope)  gradient_pca.py
    attention              (attentions, per layer)      attention.py
A job's inputs (extraction files, failed checkpoints) are opened by :mod:`.inputs`. Adding a
metric: one decorated function in the module of its family (see :mod:`.registry`) and its value test.
"""

# Importing the modules registers their families and metrics.
from . import (  # noqa: E402,F401
    activation_stats,
    activations,
    attention,
    circuits,
    gradient_pca,
    gradients,
    linearity,
    updates,
    weights,
)
from .registry import (  # noqa: F401
    FAMILIES,
    METRICS,
    NEEDS,
    REFERENCES,
    Degenerate,
    LayerStore,
    MetricConfigError,
    Unavailable,
    compute_family,
    family,
    family_code_hash,
    get_metric,
    group_by_family,
    metric,
    metric_warning,
    references_of,
    resolve_params,
    split_metric_name,
    value_names,
    values_depend_on_input,
)
