"""Metric registry and the metrics that ship with ckptlens (numpy only: no torch here).

Each family has one module named after it (see its docstring for its metrics, parameters and
input layout); its metrics take their family from that name:
    weight_spectrum        (weights, per layer)
    weight_update          (weights, per layer, refs)
    circuits               (weights, model scope; its linear algebra in :mod:`._circuits`)
    activation_similarity  (activations, per layer)
    activation_spectrum    (activations, per layer)
    activation_pairs       (activations, model scope)
    gradient               (gradient_stats, model scope: a value per layer)
    gradient_pca           (activation_gradients, model scope)
    attention              (attentions, per layer)
A job's inputs (extraction files, failed checkpoints) are opened by :mod:`.inputs`. Adding a
metric: one decorated function in the module of its family (see :mod:`.registry`) and its value test.
"""

# Importing the modules registers their families and metrics.
from . import (  # noqa: E402,F401
    activation_pairs,
    activation_similarity,
    activation_spectrum,
    attention,
    circuits,
    gradient,
    gradient_pca,
    similarity_to_final,
    weight_spectrum,
    weight_update,
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
    family_modules,
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
