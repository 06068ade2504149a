"""Checkpoints from a local folder or glob (source ``type: local``): which file holds which step.

``discover(spec) -> {step: Path}``. ``spec`` is a mapping (or just the path):

- ``path``: a folder (its entries are the candidates) or a glob (``runs/a/ckpt_*.pt``,
  ``runs/a/step*``, ``runs/a/checkpoint-*/``; ``**`` recurses);
- ``step_pattern`` (optional): a regular expression with one group capturing the step, searched in
  the candidate's path relative to the folder (or to the glob's fixed leading folders), with ``/``
  separators. Default: the number after ``step`` where the name has one (``epoch=3-step=1200.ckpt``
  and ``epoch=3-step=1200-v1.ckpt`` from Lightning, ``global_step1200``), else the last integer in
  the file or folder name without its suffix (``ckpt_1200.pt``, ``step1200/``, ``checkpoint-1200/``
  from the Hugging Face Trainer, ``ckpt_1200.safetensors``); a name without an integer
  (``model.safetensors`` in ``step1200/``) takes the step of the nearest enclosing folder below the
  base.

Candidates are ``.safetensors``/``.pt``/``.pth``/``.bin``/``.ckpt`` files and Hugging Face
``save_pretrained`` folders (one file, or shards with their index). What training saves beside the
weights (``optimizer.pt``, ``scheduler.pt``, ``rng_state*.pth``, ``training_args.bin``) is never a
candidate, so it is never opened. Entries with no step are skipped with a warning, not guessed;
:func:`scan` lists every entry left out and why (``ckptlens layers`` and ``ckptlens init`` print
them). Two candidates with the same step, or none at all, are errors naming the paths.
"""

from __future__ import annotations

import functools
import glob as _glob
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import Source, SourceError, register
from .readers import CHECKPOINT_SUFFIXES, is_checkpoint_dir


class DiscoveryError(ValueError):
    """No checkpoints, or ambiguous ones, at a configured path; the message names them."""


_LAST_INT = re.compile(r"(\d+)(?!.*\d)")
#: an explicit step marker wins over the last integer: ``epoch=3-step=1200-v1.ckpt`` (Lightning's
#: versioned names), ``ckpt_step1200_seed3``, ``global_step1200``
_STEP_MARK = re.compile(r"(?:^|[^A-Za-z])(?:global_?)?step[=_-]?(\d+)", re.IGNORECASE)
_GLOB_CHARS = re.compile(r"[*?\[]")
_HF_WEIGHT_NAME = re.compile(r"^(model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)$")
#: what training frameworks save beside the weights: optimizer/scheduler/scaler states, RNG states,
#: the training arguments (Hugging Face Trainer). Pickles that are not weights: never candidates,
#: never opened.
_TRAINING_STATE = re.compile(
    r"^(optimizer|scheduler|scaler|lr_scheduler|rng_state|training_args|trainer_state)([_-]\d+)?\.(pt|pth|bin|ckpt)$"
)


@dataclass
class Discovery:
    """What :func:`scan` found at a path: ``found`` {step: path}, sorted; ``skipped`` the entries left
    out, as (name, why), of which ``no_step`` are the checkpoints without a step; ``where`` the
    folder or glob, in words; ``base`` the folder step patterns are matched below."""

    found: dict[int, Path]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    no_step: list[str] = field(default_factory=list)
    where: str = ""
    base: Path = Path(".")


def _is_candidate(p: Path) -> bool:
    if p.is_dir():
        return is_checkpoint_dir(p)
    return (
        p.is_file()
        and p.suffix.lower() in CHECKPOINT_SUFFIXES
        and not p.name.startswith(".")
        and not _TRAINING_STATE.match(p.name)
    )


def _not_a_candidate(p: Path) -> str | None:
    """Why an entry of a folder of checkpoints is not one, where a reader would expect it to be
    (None for ordinary other files: logs, JSON, text)."""
    if p.name.startswith("."):
        return None
    if p.is_dir():
        return "a folder without model weights (no model.safetensors, pytorch_model.bin or shard index)"
    if _TRAINING_STATE.match(p.name):
        return "training state (optimizer, scheduler, RNG or arguments), not weights: never opened"
    return None


def _stem(p: Path) -> str:
    return p.name if p.is_dir() else p.name[: -len(p.suffix)] if p.suffix else p.name


def is_glob(raw: str) -> bool:
    """Whether a configured path is a glob (has ``*``, ``?`` or ``[``) rather than a folder."""
    return bool(_GLOB_CHARS.search(raw))


