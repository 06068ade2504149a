"""Safetensors files: the one writer and the one reader every stage uses.

* :func:`write_tensors` writes ``(name, array)`` pairs — a mapping, or an iterable that yields one
  array at a time (a large checkpoint never sits in memory whole) — atomically and byte for byte
  reproducibly: the same tensors and metadata always give the same bytes (metadata keys sorted),
  so that a rerun after an interruption can be compared with an uninterrupted run.
* :func:`copy_with_metadata` copies a safetensors file with metadata added, streaming the tensor
  bytes unchanged.
* :class:`SafetensorsFile` reads one lazily (memory-mapped): names, shapes, dtypes, metadata, one
  tensor at a time; dtypes numpy lacks (bfloat16, float8) come back as float32 (through torch,
  imported only then). :class:`TensorFile` is the same file as a read-only Mapping, optionally with
  per-batch gradients (``"<layer>#<i>"``) stacked per layer.
* :data:`GRADIENT_STATISTICS`: the layout of a ``gradient_stats`` extraction.
* :func:`write_reference`: a *checkpoint reference*, what the workflow keeps of a local checkpoint
  that is already a safe, readable file (safetensors, or a ``save_pretrained`` folder of them): no
  copy, a safetensors file holding no tensor whose metadata :data:`REFERENCE_KEY` names the
  checkpoint and the size and modification time of each of its files.
  :func:`ckptlens.sources.readers.open_checkpoint` follows it to the user's files.

Both readers refuse a failure record (:mod:`ckptlens.store.records`) and a checkpoint reference
(:class:`ReferenceFileError`: only :func:`~ckptlens.sources.readers.open_checkpoint` follows one);
every failure is a :class:`~ckptlens.store.records.CheckpointError` naming the file and the reason.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np

from .atomic import atomic_path, remove_stale_temporaries, scratch_path
from .records import CheckpointError, FailureRecordError, record_from_metadata

#: gradients file keys: "<layer>#<probe batch index>"
GRADIENT_SEP = "#"
#: activation-gradients file keys: "<layer>|<model output>" ("blocks.3.mlp|out0")
OUTPUT_SEP = "|"

#: The ``gradient_stats`` extraction (format :data:`GRADIENT_STATS_FORMAT`): sufficient statistics of
#: a layer's weight gradients over the K probe batches, accumulated as each backward finishes
#: (:mod:`ckptlens.extract.gradients`), instead of the K gradients themselves. Keys
#: ``"<layer>#<array>"``; what a statistic (requested by name) writes, all float64:
#:
#: ``norm``      ``norm`` [K]: ‖g_k‖ of each batch's gradient
#: ``dot``       ``dot`` [K−1]: ⟨g_{k−1}, g_k⟩ of consecutive batches
#: ``mean``      ``mean_sq`` [1]: ‖ḡ‖², ḡ = (1/K) Σ_k g_k (a running mean); ``deviation_sq`` [1]:
#:               Σ_k ‖g_k − ḡ‖² (Welford's running sum of squared deviations, summed over parameters)
#: ``variance``  ``gsnr`` [3]: per parameter j with s_j² = (Welford's M2_j)/(K−1) and ḡ_j: (Σ ḡ_j²/s_j²
#:               over the parameters with s_j² > 0, how many they are, how many have s_j² = 0 and
#:               ḡ_j ≠ 0)
#:
#: The file's metadata says ``format``, ``statistics`` (comma-separated) and ``n_batches``.
GRADIENT_STATISTICS = {
    "norm": ("norm",),
    "dot": ("dot",),
    "mean": ("mean_sq", "deviation_sq"),
    "variance": ("gsnr",),
}
GRADIENT_STATS_FORMAT = "gradient_stats/1"
#: the targets key (``targets.<key>`` of the config) an extraction kind takes its modules from, where
#: it is not the kind itself
TARGETS_OF = {"gradient_stats": "gradients", "similarity_terms": "activations"}


def targets_key(kind: str) -> str:
    """The ``targets`` entry naming the modules of an extraction kind (``gradient_stats`` is of the
    ``gradients`` targets)."""
    return TARGETS_OF.get(kind, kind)


#: metadata key of a checkpoint reference: JSON ``{"path": the checkpoint (absolute), "files":
#: {file: [size, mtime_ns]}}`` (a folder's weight files and config.json, or the file itself)
REFERENCE_KEY = "ckptlens_reference"


class ReferenceFileError(CheckpointError):
    """A checkpoint reference was read as tensors; ``target`` is the checkpoint it names
    (:func:`ckptlens.sources.readers.open_checkpoint` opens that instead)."""

    def __init__(self, path, reference: dict):
        self.path, self.reference, self.target = Path(path), reference, Path(reference["path"])
        super().__init__(f"{path}: not a checkpoint but a reference to {self.target}")


def file_stamps(files) -> dict[str, list[int]]:
    """``{file: [size, mtime_ns]}``: what a reference checks before its checkpoint is read."""
    out = {}
    for f in map(Path, files):
        st = f.stat()
        out[str(f.absolute())] = [st.st_size, st.st_mtime_ns]
    return out


def write_reference(path, target, files) -> None:
    """A checkpoint reference at ``path`` (atomically) to the checkpoint ``target`` (a file or
    folder) read from ``files``; the source's name is also ``ckptlens_source``, as in a copy."""
    target = str(Path(target).absolute())
    ref = {"path": target, "files": file_stamps(files)}
    write_tensors({}, path, {REFERENCE_KEY: json.dumps(ref, sort_keys=True), "ckptlens_source": target})


