"""Device choice for GPU-tagged jobs: follow what the job was given, fall back to CPU with a log line."""

from __future__ import annotations

import os
import sys


def pick_device():
    import torch

    if torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<all>")
        print(f"ckptlens: using cuda:0 (CUDA_VISIBLE_DEVICES={visible})", file=sys.stderr)
        return torch.device("cuda:0")
    print("ckptlens: no GPU available to this job, running on CPU", file=sys.stderr)
    return torch.device("cpu")
