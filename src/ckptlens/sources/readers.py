"""Safe, lazy loading of checkpoint files. Checkpoints are untrusted input.

``open_checkpoint(path)`` returns a :class:`Checkpoint` that unpacks as ``(keys, get, metadata)``:

- ``keys``: the tensor names (state-dict keys);
- ``get(name) -> np.ndarray``: reads one tensor (memory-mapped where the format allows), in its
  stored dtype, except dtypes numpy lacks (bfloat16, float8), which come back as float32;
- ``metadata``: a dict — the safetensors header metadata (str -> str), the non-tensor entries of a
  torch checkpoint, or for a Hugging Face folder its parsed ``config.json``.

Formats:

- ``.safetensors``: ``safetensors.safe_open(framework="numpy")``; a bfloat16/float8 tensor is read
  through a second, lazily opened ``framework="pt"`` handle and converted alone (torch is imported
  only then);
- ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt``: ``torch.load(map_location="cpu", weights_only=True,
  mmap=True)``: a file whose pickle needs anything beyond tensors and plain containers is REFUSED
  (:class:`UnsafeCheckpointError`) and no code in it runs. A training checkpoint holding the state
  dict under ``model``/``state_dict``/``model_state_dict``/``module`` is unwrapped; a ``module.`` or
  ``_orig_mod.`` prefix shared by all keys (DDP, torch.compile) is removed;
- a folder written by ``save_pretrained``: ``config.json`` + ``model.safetensors`` (or sharded
  ``model-0000x-of-0000y.safetensors`` + ``model.safetensors.index.json``), or ``pytorch_model.bin``
  (sharded likewise).

Every failure is a :class:`CheckpointError` (a ValueError) naming the file and the reason. A
failure record written for a bad checkpoint (:mod:`ckptlens.store.records`) is refused the same way.

A *checkpoint reference* (:func:`ckptlens.store.tensors.write_reference`: what the workflow keeps of
a local safetensors checkpoint instead of a copy) is followed: the checkpoint it names is opened,
after its files are checked to be those the reference was written for (same size and modification
time; else a :class:`CheckpointError` says which changed).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..store.records import CheckpointError
from ..store.tensors import ReferenceFileError, SafetensorsFile, followed, short_reason

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
CHECKPOINT_SUFFIXES = SAFETENSORS_SUFFIXES + TORCH_SUFFIXES

# Hugging Face save_pretrained weight files, in order of preference
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
HF_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
#: what a save_pretrained folder is read from: the first of these it holds (safetensors before pickles)
HF_FOLDER_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)

#: the files a tokenizer saved with ``save_pretrained`` may consist of (every kind transformers writes)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)


def tokenizer_files(folder) -> list[Path]:
    """The tokenizer files a folder holds (of :data:`TOKENIZER_FILES`); nothing is opened."""
    folder = Path(folder)
    return [folder / n for n in TOKENIZER_FILES if (folder / n).is_file()]


_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "module", "weights")
_STRIP_PREFIXES = ("module.", "_orig_mod.")

CONVERT_HINT = (
    "convert it to safetensors in a trusted environment, e.g. "
    '`python -c "import torch, safetensors.torch as st; '
    "st.save_file(torch.load('IN', weights_only=False), 'OUT.safetensors')\"`"
)


class UnsafeCheckpointError(CheckpointError):
    """A torch checkpoint needs more than ``weights_only`` loading (it could run code): refused."""


@dataclass
class Checkpoint:
    """An opened checkpoint; unpacks as ``keys, get, metadata = checkpoint``."""

    path: Path
    format: str  # "safetensors" | "torch" | "hf_folder"
    keys: list[str]
    get: Callable[[str], np.ndarray]
    metadata: dict
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)
    config: dict | None = None  # a folder's config.json
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def __iter__(self) -> Iterator:
        return iter((self.keys, self.get, self.metadata))

    def __len__(self) -> int:
        return 3

    def __contains__(self, key) -> bool:  # keys membership, not tuple membership
        return key in self.keys

    def close(self) -> None:
        for c in self._closers:
            c()
        self._closers.clear()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
def open_checkpoint(path) -> Checkpoint:
    """Open a checkpoint file or Hugging Face folder lazily; see the module docstring."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint does not exist")
    if path.is_dir():
        return _open_hf_folder(path)
    _check_file(path)
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return _open_safetensors(path)
    if suffix in TORCH_SUFFIXES:
        return _open_torch(path)
    raise CheckpointError(
        f"{path}: unsupported checkpoint format {path.suffix!r} "
        f"(supported: {', '.join(CHECKPOINT_SUFFIXES)} files and Hugging Face save_pretrained folders)"
    )