def reference_from_metadata(metadata, n_tensors: int) -> dict | None:
    """The reference a file's metadata holds (None: not a reference)."""
    if n_tensors or not metadata or REFERENCE_KEY not in metadata:
        return None
    try:
        ref = json.loads(metadata[REFERENCE_KEY])
    except ValueError:
        ref = None
    if not isinstance(ref, dict) or not isinstance(ref.get("path"), str):
        raise CheckpointError(f"invalid checkpoint reference {metadata[REFERENCE_KEY]!r}")
    return ref


def followed(path) -> Path:
    """The file or folder a checkpoint reference at ``path`` names, if its files are still those it
    was written for (else a :class:`CheckpointError` saying which changed); ``path`` itself when it
    is not a reference. Reads the header only."""
    path = Path(path)
    header = read_header(path, 1 << 20) if path.is_file() else None
    reference = None
    if header is not None:
        n = sum(1 for k in header if k != "__metadata__")
        reference = reference_from_metadata(header.get("__metadata__"), n)
    if reference is None:
        return path
    stale = stale_files(reference)
    if stale:
        raise CheckpointError(
            f"{reference['path']}: changed since the workflow read it ({path}): {', '.join(stale[:3])}; "
            "run the workflow again to read the new files"
        )
    return Path(reference["path"])


def stale_files(reference: dict) -> list[str]:
    """The files of a reference that are gone or changed (size or modification time) since it
    was written: the checkpoint it names is then not the one the workflow digested."""
    stale = []
    for f, (size, mtime) in (reference.get("files") or {}).items():
        try:
            st = Path(f).stat()
        except OSError:
            stale.append(f"{f} (gone)")
            continue
        if st.st_size != size or st.st_mtime_ns != mtime:
            stale.append(f"{f} (changed)")
    return stale


