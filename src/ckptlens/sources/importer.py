"""Copy or convert one source checkpoint into the results folder as a safetensors file."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..io import atomic_path


def import_checkpoint(src, dst) -> None:
    src = Path(src)
    if src.suffix == ".safetensors":
        from ..io import TensorFile

        TensorFile(src)  # fails with the file's name if the header is unreadable
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
        return
    raise ValueError(f"{src}: unsupported checkpoint format (expected .safetensors)")
