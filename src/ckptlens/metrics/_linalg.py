"""The heavy dense kernels of the metric families — the Gram eigendecompositions of the
``weight_spectrum`` family, the Gram/cross products of CKA — on numpy, or through torch on the
metric job's GPU when it has one.

Which backend (:func:`device`), from the environment variable ``CKPTLENS_METRIC_DEVICE``:

``auto`` (default)
    torch on ``cuda:0`` when the job was given a GPU, numpy otherwise. "Given" means what a
    scheduler does for a GPU job: ``CUDA_VISIBLE_DEVICES`` names a device (Slurm's ``--gpus``,
    which a rule's ``resources: gpu=1`` becomes through the profile) — read from the environment
    first, so a job without one never imports torch and metric jobs stay cheap to start (many run
    side by side on a workstation's CPUs; they should not all open a CUDA context on its GPU).
    Only then is torch imported and ``torch.cuda.is_available()`` asked (as the extraction's
    :func:`ckptlens.sources.devices.pick_device` does), with one log line either way. On a
    workstation, where nothing sets ``CUDA_VISIBLE_DEVICES``, ask for the GPU with ``cuda``; a
    shell that exports it for everything puts every metric job on that GPU (``numpy`` keeps
    them off it).
``numpy`` / ``cpu``
    numpy, always.
``cuda`` / ``cuda:N``
    torch on that GPU (an error if torch sees none).
``torch`` / ``torch:cpu``
    torch on the CPU: the torch path without a GPU (the parity tests and the bench use it).

Both paths compute in float64 (an H100/H200 runs float64 at half its float32 rate; the Gram route
needs float64: see :mod:`.weight_spectrum`). Same values to a stated tolerance, tested on CPU
(``tests/metrics/test_linalg_backend.py``): eigenvalues to 1e-12·λ_max, the metrics built on them
to 1e-9 relative — but ``condition_number`` where it comes from the Gram route (κ ≤ 1e5), which
each backend knows to ~ε·κ² only (5e-7 relative at κ = 8e4, MiniLM's worst), and the two agree
to that — CKA to 1e-10. On a GPU the sort behind ``gini`` runs there too (exact: the
same array). They are not bit-identical (another BLAS/LAPACK, another summation
order), so a run that changes backend changes its values at the rounding level.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache

import numpy as np

ENV = "CKPTLENS_METRIC_DEVICE"
#: device types whose sort :func:`sort_nonnegative` uses (torch's CPU sort is slower than numpy's)
_SORT_ON = ("cuda",)


def _gpu_given() -> bool:
    """Cheap, torch-free: whether the scheduler gave this job a GPU (CUDA_VISIBLE_DEVICES names one)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    return visible not in ("", "-1", "NoDevFiles")


@lru_cache(maxsize=1)
def device():
    """``None`` (numpy) or the ``torch.device`` the kernels run on (module docstring); decided
    once per process (:func:`reset` for tests)."""
    spec = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if spec in ("numpy", "cpu", "none"):
        return None
    if spec == "auto":
        if not _gpu_given():
            return None
        import torch

        if torch.cuda.is_available():
            print(f"ckptlens metrics: heavy kernels on cuda:0 via torch ({ENV}=auto)", file=sys.stderr)
            return torch.device("cuda:0")
        print(f"ckptlens metrics: no usable GPU, kernels on numpy ({ENV}=auto)", file=sys.stderr)
        return None
    import torch

    if spec in ("torch", "torch:cpu"):
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"{ENV}={spec}: torch sees no CUDA device")
        return torch.device(spec)
    raise ValueError(f"{ENV} must be auto, numpy, cpu, torch, torch:cpu or cuda[:N], not {spec!r}")


def reset() -> None:
    """Forget the backend chosen (after changing ``CKPTLENS_METRIC_DEVICE``)."""
    device.cache_clear()


def on_torch() -> bool:
    return device() is not None


def to_device(x: np.ndarray):
    """A float64 torch tensor of ``x`` on the backend's device (only when :func:`on_torch`)."""
    import torch

    return torch.as_tensor(np.asarray(x, dtype=np.float64)).to(device())


def to_numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy()


def gram_eigvalsh(w: np.ndarray) -> np.ndarray:
    """Eigenvalues, ascending, of the smaller Gram matrix (WᵀW or WWᵀ) of a float64 m×n matrix:
    σ² of W, min(m, n) of them, unclipped (the rounding-level clean-up is the caller's)."""
    m, n = w.shape
    dev = device()
    if dev is None:
        g = w.T @ w if m >= n else w @ w.T  # numpy's matmul runs syrk for a matrix times its transpose
        return np.linalg.eigvalsh(g)
    import torch

    t = to_device(w)
    g = t.T @ t if m >= n else t @ t.T
    return to_numpy(torch.linalg.eigvalsh(g))


def svdvals(w: np.ndarray) -> np.ndarray:
    """Singular values, decreasing, of a float64 matrix (an exact SVD, no Gram)."""
    dev = device()
    if dev is None:
        return np.linalg.svd(w, compute_uv=False)
    import torch

    return to_numpy(torch.linalg.svdvals(to_device(w)))


def sort_nonnegative(x: np.ndarray) -> np.ndarray | None:
    """``np.sort(x)`` of a 1-D array of non-negative finite floats on the job's GPU, or None where
    the kernels run on the CPU (numpy's sort is then the faster one: the caller sorts). Sorting is
    exact, so the result is the numpy one bit for bit."""
    dev = device()
    if dev is None or dev.type not in _SORT_ON or x.dtype.kind != "f":
        return None
    import torch

    return to_numpy(torch.sort(torch.as_tensor(x).to(dev)).values)
