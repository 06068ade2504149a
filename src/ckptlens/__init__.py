"""ckptlens: how every layer of a network changes over training.

Kept import-light on purpose: submodules import torch, sklearn or matplotlib only where needed,
so that workflow jobs that compute metrics start fast.
"""

__version__ = "0.1.0"
