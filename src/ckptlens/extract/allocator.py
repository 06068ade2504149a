"""The C allocator of an extraction job: freed large blocks are kept for the next batch.

glibc serves an allocation above its mmap threshold (32 MB at most by default) with a new mapping
and unmaps it when it is freed. So every forward and backward faults its logits, activations and
gradients in again, page by page. At Pythia-160M's shape with a probe of 8 × 128 tokens, that is
210,000 page faults and 0.7 s of system time a batch. With both thresholds raised, freed blocks
stay in the heap and are reused: 10,000–18,000 faults, and 0.83–0.88× the time a batch
(bench/bench_allocator.py). The process's peak resident memory grows by 0.4–0.55 GB there; a whole
extraction job's by about 1 GB (3.7–3.9 GB → 4.7 GB, bench/bench_model_scale.py). PyTorch's CPU tuning guide gets the same effect by
swapping in jemalloc or tcmalloc; this way needs no other library. Where the C library is not glibc
(macOS, musl), nothing changes.
"""

from __future__ import annotations

import ctypes

#: glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: allocations up to this size come from the heap, and the heap keeps up to this much free memory
#: at its top (a tensor above it, such as a 1.4B model's 412 MB embedding, still gets a mapping)
KEEP_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to :data:`KEEP_BYTES` for this process. Returns
    whether it applied (False where the C library has no ``mallopt`` or refuses the values)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
