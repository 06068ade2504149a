"""``ckptlens layers PATH``: what a checkpoint (or a folder or glob of them) holds, and the target
patterns that select each part. Names and shapes only: safetensors are read from their header, a
``.pt``/``.bin`` state dict through :func:`ckptlens.sources.readers.open_checkpoint` (``weights_only``).
``ckptlens init`` plans its runs from the same inspection (:func:`inspect_path`)."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import CLIError


@dataclass
class Inspected:
    """One checkpoint's names and shapes (no tensor read), and the series it belongs to."""

    path: Path  # the checkpoint read
    how: str  # how it was read, in words
    keys: list[str]
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    metadata: dict
    series: object | None = None  # ckptlens.sources.local.Discovery of a folder/glob of checkpoints
    notes: list[str] = field(default_factory=list)
    #: (repository, revision) of a checkpoint read on the Hugging Face Hub (``hf:ORG/NAME``);
    #: ``series`` is then its :class:`ckptlens.sources.hub.HubSeries` (all branches) or None
    hub: tuple[str, str] | None = None

    @property
    def n_params(self) -> int:
        # a key without a known shape counts 0 (math.prod(()) would count it 1)
        return sum(math.prod(s) if (s := self.shapes.get(k, ())) else 0 for k in self.keys)


def _how(path: Path) -> str:
    """How a checkpoint is read, in words (from the file names; nothing is opened)."""
    from ..sources.readers import HF_INDEX_FILES, SAFETENSORS_SUFFIXES, hf_weights_file

    if path.is_dir():
        chosen = hf_weights_file(path)  # the file the reader opens
        if chosen is None:
            return "a folder without weights"
        name = chosen.name
        cfg = " + config.json" if (path / "config.json").is_file() else " (no config.json)"
        if name in HF_INDEX_FILES:
            try:
                shards = len(set(json.loads(chosen.read_text()).get("weight_map", {}).values()))
            except (OSError, ValueError, AttributeError):
                shards = "?"
            kind = "safetensors" if name.startswith("model.") else "torch, weights_only"
            return f"Hugging Face folder, {shards} {kind} shards ({name}){cfg}"
        if chosen.suffix in SAFETENSORS_SUFFIXES:
            return f"Hugging Face folder ({name}{cfg}): header only"
        return f"Hugging Face folder ({name}{cfg}): torch.load(weights_only=True)"
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        return "safetensors file: header only"
    return "torch state dict: torch.load(weights_only=True)"


def _open_names(path: Path) -> Inspected:
    from ..sources.readers import open_checkpoint

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with open_checkpoint(path) as ckpt:
            out = Inspected(
                path, _how(path), list(ckpt.keys), dict(ckpt.shapes), dict(ckpt.dtypes), dict(ckpt.metadata)
            )
    out.notes += [str(w.message) for w in caught]
    return out


#: how a checkpoint series on the Hugging Face Hub is named on the command line
HUB_PREFIX = "hf:"


def inspect_hub(raw: str) -> Inspected:
    """``hf:ORG/NAME@REVISION`` (that revision) or ``hf:ORG/NAME`` (its branches as a series, the
    last step of the largest training stage read): names and shapes from the safetensors headers
    (HTTP range requests, or the Hugging Face cache), never the weights."""
    from ..sources.hub import RevisionError, list_series, remote_header

    spec = raw[len(HUB_PREFIX) :]
    model, _, revision = spec.partition("@")
    if model.count("/") != 1 or not all(model.split("/")):
        raise CLIError(f"{raw}: expected hf:ORG/NAME or hf:ORG/NAME@REVISION")
    try:
        series, notes = None, []
        if not revision:
            series = list_series(model)
            stage, steps = series.largest()
            revision = steps[max(steps)]
            others = {k: len(v) for k, v in series.stages.items() if k != stage}
            if others:
                notes.append(
                    f"steps restart in each training stage: the series below is {stage or 'the unstaged branches'} "
                    f"({len(steps)} checkpoints); also "
                    + ", ".join(f"{k or 'unstaged'} ({n})" for k, n in others.items())
                )
        header = remote_header(model, revision)
    except RevisionError as exc:
        raise CLIError(str(exc)) from None
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    path = Path(f"{HUB_PREFIX}{model}@{revision}")
    return Inspected(
        path, header.how, header.keys, header.shapes, header.dtypes, header.metadata, series, notes, (model, revision)
    )


