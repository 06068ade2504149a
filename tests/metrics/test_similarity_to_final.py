"""cka_to_final from the extraction's similarity terms: the values of linear CKA (biased and
debiased) on the two checkpoints' activations, and ckatorch's."""

import math

import numpy as np
import pytest

from ckptlens import metrics as M
from ckptlens.extract.similarity import Centred, similarity_terms
from ckptlens.metrics.activation_similarity import ActivationContext, debiased_linear_cka, linear_cka


def cka_to_final(x, y, **params):
    terms = similarity_terms({"l": x}, {"l": Centred(y)})
    return M.compute_family("similarity_to_final", {"cka_to_final": params}, terms, {})[0]["value"]


@pytest.mark.parametrize("n, d1, d2", [(200, 5, 7), (8, 60, 40), (30, 30, 30)])
def test_cka_to_final_is_cka_of_the_activations(n, d1, d2):
    rng = np.random.default_rng(n + d1)
    x = rng.standard_normal((n, d1)) + 2.0
    y = x[:, :1] * rng.standard_normal(d2) + 0.5 * rng.standard_normal((n, d2)) - 1.0
    a, b = ActivationContext(x), ActivationContext(y)
    assert cka_to_final(x, y) == pytest.approx(linear_cka(a, b), rel=1e-10)
    assert cka_to_final(x, y, debiased=True) == pytest.approx(debiased_linear_cka(a, b), rel=1e-9)
    ckatorch = pytest.importorskip("ckatorch")
    import torch

    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    assert cka_to_final(x, y) == pytest.approx(ckatorch.cka_base(tx, ty).item(), rel=1e-9)
    assert cka_to_final(x, y, debiased=True) == pytest.approx(ckatorch.cka_base(tx, ty, unbiased=True).item(), rel=1e-9)


def test_itself_scaled_is_one_and_degenerate_inputs_are_nan_with_a_warning():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((40, 6))
    assert cka_to_final(x, -3.0 * x) == pytest.approx(1.0)
    with pytest.warns(RuntimeWarning, match="0/0"):
        assert math.isnan(cka_to_final(np.ones((40, 6)), x))
    with pytest.warns(RuntimeWarning, match="at least 4 probe samples"):
        assert math.isnan(cka_to_final(np.eye(3), np.eye(3), debiased=True))
    with pytest.raises(M.MetricConfigError, match=r"metrics\.cka_to_final\.debiased"):
        M.resolve_params("cka_to_final", {"debiased": "yes"})