def _base_of_glob(pattern: str) -> Path:
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if is_glob(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _step_in(name: str) -> int | None:
    marks = _STEP_MARK.findall(name)
    if marks:
        return int(marks[-1])
    m = _LAST_INT.search(name)
    return int(m[1]) if m else None


def _default_step(p: Path, base: Path) -> int | None:
    step = _step_in(_stem(p))
    if step is not None:
        return step
    try:
        parents = p.relative_to(base).parts[:-1]
    except ValueError:
        parents = ()
    for part in reversed(parents):
        step = _step_in(part)
        if step is not None:
            return step
    return None


def _compile_step_pattern(pattern: str) -> re.Pattern:
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise DiscoveryError(f"step_pattern {pattern!r} is not a valid regular expression ({exc})") from exc
    if rx.groups != 1:
        raise DiscoveryError(f"step_pattern {pattern!r} must have exactly one group (the step), it has {rx.groups}")
    return rx


def is_single_checkpoint_folder(path) -> bool:
    """A folder that is one checkpoint (``save_pretrained``, a Trainer ``checkpoint-N`` folder with
    its optimizer state beside the weights, a sharded folder), not a folder of checkpoints."""
    path = Path(path)
    if not is_checkpoint_dir(path):
        return False
    return all(_HF_WEIGHT_NAME.match(p.name) for p in path.iterdir() if _is_candidate(p))


def scan(spec: Mapping | str | Path) -> Discovery:
    """The checkpoints at ``spec`` and the entries left out, with why (see the module docstring)."""
    if isinstance(spec, (str, Path)):
        spec = {"path": str(spec)}
    if "path" not in spec or not spec["path"]:
        raise DiscoveryError(f"checkpoint source {dict(spec)!r} has no 'path'")
    raw = str(spec["path"])
    step_rx = _compile_step_pattern(spec["step_pattern"]) if spec.get("step_pattern") else None
    skipped: list[tuple[str, str]] = []

    if is_glob(raw):
        base = _base_of_glob(raw)
        candidates = [Path(p) for p in sorted(_glob.glob(raw, recursive=True))]
        for p in candidates:
            why = None if _is_candidate(p) else _not_a_candidate(p)
            if why:
                skipped.append((p.name, why))
        candidates = [p for p in candidates if _is_candidate(p)]
        where = f"glob {raw!r}"
    else:
        base = Path(raw)
        if not base.exists():
            raise DiscoveryError(f"checkpoint path {raw} does not exist")
        if base.is_file():
            raise DiscoveryError(
                f"checkpoint path {raw} is a single file; give its folder or a glob (e.g. {base.parent}/*{base.suffix})"
            )
        if is_single_checkpoint_folder(base):
            raise DiscoveryError(
                f"checkpoint path {raw} is one Hugging Face checkpoint folder, not a folder of checkpoints; "
                f"give its parent or a glob (e.g. {base.parent}/step*)"
            )
        entries = sorted(base.iterdir())
        candidates = [p for p in entries if _is_candidate(p)]
        skipped += [(p.name, why) for p in entries if not _is_candidate(p) and (why := _not_a_candidate(p))]
        where = f"folder {raw}"

    if not candidates:
        raise DiscoveryError(
            f"no checkpoints found at {where} (looked for {', '.join(CHECKPOINT_SUFFIXES)} files and "
            "Hugging Face save_pretrained folders)"
        )

    found: dict[int, Path] = {}
    no_step: list[str] = []
    for p in candidates:
        if step_rx is not None:
            try:
                rel = p.relative_to(base).as_posix()
            except ValueError:
                rel = p.as_posix()
            m = step_rx.search(rel)
            step = int(m[1]) if m and m[1] is not None and m[1].isdigit() else None
        else:
            step = _default_step(p, base)
        if step is None:
            no_step.append(p.name)
            why = f"step_pattern {step_rx.pattern!r} does not match" if step_rx else "no step number in the name"
            skipped.append((p.name, why + " (rename it, or set step_pattern)"))
            continue
        if step in found:
            raise DiscoveryError(
                f"two checkpoints at {where} map to step {step}: {found[step]} and {p}"
                + ("" if step_rx else " (set step_pattern to tell them apart, or move one away)")
            )
        found[step] = p
    if not found:
        how = f"step_pattern {step_rx.pattern!r}" if step_rx else "an integer in the name"
        raise DiscoveryError(f"no step number ({how}) in any checkpoint name at {where}: {no_step[:10]}")
    return Discovery(dict(sorted(found.items())), skipped, no_step, where, base)


def skipped_sentence(name: str, why: str) -> str:
    """How an entry left out of a run is said, by ``ckptlens layers``/``init`` and by the run (its
    import log, ``notes.txt``, the report): one wording for all of them."""
    return f"skipped: {name}: {why}"


def skipped_notes(d: Discovery) -> list[str]:
    """Every entry :func:`scan` left out, in :func:`skipped_sentence`'s words, and, where some
    checkpoints have no step (``final.pt``, ``best.safetensors``), which step is the run's final."""
    notes = [skipped_sentence(name, why) for name, why in d.skipped]
    if d.no_step:
        notes.append(
            f"the final checkpoint (the reference of *_to_final metrics) is step {max(d.found)}, the last "
            f"numbered one, not {', '.join(d.no_step[:10])}{' ...' if len(d.no_step) > 10 else ''}"
        )
    return notes


def discover(spec: Mapping | str | Path) -> dict[int, Path]:
    """``{step: checkpoint path}``, sorted by step; see the module docstring. Checkpoints without a
    step are skipped with a warning (:func:`scan` says which, and why)."""
    d = scan(spec)
    if d.no_step:
        warnings.warn(
            f"{d.where}: skipped {len(d.no_step)} entries without a step number: {d.no_step[:10]}", stacklevel=2
        )
    return d.found


# --------------------------------------------------------------------------------------------- source
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["path"],
    "properties": {
        "type": {"const": "local"},
        "path": {"type": "string", "minLength": 1, "description": "a folder or a glob of checkpoint files"},
        "step_pattern": {
            "type": "string",
            "description": "regex with one group capturing the step, searched in the path relative to the folder "
            "(default: the last integer in the name)",
        },
    },
}