def inspect_path(raw: str) -> Inspected:
    """A checkpoint (file, save_pretrained/Trainer folder, shard index) or a series (a folder or glob
    of checkpoints: its first readable checkpoint is read); ``hf:`` names one on the hub (:func:`inspect_hub`)."""
    if raw.startswith(HUB_PREFIX):
        return inspect_hub(raw)
    from ..sources.local import DiscoveryError, is_glob, is_single_checkpoint_folder, scan
    from ..sources.readers import HF_INDEX_FILES
    from ..store.records import CheckpointError

    path = Path(raw)
    if not is_glob(raw):
        if not path.exists():
            raise CLIError(f"{raw}: no such file or folder")
        if path.is_file() and path.name in HF_INDEX_FILES:
            path = path.parent  # a shard index: its folder
        if path.is_file() or is_single_checkpoint_folder(path):
            try:
                return _open_names(path)
            except CheckpointError as exc:
                raise CLIError(str(exc)) from None
    try:
        series = scan(raw)
    except DiscoveryError as exc:
        raise CLIError(str(exc)) from None
    errors = []
    for ckpt_path in series.found.values():
        try:
            out = _open_names(ckpt_path)
        except CheckpointError as exc:
            errors.append(str(exc))
            continue
        out.series = series
        out.notes = [f"could not read an earlier checkpoint: {e}" for e in errors] + out.notes
        return out
    raise CLIError(f"{raw}: no checkpoint can be read: {'; '.join(errors[:3])}")


def describe(insp: Inspected) -> dict:
    """Everything ``ckptlens layers`` shows, as plain data."""
    from ..adapters import get_adapter
    from ..sources.layer_names import names_from_keys
    from ..sources.local import skipped_notes, skipped_sentence

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        adapter = get_adapter("auto", insp.keys, insp.metadata, shapes=insp.shapes)
        names = names_from_keys(insp.keys, insp.metadata, insp.shapes)
    notes = insp.notes + [str(w.message) for w in caught]
    matrices = []
    for name, src in adapter.plan(insp.keys, insp.shapes):
        if isinstance(src, tuple):  # a head piece: listed per attention module below
            continue
        shape = list(insp.shapes.get(src, ()))
        if adapter.transposed(src):
            shape = shape[::-1]
        matrices.append({"name": name, "key": src, "shape": shape, "dtype": insp.dtypes.get(src, "")})
    attention = []
    for module in adapter.attention_modules(insp.keys) if adapter.heads_available else []:
        n_kv = adapter.n_kv_heads(insp.keys, insp.shapes, module)
        # grouped attention: the shared key/value maps are named once per key/value head
        names_of = (
            f"{module}.head{{h}}.{{q,k,v,o,qk,ov}}"
            if n_kv == adapter.n_heads
            else f"{module}.head{{h}}.{{q,o,qk,ov}} and {module}.kv{{j}}.{{k,v}} (j = 0..{n_kv - 1}: "
            f"query head h reads key/value head h // {adapter.n_heads // n_kv})"
        )
        attention.append(
            {
                "module": module,
                "n_heads": adapter.n_heads,
                "n_kv_heads": n_kv,
                "pieces": {p: list(s) for p, s in adapter.head_shapes(insp.keys, insp.shapes, module).items()},
                "names": names_of,
            }
        )
    groups = [
        {"kind": g.kind, "label": g.label, "patterns": g.patterns, "matches": g.n, "default": g.default}
        for g in type(adapter).target_groups(names)
    ]
    out = {
        "path": str(insp.path),
        "read": insp.how,
        "architecture": adapter.name,
        "n_heads": adapter.n_heads,
        "n_params": insp.n_params,
        "weight_matrices": matrices,
        "attention": attention,
        "activation_modules": names["activations"],
        "gradient_modules": names["gradients"],
        "target_groups": groups,
        "default_targets": type(adapter).default_targets(names),
        "notes": notes,
    }
    if insp.hub is not None and insp.series is not None:
        s = insp.series
        stage, steps = s.largest()
        out["series"] = {
            "where": f"the branches of {s.model} on the Hugging Face Hub" + (f", stage {stage}" if stage else ""),
            "steps": {str(step): {"path": f"{s.model}@{rev}", "read": "hub revision"} for step, rev in steps.items()},
            "skipped": [{"name": n, "why": why} for n, why in s.skipped],
            "skipped_notes": [skipped_sentence(n, why) for n, why in s.skipped],
        }
    elif insp.series is not None:
        s = insp.series
        out["series"] = {
            "where": s.where,
            "steps": {str(step): {"path": str(p), "read": _how(p)} for step, p in s.found.items()},
            "skipped": [{"name": n, "why": why} for n, why in s.skipped],
            "skipped_notes": skipped_notes(s),  # in the words a run's log and notes use
        }
    return out