def hf_weights_file(folder) -> Path | None:
    """The file a save_pretrained folder's weights are read from (a weight file or a shard index:
    the first of :data:`HF_FOLDER_FILES` it holds); None where it holds none. Nothing is opened."""
    folder = Path(folder)
    return next((folder / n for n in HF_FOLDER_FILES if (folder / n).is_file()), None)


def weight_files(folder) -> list[Path]:
    """The files a save_pretrained folder's weights are read from: its weight file, or its shard
    index and the shards it names (those that are plain names inside the folder); nothing else
    (``optimizer.pt``, ``scheduler.pt``, ``trainer_state.json``). Only an index is opened."""
    folder = Path(folder)
    chosen = hf_weights_file(folder)
    if chosen is None:
        return []
    if chosen.name not in HF_INDEX_FILES:
        return [chosen]
    try:
        names = json.loads(chosen.read_text()).get("weight_map", {}).values()
    except (OSError, ValueError, AttributeError, UnicodeDecodeError):
        return [chosen]
    shards = [
        folder / n for n in dict.fromkeys(names) if isinstance(n, str) and n and "/" not in n and n not in (".", "..")
    ]
    return [chosen, *shards]


def files_bytes(paths) -> int:
    """Bytes of the weights: of files, or of the weight files a folder is read from (a
    save_pretrained folder's weights or shards, :func:`ckptlens.sources.readers.weight_files`),
    never what training saves beside them (``optimizer.pt``, ``scheduler.pt``, ...)."""
    total = 0
    for p in map(Path, paths):
        for f in weight_files(p) if p.is_dir() else [p]:
            if f.is_file():
                total += f.stat().st_size
    return total


def is_checkpoint_dir(path) -> bool:
    """Whether ``path`` is a folder holding Hugging Face save_pretrained weights."""
    path = Path(path)
    return path.is_dir() and hf_weights_file(path) is not None


# ---------------------------------------------------------------------------------------------
def _check_file(path: Path) -> None:
    if not path.is_file():
        raise CheckpointError(f"{path}: not a regular file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc})") from exc
    if size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes) — an interrupted download or save?")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"{path}: not readable (permission denied)")


def _open_safetensors(path: Path, follow: bool = True) -> Checkpoint:
    try:
        f = SafetensorsFile(path)
    except ReferenceFileError as ref:
        if not follow:
            raise CheckpointError(f"{path}: a reference to a reference ({ref.target}); not followed") from None
        return _follow(ref)
    return Checkpoint(path, "safetensors", f.keys, f.get, f.metadata, f.shapes, f.dtypes, _closers=[f.close])


def _follow(ref: ReferenceFileError) -> Checkpoint:
    """The checkpoint a reference names, if its files are still those it was written for."""
    target = followed(ref.path)
    if target.is_dir():
        return open_checkpoint(target)
    _check_file(target)
    if target.suffix.lower() not in SAFETENSORS_SUFFIXES:
        raise CheckpointError(f"{ref.path}: a reference to {target}, which is not a safetensors file")
    return _open_safetensors(target, follow=False)


