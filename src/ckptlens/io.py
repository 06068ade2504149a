"""File formats shared by the stages, always written atomically (temporary name, then rename), so
that an interrupted job never leaves something that looks like a finished result."""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

TIDY_COLUMNS = ["run", "step", "layer", "metric", "value"]
GRADIENT_SEP = "#"  # gradients file keys: "<layer>#<probe batch index>"


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_tensors(tensors: Mapping[str, np.ndarray], path, metadata: Mapping[str, str] | None = None) -> None:
    from safetensors.numpy import save_file

    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(arrays, str(tmp), metadata=dict(metadata or {}))


_DTYPES = {"float32": "F32", "float64": "F64", "float16": "F16", "int64": "I64", "int32": "I32", "int8": "I8", "uint8": "U8", "bool": "BOOL"}


def save_tensors_streaming(items, path, metadata: Mapping[str, str] | None = None) -> list[str]:
    """Write ``(name, array)`` pairs as a safetensors file holding one array in memory at a time
    (the format is a JSON header of offsets followed by raw little-endian bytes, so the data go to
    a side file first and the header is written once every offset is known). Atomic like
    :func:`save_tensors`. Returns the names written."""
    import json
    import shutil
    import struct

    path = Path(path)
    header: dict = {"__metadata__": dict(metadata or {})} if metadata else {}
    offset = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    data_tmp = path.with_name(f".{path.name}.{os.getpid()}.data")
    try:
        with open(data_tmp, "wb") as data:
            for name, arr in items:
                arr = np.ascontiguousarray(arr)
                if arr.dtype.str[0] == ">":
                    arr = arr.astype(arr.dtype.newbyteorder("<"))
                nbytes = arr.nbytes
                if nbytes:
                    data.write(memoryview(arr.reshape(-1)).cast("B"))
                header[name] = {"dtype": _DTYPES[arr.dtype.name], "shape": list(arr.shape), "data_offsets": [offset, offset + nbytes]}
                offset += nbytes
                del arr
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with atomic_path(path) as tmp, open(tmp, "wb") as out, open(data_tmp, "rb") as data:
            out.write(struct.pack("<Q", len(raw)))
            out.write(raw)
            shutil.copyfileobj(data, out, 16 << 20)
    finally:
        if data_tmp.exists():
            data_tmp.unlink()
    return [k for k in header if k != "__metadata__"]


class TensorFile(Mapping):
    """Read-only, lazy view of a safetensors file: one tensor is read when asked for
    (memory-mapped), so a job holds one layer at a time, not the whole file."""

    def __init__(self, path, group_gradients: bool = False):
        from safetensors import safe_open

        self.path = Path(path)
        try:
            self._f = safe_open(str(self.path), framework="numpy")
        except Exception as exc:  # the safetensors error does not say which file
            raise ValueError(f"{self.path}: not a readable safetensors file ({exc})") from exc
        keys = list(self._f.keys())
        self.metadata = self._f.metadata() or {}
        self._groups: dict[str, list[str]] | None = None
        if group_gradients:
            groups: dict[str, list[tuple[int, str]]] = {}
            for k in keys:
                layer, _, idx = k.rpartition(GRADIENT_SEP)
                groups.setdefault(layer, []).append((int(idx), k))
            self._groups = {layer: [k for _, k in sorted(v)] for layer, v in groups.items()}
            self._keys = list(self._groups)
        else:
            self._keys = keys

    def __getitem__(self, key: str) -> np.ndarray:
        if self._groups is not None:
            return np.stack([self._f.get_tensor(k) for k in self._groups[key]])
        if key not in self._keys:
            raise KeyError(key)
        return self._f.get_tensor(key)

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


class _Selected(Mapping):
    def __init__(self, base: Mapping, keys: list[str]):
        self._base, self._keys = base, keys

    def __getitem__(self, key):
        if key not in self._keys:
            raise KeyError(key)
        return self._base[key]

    def __iter__(self):
        return iter(self._keys)

    def __len__(self):
        return len(self._keys)


def select_layers(layers: Mapping, patterns) -> Mapping:
    """The layers whose names match ``patterns`` (None = all), still read lazily."""
    if patterns is None:
        return layers
    from .patterns import select

    return _Selected(layers, select(patterns, list(layers)))


def write_rows_csv(rows, path, columns=TIDY_COLUMNS) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "value": "nan" if isinstance(r.get("value"), float) and math.isnan(r["value"]) else r.get("value")})


@contextlib.contextmanager
def job_log(path):
    """Send a job's prints and warnings to its Snakemake log file (and keep a copy on stderr on failure)."""
    if not path:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as log:
        old_out, old_err, old_show = sys.stdout, sys.stderr, warnings.showwarning
        buf = io.StringIO()

        class Tee(io.TextIOBase):
            def write(self, s):
                log.write(s)
                buf.write(s)
                return len(s)

            def flush(self):
                log.flush()

        sys.stdout = sys.stderr = Tee()
        warnings.showwarning = lambda m, c, f, n, file=None, line=None: log.write(
            warnings.formatwarning(m, c, f, n, line)
        )
        try:
            yield
        except BaseException:
            import traceback

            traceback.print_exc()
            sys.stdout, sys.stderr = old_out, old_err
            old_err.write(buf.getvalue()[-4000:])
            raise
        finally:
            sys.stdout, sys.stderr, warnings.showwarning = old_out, old_err, old_show