def _fmt_shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def fmt_params(n: int) -> str:
    """A parameter count in words: ``124.4M``."""
    for unit, f in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= f:
            return f"{n / f:.1f}{unit}"
    return str(n)


def format_layers(d: Mapping) -> str:
    lines = []
    if "series" in d:
        s = d["series"]
        steps = list(s["steps"])
        lines.append(f"series: {len(steps)} checkpoints in {s['where']}")
        reads = sorted({v["read"] for v in s["steps"].values()})
        lines.append(f"  steps: {', '.join(steps)}")
        lines.append(f"  read as: {'; '.join(reads)}")
        lines += [f"  {line}" for line in s["skipped_notes"]]
        lines.append(f"  the names below are those of {d['path']}")
    else:
        lines.append(f"checkpoint: {d['path']}")
        lines.append(f"read: {d['read']}")
    heads = f", {d['n_heads']} heads" if d["n_heads"] else ""
    lines.append(f"architecture: {d['architecture']}{heads}, {fmt_params(d['n_params'])} parameters")
    for note in d["notes"]:
        lines.append(f"note: {note}")
    mats = d["weight_matrices"]
    lines.append("")
    lines.append(f"weight matrices ({len(mats)}), canonical [out, in]:")
    width = max((len(m["name"]) for m in mats), default=0)
    for m in mats:
        extra = f"  (= {m['key']})" if m["name"] == "embed" else ""
        lines.append(f"  {m['name']:<{width}}  {_fmt_shape(m['shape']):<14} {m['dtype']}{extra}")
    lines.append("")
    if d["attention"]:
        lines.append(f"per-head pieces and circuits ({len(d['attention'])} attention modules):")
        for a in d["attention"]:
            pieces = ", ".join(f"{p} {_fmt_shape(s)}" for p, s in a["pieces"].items())
            lines.append(f"  {a['names']}  h = 0..{a['n_heads'] - 1}: {pieces}")
    elif d["architecture"] == "generic":
        lines.append("per-head pieces: none (generic adapter: the architecture is not one ckptlens splits into heads)")
    else:
        lines.append("per-head pieces: none (the number of heads is unknown: no config.json or metadata with it)")
    lines.append("")
    lines.append(f"modules activations can be captured on ({len(d['activation_modules'])}):")
    lines += _wrap(d["activation_modules"])
    lines.append(f"modules gradients can be taken on (their weight; {len(d['gradient_modules'])}):")
    lines += _wrap(d["gradient_modules"])
    lines.append("")
    lines.append("target patterns ('*' within one dotted name component, '**' across; * = default):")
    for g in d["target_groups"]:
        star = "*" if g["default"] else " "
        lines.append(f" {star} {g['kind']:<11} {g['label']} ({g['matches']}): {', '.join(g['patterns'])}")
    lines.append("")
    lines.append("default targets (a run without 'targets:' gets these; `ckptlens init` writes them):")
    for kind, pats in d["default_targets"].items():
        lines.append(f"  {kind}: {json.dumps(pats)}")
    return "\n".join(lines)


def _wrap(names: Sequence[str], width: int = 100) -> list[str]:
    out, line = [], "  "
    for n in names:
        if len(line) + len(n) + 2 > width and line.strip():
            out.append(line.rstrip())
            line = "  "
        line += n + "  "
    if line.strip():
        out.append(line.rstrip())
    return out


def cmd_layers(args) -> int:
    d = describe(inspect_path(args.path))
    print(json.dumps(d, indent=1) if args.json else format_layers(d))
    return 0