# ---------------------------------------------------------------------------------------------
def _torch_load(path: Path):
    """torch.load with weights_only=True (mmap when the file is a zip archive); refuses the rest."""
    import pickle

    import torch

    def load(mmap: bool):
        with warnings.catch_warnings():  # the TorchScript case is refused below, no need to warn
            warnings.filterwarnings("ignore", message=".*looks like a TorchScript archive")
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)

    try:
        try:
            return load(True)
        except RuntimeError as exc:
            if "mmap can only be used" not in str(exc):  # legacy (non-zip) format: no mmap
                raise
            return load(False)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        glob = (
            re.search(r"GLOBAL (\S+) was not an allowed global", msg)
            or re.search(r"whose module (\S+) is blocked", msg)
            or re.search(r"(\S+ must be \S+ to load)", msg)
        )
        if glob:
            raise UnsafeCheckpointError(
                f"{path}: refused — unpickling it needs {glob[1]}, more than plain tensors and containers. "
                f"Such a file can run arbitrary code when loaded; if you trust it, {CONVERT_HINT}"
            ) from None
        op = re.search(r"(Unsupported operand \S+|Unsupported class \S+|Unsupported \w+ \S+)", msg)
        detail = op[1] if op else "unknown reason"
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint (the weights-only unpickler rejected it: {detail}) — "
            f"a corrupt file, or a pickle beyond a plain state dict; if it is trusted, {CONVERT_HINT}"
        ) from None
    except RuntimeError as exc:
        msg = str(exc)
        if "TorchScript" in msg:
            raise UnsafeCheckpointError(
                f"{path}: refused — a TorchScript archive is code, not a state dict; {CONVERT_HINT}"
            ) from None
        raise CheckpointError(f"{path}: corrupt or truncated torch checkpoint ({short_reason(exc)})") from None
    except (EOFError, ValueError, OSError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated torch checkpoint ({short_reason(exc)})") from None


def _state_dict(obj, path: Path) -> tuple[dict, dict]:
    """(tensors, metadata) from a weights_only-loaded object."""
    import torch

    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict (a mapping of tensors)")

    def is_tensor_dict(d) -> bool:
        return (
            isinstance(d, Mapping)
            and len(d) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())
        )

    if is_tensor_dict(obj):
        tensors, rest = dict(obj), {}
    else:
        inner = next((k for k in _STATE_DICT_KEYS if is_tensor_dict(obj.get(k))), None)
        if inner is None:
            direct = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if not direct:
                raise CheckpointError(
                    f"{path}: no state dict found (top-level entries: {sorted(map(str, obj))[:10]}; "
                    f"expected tensors, or a mapping of tensors under one of {list(_STATE_DICT_KEYS)})"
                )
            tensors = direct
            rest = {k: v for k, v in obj.items() if not isinstance(v, torch.Tensor)}
        else:
            tensors = dict(obj[inner])
            rest = {k: v for k, v in obj.items() if k != inner}
    for prefix in _STRIP_PREFIXES:
        if tensors and all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
    metadata = {str(k): v for k, v in rest.items() if _json_like(v)}
    return tensors, metadata


def _json_like(v, depth: int = 0) -> bool:
    if depth > 8:
        return False
    if v is None or isinstance(v, (str, int, float, bool)):
        return True
    if isinstance(v, (list, tuple)):
        return len(v) <= 10_000 and all(_json_like(x, depth + 1) for x in v)
    if isinstance(v, Mapping):
        return all(isinstance(k, str) and _json_like(x, depth + 1) for k, x in v.items())
    return False


def _torch_to_numpy(t) -> np.ndarray:
    import torch

    t = t.detach()
    if t.layout != torch.strided:
        t = t.to_dense()
    if t.is_quantized:
        t = t.dequantize()
    try:
        return t.numpy()
    except (TypeError, RuntimeError):  # bfloat16, float8, ...: no numpy dtype
        return t.to(torch.float32).numpy()


class _TorchFile:
    def __init__(self, path: Path):
        self.path = path
        tensors, self.metadata = _state_dict(_torch_load(path), path)
        self._t = tensors
        self.keys = list(tensors)
        self.shapes = {k: tuple(v.shape) for k, v in tensors.items()}
        self.dtypes = {k: str(v.dtype).removeprefix("torch.") for k, v in tensors.items()}

    def get(self, key: str) -> np.ndarray:
        if key not in self._t:
            raise KeyError(f"{key!r} is not a tensor of {self.path}")
        try:
            return _torch_to_numpy(self._t[key])
        except Exception as exc:
            raise CheckpointError(f"{self.path}: cannot read tensor {key!r} ({short_reason(exc)})") from exc

    def close(self) -> None:
        self._t = {}


def _open_torch(path: Path) -> Checkpoint:
    f = _TorchFile(path)
    return Checkpoint(path, "torch", f.keys, f.get, f.metadata, f.shapes, f.dtypes, _closers=[f.close])