_DTYPES = {
    "float32": "F32",
    "float64": "F64",
    "float16": "F16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint64": "U64",
    "uint32": "U32",
    "uint16": "U16",
    "uint8": "U8",
    "bool": "BOOL",
}
_NUMPY_LACKS = {"BF16", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4"}  # safetensors dtype names
_COPY_BLOCK = 16 << 20


# --------------------------------------------------------------------------------------------- write
def encode_header(header: Mapping) -> bytes:
    """The 8-byte length and the JSON header of a safetensors file, padded to 8 bytes."""
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def _little_endian(arr) -> np.ndarray:
    arr = np.ascontiguousarray(arr)
    if arr.dtype.str[0] == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    if arr.dtype.name not in _DTYPES:
        raise ValueError(f"cannot store a {arr.dtype} array in a safetensors file (supported: {', '.join(_DTYPES)})")
    return arr


def _entry(arr: np.ndarray, offset: int) -> dict:
    return {"dtype": _DTYPES[arr.dtype.name], "shape": list(arr.shape), "data_offsets": [offset, offset + arr.nbytes]}


def _write_array(out, arr: np.ndarray) -> None:
    if arr.nbytes:
        out.write(memoryview(arr.reshape(-1)).cast("B"))


def write_tensors(
    tensors: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]],
    path,
    metadata: Mapping[str, str] | None = None,
) -> list[str]:
    """Write a safetensors file atomically; returns the names written, in order.

    ``tensors``: a mapping, or an iterable of ``(name, array)`` pairs read one at a time (their
    bytes go to a side file until every offset is known; only one array is held in memory)."""
    path = Path(path)
    header: dict = {"__metadata__": {str(k): str(metadata[k]) for k in sorted(metadata)}} if metadata else {}
    if isinstance(tensors, Mapping):
        arrays = [(k, _little_endian(v)) for k, v in tensors.items()]
        offset = 0
        for name, a in arrays:
            header[name] = _entry(a, offset)
            offset += a.nbytes
        with atomic_path(path) as tmp, open(tmp, "wb") as out:
            out.write(encode_header(header))
            for _, a in arrays:
                _write_array(out, a)
        return [k for k, _ in arrays]
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    data_tmp = scratch_path(path, "data")
    names = []
    try:
        offset = 0
        with open(data_tmp, "wb") as data:
            for name, arr in tensors:
                a = _little_endian(arr)
                _write_array(data, a)
                header[name] = _entry(a, offset)
                offset += a.nbytes
                names.append(name)
                del a, arr
        with atomic_path(path) as tmp, open(tmp, "wb") as out, open(data_tmp, "rb") as data:
            out.write(encode_header(header))
            shutil.copyfileobj(data, out, _COPY_BLOCK)
    finally:
        if data_tmp.exists():
            data_tmp.unlink()
    return names


def read_header(path, max_bytes: int = 1 << 30) -> dict | None:
    """The JSON header of a safetensors file; None if it is not one (or its header is larger than
    ``max_bytes``). Reads the header only."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return None
            (n,) = struct.unpack("<Q", head)
            if n > max_bytes:
                return None
            header = json.loads(fh.read(n))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return header if isinstance(header, dict) else None


def copy_with_metadata(src, dst, extra_metadata: Mapping[str, str]) -> None:
    """Copy the safetensors file ``src`` to ``dst`` with ``extra_metadata`` added to its header; the
    tensor bytes are streamed unchanged (their offsets are relative to the end of the header).
    The copy is checked to open before it takes its final name."""
    from safetensors import safe_open

    with open(src, "rb") as fin:
        (n,) = struct.unpack("<Q", fin.read(8))
        header = json.loads(fin.read(n))
        meta = {**(header.pop("__metadata__", None) or {}), **extra_metadata}
        header = {"__metadata__": {k: meta[k] for k in sorted(meta)}, **header}
        with atomic_path(dst) as tmp:
            with open(tmp, "wb") as fout:
                fout.write(encode_header(header))
                shutil.copyfileobj(fin, fout, _COPY_BLOCK)
            safe_open(str(tmp), framework="numpy")


# --------------------------------------------------------------------------------------------- read
_SIGNATURES = (
    (b"PK\x03\x04", "a zip archive, e.g. a torch .pt file with the wrong suffix"),
    (b"\x80", "a Python pickle, e.g. a torch file with the wrong suffix"),
    (b"<", "text such as an HTML/XML error page saved instead of the file"),
    (b"{", "JSON text, not a safetensors file"),
    (b"version https://git-lfs", "a Git LFS pointer, not the file itself"),
)


def sniff(path: Path) -> str:
    """What a file that fails to parse as safetensors starts with, when that tells why (only when
    its first 8 bytes cannot be a safetensors header length: larger than the file)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
        size = Path(path).stat().st_size
    except OSError:
        return ""
    if len(head) >= 8 and 8 + int.from_bytes(head[:8], "little") <= size:
        return ""  # shaped like safetensors: the parser's own reason says what is wrong
    for sig, what in _SIGNATURES:
        if head.startswith(sig):
            return f"; the file starts like {what}"
    return ""


