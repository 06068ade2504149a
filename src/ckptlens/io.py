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
    """Yield a temporary path next to ``path``; rename it to ``path`` only if the block succeeds.

    A job killed before the rename (SIGKILL, a preempted node) leaves only ``.<name>.<pid>.tmp``,
    never a file under the final name; the next writer of ``path`` deletes such leftovers of dead
    processes first (a checkpoint-sized leftover per preemption would fill the disk otherwise)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        _test_pause(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_stale_temporaries(path) -> list[Path]:
    """Delete ``.<name>.<pid>.tmp``/``.data`` files next to ``path`` left by processes that no
    longer run (Snakemake lets one job at a time write an output, so a live pid is left alone only
    out of caution). Returns what was deleted."""
    path = Path(path)
    removed = []
    for p in path.parent.glob(f".{glob_escape(path.name)}.*"):
        pid = p.name[len(path.name) + 2:].rpartition(".")
        if pid[2] not in ("tmp", "data") or not pid[0].isdigit() or int(pid[0]) == os.getpid():
            continue
        try:
            os.kill(int(pid[0]), 0)
            continue  # that process still runs
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError):
            continue
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed


def glob_escape(name: str) -> str:
    import glob

    return glob.escape(name)


def _test_pause(path: Path) -> None:
    """TEST-ONLY hook (tests/test_faults.py): when ``CKPTLENS_TEST_PAUSE_AT`` is a substring of
    ``path``, the writer stops right before the rename — its complete-looking temporary file on
    disk — touches the file ``CKPTLENS_TEST_PAUSE_SIGNAL`` and sleeps, so that the test can SIGKILL
    the run at that exact point. Unset (always, outside those tests), it does nothing."""
    at = os.environ.get("CKPTLENS_TEST_PAUSE_AT")
    if not at or at not in str(path):
        return
    import time

    signal = os.environ.get("CKPTLENS_TEST_PAUSE_SIGNAL")
    if signal:
        Path(signal).write_text(str(path))
    time.sleep(600)


_DTYPES = {"float32": "F32", "float64": "F64", "float16": "F16", "int64": "I64", "int32": "I32", "int16": "I16",
           "int8": "I8", "uint64": "U64", "uint32": "U32", "uint16": "U16", "uint8": "U8", "bool": "BOOL"}


def _little_endian(arr: np.ndarray) -> np.ndarray:
    arr = np.ascontiguousarray(arr)
    return arr.astype(arr.dtype.newbyteorder("<")) if arr.dtype.str[0] == ">" else arr


def save_tensors(tensors: Mapping[str, np.ndarray], path, metadata: Mapping[str, str] | None = None) -> None:
    """Write a safetensors file atomically, byte for byte reproducible: the same tensors and metadata
    always give the same bytes (the safetensors library orders metadata keys differently in every
    process), so that a rerun after an interruption can be compared with an uninterrupted run."""
    import json
    import struct

    arrays = [(k, _little_endian(v)) for k, v in tensors.items()]
    if any(a.dtype.name not in _DTYPES for _, a in arrays):  # a dtype this writer does not know
        from safetensors.numpy import save_file

        with atomic_path(path) as tmp:
            save_file(dict(arrays), str(tmp), metadata=dict(metadata or {}))
        return
    header: dict = {"__metadata__": {k: metadata[k] for k in sorted(metadata)}} if metadata else {}
    offset = 0
    for name, a in arrays:
        header[name] = {"dtype": _DTYPES[a.dtype.name], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        out.write(struct.pack("<Q", len(raw)))
        out.write(raw)
        for _, a in arrays:
            if a.nbytes:
                out.write(memoryview(a.reshape(-1)).cast("B"))


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
    remove_stale_temporaries(path)
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
        from .faults import FailureRecordError, record_from_metadata

        record = record_from_metadata(self.metadata, len(keys))
        if record is not None:  # a failed checkpoint's record is never read as an empty result
            raise FailureRecordError(self.path, record)
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


def source_hash(*modules: str) -> str:
    """Hash of the source files of ``ckptlens`` modules (a package: every .py in it), found
    without importing them. Given to Snakemake as a parameter, so that editing the library code a
    stage runs reruns that stage (Snakemake itself tracks only the script file)."""
    import hashlib
    import importlib.util

    h = hashlib.sha256()
    for mod in modules:
        spec = importlib.util.find_spec(f"ckptlens.{mod}")
        if spec is None or spec.origin is None:
            raise ValueError(f"no module ckptlens.{mod}")
        origin = Path(spec.origin)
        files = sorted(origin.parent.glob("*.py")) if origin.name == "__init__.py" else [origin]
        for f in files:
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]