# ---------------------------------------------------------------------------------------------
def _inside(folder: Path, name: str, index: Path) -> Path:
    """A shard file named by an (untrusted) index must be a plain file inside the folder."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
        raise CheckpointError(f"{index}: shard name {name!r} is not a plain file name inside {folder}")
    return folder / name


def _open_hf_folder(folder: Path) -> Checkpoint:
    config = None
    cfg_path = folder / "config.json"
    if cfg_path.is_file():
        try:
            config = json.loads(cfg_path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{cfg_path}: not valid JSON ({exc})") from exc
        if not isinstance(config, dict):
            raise CheckpointError(f"{cfg_path}: expected a JSON object, got {type(config).__name__}")

    shard_paths: list[Path] = []
    weight_map: dict[str, str] | None = None
    index = None
    chosen = hf_weights_file(folder)
    if chosen is not None:
        if chosen.name in HF_INDEX_FILES:
            index = chosen
        else:
            shard_paths = [chosen]
    if index is not None:
        _check_file(index)
        try:
            data = json.loads(index.read_text())
            weight_map = data["weight_map"]
            if not isinstance(weight_map, dict):
                raise TypeError("weight_map is not an object")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{index}: not a valid shard index ({short_reason(exc)})") from exc
        shard_paths = [_inside(folder, n, index) for n in dict.fromkeys(weight_map.values())]
        for p in shard_paths:
            if not p.exists():
                raise CheckpointError(f"{p}: shard listed in {index.name} does not exist")
    elif not shard_paths:
        raise CheckpointError(
            f"{folder}: no checkpoint in this folder (expected a Hugging Face save_pretrained folder "
            f"with one of {list(HF_WEIGHT_FILES + HF_INDEX_FILES)})"
        )

    files = []
    for p in shard_paths:
        _check_file(p)
        files.append(SafetensorsFile(p) if p.suffix == ".safetensors" else _TorchFile(p))
    owner: dict[str, object] = {}
    for f in files:
        for k in f.keys:
            if k in owner:
                raise CheckpointError(f"{folder}: tensor {k!r} is in two shards ({owner[k].path.name}, {f.path.name})")
            owner[k] = f
    if weight_map is not None:
        missing = [k for k in weight_map if k not in owner]
        if missing:
            raise CheckpointError(
                f"{index}: {len(missing)} tensors listed in the index are in no shard (e.g. {missing[:3]})"
            )
        for k, shard in weight_map.items():
            if owner[k].path.name != shard:
                raise CheckpointError(f"{index}: {k!r} is listed in {shard} but stored in {owner[k].path.name}")

    keys = list(owner)
    shapes = {k: f.shapes[k] for f in files for k in f.keys}
    dtypes = {k: f.dtypes[k] for f in files for k in f.keys}
    metadata: dict = {}
    for f in files[:1]:
        metadata.update({k: v for k, v in f.metadata.items() if _json_like(v)})
    if config is not None:
        metadata.update(config)

    def get(key: str) -> np.ndarray:
        if key not in owner:
            raise KeyError(f"{key!r} is not a tensor of {folder}")
        return owner[key].get(key)

    return Checkpoint(
        folder, "hf_folder", keys, get, metadata, shapes, dtypes, config, _closers=[f.close for f in files]
    )


class CheckpointTensors(Mapping):
    """A checkpoint (:func:`open_checkpoint`: a file, a folder, a reference) as a read-only Mapping
    of its tensors, one read when asked for; ``metadata`` as safetensors metadata (strings, other
    values JSON-encoded, as a converted checkpoint carries them), so that weights written from it
    load like it. For code that takes a :class:`ckptlens.store.tensors.TensorFile` of a checkpoint."""

    def __init__(self, path):
        self._ckpt = open_checkpoint(path)
        self.path = self._ckpt.path
        self.metadata = {k: v if isinstance(v, str) else json.dumps(v) for k, v in self._ckpt.metadata.items()}
        self.shapes = self._ckpt.shapes

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._ckpt.keys:
            raise KeyError(key)
        return self._ckpt.get(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ckpt.keys)

    def __len__(self) -> int:
        return len(self._ckpt.keys)

    def close(self) -> None:
        self._ckpt.close()
