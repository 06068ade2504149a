"""The extraction job's allocator setting: after :func:`keep_freed_memory`, the large blocks of one
"batch" are reused by the next (no new page faults once the heap has grown); without it, glibc
maps every block above 32 MB afresh and faults it in again, batch after batch. Measured with
torch's CPU allocator, as in the job (numpy asks for huge pages, which hides the difference)."""

import subprocess
import sys
import textwrap

import pytest

from ckptlens.extract.allocator import keep_freed_memory

#: 12 "batches" of an 80 MB activation and a product of it, freed after each; prints the minor page
#: faults of the last 5 (the heap grows during the first few)
BATCHES = textwrap.dedent(
    """
    import resource, sys
    import torch
    from ckptlens.extract.allocator import keep_freed_memory
    applied = keep_freed_memory() if sys.argv[1] == "keep" else None
    w = torch.randn(1000, 1000)
    faults = []
    for _ in range(12):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        x = torch.ones(20_000, 1000)
        y = torch.relu(x @ w)
        del x, y
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(applied, sum(faults[-5:]))
    """
)
#: 4 KiB pages of the last 5 batches' three 80 MB blocks (x, x @ w, its relu)
PAGES = 5 * 3 * 80_000_000 // 4096


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", BATCHES, mode], capture_output=True, text=True, check=True).stdout
    applied, faults = out.split()
    return applied, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_blocks_are_reused_instead_of_mapped_again():
    applied, kept = _faults("keep")
    if applied != "True":
        pytest.skip("this C library has no glibc mallopt")  # musl: the setting does not exist there
    _, default = _faults("default")
    assert default > PAGES // 2  # every batch's blocks faulted in anew
    assert kept < PAGES // 5  # reused once the heap has grown


def test_returns_whether_it_applied():
    assert keep_freed_memory() in (True, False)