def short_reason(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0][:300]}" if msg else type(exc).__name__


class SafetensorsFile:
    """One safetensors file, read lazily: ``keys``, ``shapes``, ``dtypes``, ``metadata`` and
    :meth:`get`. A numpy handle serves every dtype numpy has; a torch handle is opened only for
    bfloat16/float8 tensors, which come back as float32."""

    def __init__(self, path):
        from safetensors import safe_open

        self.path = Path(path)
        try:
            self._np = safe_open(str(self.path), framework="numpy")
            self.keys = list(self._np.keys())
            self.metadata = dict(self._np.metadata() or {})
            self.shapes, self.dtypes = {}, {}
            for k in self.keys:
                s = self._np.get_slice(k)
                self.shapes[k] = tuple(int(x) for x in s.get_shape())
                self.dtypes[k] = str(s.get_dtype())
        except Exception as exc:  # SafetensorError, OSError: the message does not name the file
            raise CheckpointError(
                f"{self.path}: not a valid safetensors file ({short_reason(exc)}{sniff(self.path)})"
            ) from exc
        record = record_from_metadata(self.metadata, len(self.keys))
        if record is not None:  # a failed checkpoint's record is never read as an empty result
            raise FailureRecordError(self.path, record)
        reference = reference_from_metadata(self.metadata, len(self.keys))
        if reference is not None:  # nor a reference to a checkpoint as an empty checkpoint
            raise ReferenceFileError(self.path, reference)
        self._pt = None

    def get(self, key: str) -> np.ndarray:
        if key not in self.shapes:
            raise KeyError(f"{key!r} is not a tensor of {self.path}")
        try:
            if self.dtypes[key] in _NUMPY_LACKS:
                import torch  # only here: numpy has no bfloat16 / float8
                from safetensors import safe_open

                if self._pt is None:
                    self._pt = safe_open(str(self.path), framework="pt")
                return self._pt.get_tensor(key).to(torch.float32).numpy()
            return self._np.get_tensor(key)
        except Exception as exc:
            raise CheckpointError(f"{self.path}: cannot read tensor {key!r} ({short_reason(exc)})") from exc

    def close(self) -> None:
        self._np = self._pt = None


class TensorFile(Mapping):
    """A safetensors file as a read-only Mapping: one tensor is read when asked for
    (memory-mapped), so a job holds one layer at a time, not the whole file. With
    ``float16_as_float32`` float16 tensors are read as float32. With ``group_gradients`` the keys
    are the layers of a gradients file and each value stacks that layer's per-batch gradients
    ``"<layer>#<i>"`` in batch order."""

    def __init__(self, path, group_gradients: bool = False, float16_as_float32: bool = False):
        self._f = SafetensorsFile(path)
        self._upcast = float16_as_float32
        self.path = self._f.path
        self.metadata = self._f.metadata
        self._groups: dict[str, list[str]] | None = None
        if group_gradients:
            groups: dict[str, list[tuple[int, str]]] = {}
            for k in self._f.keys:
                layer, _, idx = k.rpartition(GRADIENT_SEP)
                groups.setdefault(layer, []).append((int(idx), k))
            self._groups = {layer: [k for _, k in sorted(v)] for layer, v in groups.items()}
            self._keys = list(self._groups)
        else:
            self._keys = list(self._f.keys)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return self._f.shapes

    def __getitem__(self, key: str) -> np.ndarray:
        if self._groups is not None:
            return np.stack([self._get(k) for k in self._groups[key]])
        if key not in self._f.shapes:
            raise KeyError(key)
        return self._get(key)

    def _get(self, key: str) -> np.ndarray:
        """A tensor; with ``float16_as_float32`` (metric inputs: activations stored compactly) a
        float16 one as float32, like bfloat16 (:class:`SafetensorsFile`)."""
        x = self._f.get(key)
        return x.astype(np.float32) if self._upcast and x.dtype == np.float16 else x

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)