def _scanned(spec: Mapping) -> Discovery:
    """:func:`scan`, once per folder state: the workflow asks for every step of every chunk
    while it is parsed (a folder's mtime changes when an entry is added or removed)."""
    raw = str(spec["path"])
    folder = _base_of_glob(raw) if is_glob(raw) else Path(raw)
    try:
        stamp = folder.stat().st_mtime_ns
    except OSError:
        stamp = None
    return _scanned_cached(raw, spec.get("step_pattern"), stamp)


@functools.lru_cache(maxsize=64)
def _scanned_cached(path: str, step_pattern: str | None, _stamp) -> Discovery:
    spec = {"path": path, **({"step_pattern": step_pattern} if step_pattern else {})}
    try:
        return scan(spec)  # what it skips, the run says (_notes), not a warning at every parse
    except DiscoveryError as exc:
        raise SourceError(str(exc), "path") from None


def _found(spec: Mapping) -> dict[int, Path]:
    return _scanned(spec).found


def _notes(spec: Mapping) -> list[str]:
    return skipped_notes(_scanned(spec))


def _training_log(spec: Mapping) -> str | None:
    """A run's history: a Trainer's ``trainer_state.json`` in its last checkpoint folder (highest
    step), else a Lightning ``CSVLogger``'s ``metrics.csv`` beside the checkpoints or beside their
    folder (``version_N/metrics.csv`` for ``version_N/checkpoints/*.ckpt``)."""
    last = list(_found(spec).values())[-1]
    state = last / "trainer_state.json"
    if last.is_dir() and state.is_file():
        return str(state)
    if last.suffix == ".ckpt":
        for folder in (last.parent, last.parent.parent):
            if (folder / "metrics.csv").is_file():
                return str(folder / "metrics.csv")
    return None


def _steps(spec: Mapping) -> list[int]:
    return list(_found(spec))


def _header_only(path: Path) -> bool:
    """A safetensors file or save_pretrained folder: keys readable without torch."""
    return path.suffix == ".safetensors" or any(
        (path / n).is_file() for n in ("model.safetensors", "model.safetensors.index.json")
    )


def _layer_names(spec: Mapping) -> dict | None:
    """From the header of the first readable checkpoint; None for pickles (reading their keys needs
    torch: the extraction job checks the patterns instead). A bad file is its own job's failure (or
    gap): it must not stop the workflow while it is parsed."""
    from ..store.records import CheckpointError
    from .layer_names import names_from_keys
    from .readers import open_checkpoint

    files = list(_found(spec).values())
    if not _header_only(files[0]):
        return None
    errors = []
    for f in (f for f in files if _header_only(f)):
        try:
            with open_checkpoint(f) as ckpt:
                return names_from_keys(ckpt.keys, ckpt.metadata, ckpt.shapes)
        except CheckpointError as exc:
            errors.append(str(exc))
    raise SourceError(f"no checkpoint can be read: {'; '.join(errors[:3])}", "path")


def _materialise(spec: Mapping, step: int, out) -> dict | None:
    """A reference to a safetensors checkpoint (read where it is, never copied), a conversion of a
    pickled one (:func:`ckptlens.sources.importer.import_or_reference`)."""
    from .importer import import_or_record

    return import_or_record(_found(spec)[step], out, step=step, in_place=True)


def _inputs(spec: Mapping, step: int) -> list[str]:
    """What a checkpoint is read from: a file, or a folder's weight files and config.json — each
    file an input, so that a weight file replaced inside a folder (whose own time does not change)
    imports the checkpoint again, while files saved beside the weights (optimizer state) do not.
    A folder without weight files stays an input itself (its failure record is renewed when a
    file is added)."""
    from .readers import weight_files

    path = _found(spec)[step]
    if not path.is_dir():
        return [str(path)]
    files = weight_files(path)
    if not files:
        return [str(path)]
    config_json = path / "config.json"
    return [str(f) for f in files] + ([str(config_json)] if config_json.is_file() else [])


def _checkpoint_bytes(spec: Mapping) -> int:
    from .readers import files_bytes

    return files_bytes([next(iter(_found(spec).values()))])


register(
    Source(
        type="local",
        kind="fetch",
        description="checkpoint files or save_pretrained folders in a local folder (or a glob)",
        schema=SCHEMA,
        steps=_steps,
        layer_names=_layer_names,
        materialise=_materialise,
        inputs=_inputs,
        checkpoint_bytes=_checkpoint_bytes,
        notes=_notes,
        training_log=_training_log,
    )
)
