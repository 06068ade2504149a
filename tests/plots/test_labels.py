"""Metric labels (ckptlens.plots.labels): every registered metric has a readable axis label."""

from __future__ import annotations


def test_every_registered_metric_has_a_readable_axis_label():
    from ckptlens.metrics import METRICS  # importing the package registers every metric
    from ckptlens.plots.labels import axis_label, metric_label

    assert len(METRICS) > 30 and sorted(name for name, m in METRICS.items() if not m.label) == []
    assert metric_label("cka_to_final") == "linear CKA to the final checkpoint"
    assert metric_label("qk_ov_token_mismatch.k8") == "token mismatch ratio (k8)"
    assert metric_label("my_own.metric") == "my_own.metric"
    assert axis_label("gradient_norm", log=True) == "gradient norm ‖∇W‖_F (log scale)"
    assert all(len(line) <= 40 for line in axis_label("relative_update_norm_initial", True).splitlines())
