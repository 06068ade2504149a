"""The ``ckptlens`` command: one's own checkpoints in two commands, from any folder.

::

    ckptlens layers PATH                 what a checkpoint (or a folder of them) holds, and the target
                                         patterns that select each part
    ckptlens init PATH... [-o FILE]      a commented, valid config for those checkpoints (one run per PATH)
    ckptlens run CONFIG [snakemake ...]  the packaged workflow in the current folder, then report.html
    ckptlens report CONFIG [-o FILE]     the HTML report alone

``layers`` and ``init`` read safetensors headers only (no tensor, no torch); a ``.pt``/``.bin`` state
dict is read through :func:`ckptlens.sources.readers.open_checkpoint` (``weights_only``: a pickle that
needs more is refused and no code in it runs). What training saves beside the weights
(``optimizer.pt``, ``scheduler.pt``, ``rng_state.pth``, ``training_args.bin``) is never opened.

``run`` and ``report`` hand over to Snakemake (``python -m snakemake``) with the packaged Snakefile,
``--configfile=CONFIG``, ``--directory`` the current folder (results/, logs and .snakemake/ go there,
never into the installed package) and the packaged workflow profile (``--profile slurm`` is the
packaged SLURM profile). Every other option after CONFIG is Snakemake's.

Errors are one line, ``ckptlens: error: ...`` naming the file or config key, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

EXIT_USAGE = 2


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


# ============================================================================ reading checkpoints
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

    @property
    def n_params(self) -> int:
        return sum(_numel(self.shapes.get(k, ())) for k in self.keys)


def _how(path: Path) -> str:
    """How a checkpoint is read, in words (from the file names; nothing is opened)."""
    if path.is_dir():  # in the order the reader prefers (readers._open_hf_folder)
        for name in (
            "model.safetensors",
            "model.safetensors.index.json",
            "pytorch_model.bin",
            "pytorch_model.bin.index.json",
        ):
            if (path / name).is_file():
                break
        else:
            return "a folder without weights"
        cfg = " + config.json" if (path / "config.json").is_file() else " (no config.json)"
        if name.endswith(".index.json"):
            try:
                shards = len(set(json.loads((path / name).read_text()).get("weight_map", {}).values()))
            except (OSError, ValueError, AttributeError):
                shards = "?"
            kind = "safetensors" if name.startswith("model.") else "torch, weights_only"
            return f"Hugging Face folder, {shards} {kind} shards ({name}){cfg}"
        if name.endswith(".safetensors"):
            return f"Hugging Face folder ({name}{cfg}): header only"
        return f"Hugging Face folder ({name}{cfg}): torch.load(weights_only=True)"
    if path.suffix.lower() == ".safetensors":
        return "safetensors file: header only"
    return "torch state dict: torch.load(weights_only=True)"


def _open_names(path: Path) -> Inspected:
    from .sources.readers import open_checkpoint

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with open_checkpoint(path) as ckpt:
            out = Inspected(
                path, _how(path), list(ckpt.keys), dict(ckpt.shapes), dict(ckpt.dtypes), dict(ckpt.metadata)
            )
    out.notes += [str(w.message) for w in caught]
    return out


def inspect_path(raw: str) -> Inspected:
    """A checkpoint (file, save_pretrained/Trainer folder, shard index) or a series (a folder or glob
    of checkpoints: its first readable checkpoint is read)."""
    from .sources.local import _GLOB_CHARS, DiscoveryError, is_single_checkpoint_folder, scan
    from .sources.readers import HF_INDEX_FILES
    from .store.records import CheckpointError

    path = Path(raw)
    if not _GLOB_CHARS.search(raw):
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
    from .adapters import get_adapter
    from .sources import names_from_keys

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        adapter = get_adapter("auto", insp.keys, insp.metadata, shapes=insp.shapes)
        names = names_from_keys(insp.keys, insp.metadata, insp.shapes)
    notes = insp.notes + [str(w.message) for w in caught]
    plan = adapter._plan(insp.keys, insp.shapes)
    matrices = []
    for name, src in plan:
        if isinstance(src, tuple):
            continue
        shape = list(insp.shapes.get(src, ()))
        if adapter._transposed(src):
            shape = shape[::-1]
        matrices.append({"name": name, "key": src, "shape": shape, "dtype": insp.dtypes.get(src, "")})
    attention = []
    for module in adapter.attention_modules(insp.keys) if adapter.heads_available else []:
        attention.append(
            {
                "module": module,
                "n_heads": adapter.n_heads,
                "pieces": {p: list(s) for p, s in adapter.head_shapes(insp.keys, insp.shapes, module).items()},
                "names": f"{module}.head{{h}}.{{q,k,v,o,qk,ov}}",
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
    if insp.series is not None:
        s = insp.series
        out["series"] = {
            "where": s.where,
            "steps": {str(step): {"path": str(p), "read": _how(p)} for step, p in s.found.items()},
            "skipped": [{"name": n, "why": why} for n, why in s.skipped],
        }
    return out


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n if shape else 0


def _fmt_shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _fmt_params(n: int) -> str:
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
        for item in s["skipped"]:
            lines.append(f"  skipped: {item['name']}: {item['why']}")
        lines.append(f"  the names below are those of {d['path']}")
    else:
        lines.append(f"checkpoint: {d['path']}")
        lines.append(f"read: {d['read']}")
    heads = f", {d['n_heads']} heads" if d["n_heads"] else ""
    lines.append(f"architecture: {d['architecture']}{heads}, {_fmt_params(d['n_params'])} parameters")
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


# ============================================================================ init
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model")

#: the built-in probe text: plain, varied English sentences (one sample per line)
PROBE_TEXT = """\
The committee met on Tuesday to discuss the budget for the coming year.
She opened the window and let the cold morning air into the room.
A small boat drifted slowly across the lake as the sun went down.
The recipe calls for two cups of flour, one egg and a pinch of salt.
He forgot his umbrella at the station and walked home in the rain.
Scientists measured the temperature of the water at several depths.
The children built a tall tower of wooden blocks on the kitchen floor.
After the concert, the musicians packed their instruments into the van.
The library stays open late on weekdays during the exam period.
A sudden storm closed the mountain road for most of the afternoon.
The new bridge will connect the two halves of the old town.
They planted tomatoes, beans and a row of sunflowers behind the house.
The train was delayed because of a signal failure near the city.
Her grandmother taught her how to knit when she was seven years old.
The museum displays paintings from the early nineteenth century.
Prices of fresh vegetables rose sharply after the long dry summer.
The software update fixed several bugs and made the program faster.
A flock of geese flew south in a wide, uneven formation.
The teacher asked the students to write a short story about the sea.
Two cats slept in a patch of sunlight on the wooden floor.
The hikers reached the summit just before the clouds rolled in.
He repaired the old bicycle with parts from a second-hand shop.
The city council voted to extend the bus service to the suburbs.
A thin layer of frost covered the fields early in the morning.
The novel follows a family of farmers over three generations.
She measured the length of the table twice before cutting the cloth.
The market square fills with stalls selling bread, cheese and fruit.
Engineers tested the engine for several hours under heavy load.
The dog waited patiently by the door for its owner to return.
A quiet path runs along the river from the mill to the village.
The orchestra rehearsed the symphony every evening for two weeks.
He wrote down the phone number on the back of an envelope.
The garden was full of bees moving between the lavender bushes.
The airport added three new routes to cities in the north.
She finished the marathon in just under four hours.
The old clock in the hall struck midnight as the guests left.
Farmers brought their cattle down from the hills before winter.
The report describes how the river changed its course over a century.
A child laughed as the kite climbed higher into the windy sky.
The bakery on the corner sells fresh rolls from six in the morning.
Heavy snow fell overnight and the schools stayed closed.
The chess players sat in silence, each waiting for the other to move.
The ship carried grain, timber and wool across the northern sea.
He learned to play the guitar by listening to old records.
The students planted trees along the edge of the school playground.
Light from the lighthouse swept across the dark water every few seconds.
The meeting ended with an agreement to meet again next month.
A narrow staircase led up to a small room under the roof.
"""

#: parameters from which the default metric set is cut down so that a laptop still runs it in minutes
LARGE_MODEL = 300e6
VERY_LARGE_MODEL = 1.5e9


@dataclass
class RunPlan:
    name: str
    source_path: str
    steps: list[int]
    skipped: list[tuple[str, str]]
    architecture: str
    n_params: int
    read: str
    targets: dict[str, list[str]]
    #: "text" (a tokenizer was found: the built-in probe text), "task" (the demo model: its own task),
    #: None (weights only, ``why_no_probe`` says why)
    probe: str | None
    tokenizer: str | None = None
    why_no_probe: str = ""


def _rel(path: Path, cwd: Path) -> str:
    """A path as the config says it: relative to the folder `ckptlens run` runs in, where it is inside."""
    path = path.resolve()
    try:
        return path.relative_to(cwd).as_posix() or "."
    except ValueError:
        return str(path)


def _find_tokenizer(insp: Inspected, root: Path) -> Path | None:
    """A tokenizer saved beside the checkpoints: in the checkpoint folder, the series folder, or
    the folder above it."""
    candidates = []
    if insp.path.is_dir():
        candidates.append(insp.path)
    candidates += [insp.path.parent, root, root.parent]
    for d in dict.fromkeys(c.resolve() for c in candidates if c.is_dir()):
        if any((d / f).is_file() for f in TOKENIZER_FILES):
            return d
    return None


def run_names(folders: Sequence[Path]) -> list[str]:
    """A run name per folder: its name, or as many of its last path components as it takes to tell
    the folders apart (``seed0/out``, ``seed1/out`` -> ``seed0_out``, ``seed1_out``)."""

    def name(path: Path, k: int) -> str:
        parts = path.resolve().parts[1:] or ("run",)
        n = re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(parts[-k:])).strip("_.-") or "run"
        return n if re.match(r"^[A-Za-z0-9]", n) else "run_" + n

    depth = max((len(Path(f).resolve().parts) for f in folders), default=1)
    for k in range(1, depth + 1):
        names = [name(f, k) for f in folders]
        if len(set(names)) == len(names):
            return names
    return [f"{name(f, 1)}_{i + 1}" for i, f in enumerate(folders)]  # the same folder twice


def plan_run(raw: str, cwd: Path) -> RunPlan:
    from .adapters import get_adapter
    from .sources import names_from_keys

    insp = inspect_path(raw)
    if insp.series is None:
        raise CLIError(
            f"{raw}: is one checkpoint; `ckptlens init` needs a series of them: give the folder that holds "
            f"them (e.g. {Path(raw).resolve().parent}) or a glob"
        )
    root = Path(raw) if not any(c in raw for c in "*?[") else insp.series.base
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adapter = get_adapter("auto", insp.keys, insp.metadata, shapes=insp.shapes)
        names = names_from_keys(insp.keys, insp.metadata, insp.shapes)
    n_params = insp.n_params
    targets = type(adapter).default_targets(names)
    if n_params > LARGE_MODEL:  # per-head circuits are d_model² each, n_heads of them per layer
        targets["weights"] = [p for p in targets["weights"] if ".head*." not in p] or ["**"]
    has_config = insp.path.is_dir() and (insp.path / "config.json").is_file()
    tok = _find_tokenizer(insp, root) if has_config else None
    probe, why = None, ""
    if adapter.name == "toy" and "ckptlens_model" in insp.metadata:
        probe = "task"
    elif not has_config:
        why = "activations need the model rebuilt from its config.json, and these checkpoints have none"
    elif tok is None:
        why = "no tokenizer found beside the checkpoints"
    else:
        probe = "text"
    return RunPlan(
        name=str(root.resolve()),  # the run's name is given once every folder is known (run_names)
        source_path=raw if any(c in raw for c in "*?[") else _rel(Path(raw), cwd),
        steps=list(insp.series.found),
        skipped=list(insp.series.skipped),
        architecture=adapter.name + (f", {adapter.n_heads} heads" if adapter.n_heads else ""),
        n_params=n_params,
        read=insp.how,
        targets=targets,
        probe=probe,
        tokenizer=None if tok is None else _rel(tok, cwd),
        why_no_probe=why,
    )


def default_metrics(n_params: int, probe: bool) -> dict[str, dict]:
    """The metric set ``init`` enables: weight norms, ranks and updates (one SVD per matrix and
    checkpoint), plus CKA and activation norms on the probe; bigger models drop the SVD metrics."""
    out: dict[str, dict] = {"frobenius_norm": {}}
    if n_params <= VERY_LARGE_MODEL:
        out |= {"spectral_norm": {}, "stable_rank": {}, "effective_rank": {}}
    out |= {"relative_update_norm_previous": {}}
    if probe:
        out |= {"cka_to_final": {}, "cka_to_previous": {}, "activation_norm": {}}
    return out


WEIGHT_METRIC_NOTE = {
    "frobenius_norm": "‖W‖_F",
    "spectral_norm": "largest singular value",
    "stable_rank": "‖W‖²_F / ‖W‖²₂",
    "effective_rank": "exp(entropy of the normalised singular values)",
    "relative_update_norm_previous": "‖W_t − W_prev‖ / ‖W_t‖",
    "cka_to_final": "linear CKA of each block's output with the final checkpoint's, on the probe",
    "cka_to_previous": "… with the previous checkpoint's",
    "activation_norm": "mean norm of each block's output on the probe",
}


def _yaml(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)  # JSON is YAML: lists and strings in flow style


def _block(key: str, items: Sequence[str], indent: int, comment: bool = False) -> list[str]:
    """``key:`` and a block list, one item a line (commented out with ``comment``)."""
    pad, c = " " * indent, "# " if comment else ""
    return [f"{pad}{c}{key}:"] + [f"{pad}{c}  - {_yaml(i)}" for i in items]


def correlation_pairs(metrics: Mapping) -> list[list[str]]:
    """The metric pairs ``init`` correlates: a weight pair, and CKA with the weights where there is a probe."""
    pairs = [["frobenius_norm", "effective_rank"]] if "effective_rank" in metrics else []
    if "cka_to_final" in metrics:
        pairs.append(["cka_to_final", "frobenius_norm"])
    return pairs


def render_config(plans: Sequence[RunPlan], probe_file: str | None, command: str) -> str:
    probe_runs = [p for p in plans if p.probe]
    n_params = max(p.n_params for p in plans)
    metrics = default_metrics(n_params, bool(probe_runs))
    weight_only = [m for m in metrics if m not in ("cka_to_final", "cka_to_previous", "activation_norm")]
    out = [
        f"# ckptlens config written by `{command}`.",
        "# Run it from this folder:  ckptlens run <this file> --cores 4    (results go to results/runs/<run>/,",
        "# the report to report.html). Paths are relative to the folder you run it in.",
        "# Every key is described in config/README.md of the ckptlens repository and in the schema:",
        "#   python -c 'import ckptlens.config as c; print(c.SCHEMA_PATH)'",
        "",
        "study: my checkpoints          # the report groups its figures by study, then run",
        "",
        "runs:",
    ]
    for p in plans:
        out.append(f"  {p.name}:")
        out.append(f"    # {p.architecture}, {_fmt_params(p.n_params)} parameters; each checkpoint read as: {p.read}")
        out.append(f"    # {len(p.steps)} steps found: {', '.join(map(str, p.steps))}")
        for name, why in p.skipped:
            out.append(f"    # skipped {name}: {why}")
        out.append(f"    source: {{type: local, path: {_yaml(p.source_path)}}}")
        out.append("    # what is measured (`ckptlens layers PATH` lists every name and pattern); the defaults of")
        out.append("    # this architecture: per block the attention output projection, its per-head OV and QK")
        out.append("    # circuits, the MLP output (weights), the block output = the residual stream (activations)")
        if p.n_params > LARGE_MODEL:
            out.append(
                "    # (per-head circuits left out: this model is large; add '<attention>.head*.ov' to get them)"
            )
        out.append("    targets:")
        out += _block("weights", p.targets["weights"], 6)
        if p in probe_runs:
            out += _block("activations", p.targets["activations"], 6)
            out.append("      # weight gradients, for gradient_norm/gradient_cosine (a classifier's probe then needs")
            out.append("      # labels: label<TAB>text lines):")
            out += _block("gradients", p.targets["gradients"], 6, comment=True)
            if p.probe == "text":
                out.append(f"    # the probe: the sentences of {probe_file}, tokenized with the tokenizer found beside")
                out.append("    # the checkpoints; activations are taken on batch 0 (16 sentences, 32 tokens each)")
                out.append(
                    f"    probe: {{text: {_yaml(probe_file)}, tokenizer: {_yaml(p.tokenizer)}, seq_len: 32, "
                    "text_format: plain, batch_size: 16, n_batches: 1, seed: 12345}"
                )
            else:
                out.append("    # the probe: batches of the demo model's own task")
                out.append("    probe: {batch_size: 16, n_batches: 1, seed: 12345}")
        else:
            out += _block("activations", p.targets["activations"], 6, comment=True)
            out.append(f"    # no probe ({p.why_no_probe}): weight metrics only. For activation metrics, uncomment")
            out.append("    # 'activations' above and say what to feed the model, e.g.")
            out.append("    #   probe: {text: probe.txt, tokenizer: path/to/tokenizer_folder, seq_len: 32}")
            out.append("    #   probe: {tokens: ids.npy}        # an int array [n, T] of token ids")
            if not p.why_no_probe.startswith("no tokenizer"):
                out.append("    # (and a config.json beside the weights: the model is rebuilt from it)")
            if probe_runs:
                out.append(f"    metrics: {_yaml(weight_only)}")
        out.append("")
    out.append("# Enabled metrics (chosen to run in minutes on a laptop for a model this size; the README lists")
    out.append("# every metric and its parameters).")
    out.append("metrics:")
    width = max(len(m) for m in metrics) + 5
    for m, params in metrics.items():
        note = WEIGHT_METRIC_NOTE.get(m, "")
        out.append(f"  {m + ': ' + _yaml(params):<{width}}" + (f"  # {note}" if note else ""))
    pairs = correlation_pairs(metrics)
    if pairs:
        out.append("")
        out.append("# Metric pairs whose trajectories are correlated over training, per layer (report: correlation).")
        out.append("analysis:")
        out.append("  correlation_pairs:")
        out += [f"    - {_yaml(pair)}" for pair in pairs]
    out.append("")
    out.append("# Also: dynamics (convergence thresholds), figures across runs, on_bad_checkpoint: skip (analyse")
    out.append("# the readable checkpoints, list the others): see config/README.md.")
    return "\n".join(out) + "\n"


def cmd_init(args) -> int:
    import yaml

    from . import config as ckcfg

    cwd = Path.cwd().resolve()
    out_path = Path(args.output)
    if out_path.exists() and not args.force:
        raise CLIError(f"{out_path}: exists already (use --force to overwrite it)")
    plans = [plan_run(raw, cwd) for raw in args.paths]
    for plan, name in zip(plans, run_names([Path(p.name) for p in plans])):
        plan.name = name
    probe_path = out_path.resolve().parent / "probe.txt"
    needs_probe = any(p.probe == "text" for p in plans)
    probe_file = _rel(probe_path, cwd) if needs_probe else None
    command = "ckptlens init " + " ".join(args.paths) + ("" if args.output == "config.yaml" else f" -o {args.output}")
    text = render_config(plans, probe_file, command)
    cfg = yaml.safe_load(text)
    wrote_probe = False
    if needs_probe and not probe_path.exists():
        probe_path.parent.mkdir(parents=True, exist_ok=True)
        probe_path.write_text(PROBE_TEXT)
        wrote_probe = True
    try:
        ckcfg.validate(cfg)
    except ckcfg.ConfigError as exc:  # a bug of init, or a checkpoint the workflow cannot use
        raise CLIError(f"the config init wrote does not validate ({exc}); please report this") from None
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text)
    print(f"wrote {out_path}: {len(plans)} run(s)")
    for p in plans:
        probe = {
            "text": f"probe: {probe_file} tokenized with {p.tokenizer}",
            "task": "probe: the model's own task",
            None: f"weights only ({p.why_no_probe})",
        }[p.probe]
        print(f"  {p.name}: {len(p.steps)} steps of {p.architecture} ({_fmt_params(p.n_params)}), {probe}")
        for name, why in p.skipped:
            print(f"    skipped {name}: {why}")
    if wrote_probe:
        print(f"wrote {_rel(probe_path, cwd)}: the built-in probe text ({len(PROBE_TEXT.splitlines())} sentences)")
    elif needs_probe:
        print(f"kept {_rel(probe_path, cwd)} (exists already) as the probe text")
    print(f"next: ckptlens run {args.output} --cores 4")
    return 0


# ============================================================================ layers
def cmd_layers(args) -> int:
    d = describe(inspect_path(args.path))
    print(json.dumps(d, indent=1) if args.json else format_layers(d))
    return 0


# ============================================================================ run / report
#: Snakemake options after which no report is written (nothing was run, or the user asked otherwise)
NO_REPORT_OPTIONS = {
    "-n",
    "--dry-run",
    "--dryrun",
    "--lint",
    "--report",
    "--unlock",
    "-l",
    "--list",
    "--list-rules",
    "--lt",
    "--list-target-rules",
    "-S",
    "--summary",
    "-D",
    "--detailed-summary",
    "--dag",
    "--rulegraph",
    "--filegraph",
    "--d3dag",
    "-t",
    "--touch",
    "--cleanup-metadata",
    "--cleanup-shadow",
    "--delete-all-output",
    "--delete-temp-output",
    "--list-changes",
    "--lc",
    "--list-code-changes",
    "--list-params-changes",
    "--list-input-changes",
    "--archive",
    "--containerize",
    "--conda-create-envs-only",
    "--create-envs-only",
    "--print-compilation",
    "--generate-unit-tests",
    "-h",
    "--help",
    "--version",
    "-v",
}


def workflow_dir() -> Path:
    from .config import WORKFLOW_DIR

    return WORKFLOW_DIR


def _option(args: Sequence[str], *names: str) -> bool:
    return any(a in names or any(a.startswith(n + "=") for n in names if n.startswith("--")) for a in args)


def check_config(path: str) -> None:
    """The config exists, parses and validates (here, before Snakemake starts: one clear line)."""
    import yaml

    from . import config as ckcfg

    p = Path(path)
    if not p.is_file():
        raise CLIError(f"{path}: no such config file (write one with `ckptlens init PATH`)")
    try:
        cfg = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise CLIError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(cfg, dict) or "runs" not in cfg:
        raise CLIError(f"{path}: not a ckptlens config (no 'runs' section)")
    try:
        ckcfg.validate(cfg)
    except ckcfg.ConfigError as exc:
        raise CLIError(f"{path}: {exc}") from None


def snakemake_command(config: str, rest: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """The Snakemake command line for the packaged workflow: ``--configfile=CONFIG`` (the ``=`` form:
    a bare ``--configfile X`` would swallow the targets after it), the packaged Snakefile and
    workflow profile (``--profile slurm`` = the packaged SLURM profile), ``--directory`` the
    current folder; the user's options last."""
    wf = workflow_dir()
    rest = list(rest)
    if _option(rest, "--configfile", "--configfiles"):
        raise CLIError("give the config as CONFIG (ckptlens run CONFIG ...), not with --configfile")
    profile = None
    for i, a in enumerate(rest):
        if a == "--profile" and i + 1 < len(rest) and rest[i + 1] == "slurm":
            profile, rest = "slurm", rest[:i] + rest[i + 2 :]
            break
        if a == "--profile=slurm":
            profile, rest = "slurm", rest[:i] + rest[i + 1 :]
            break
    cmd = [sys.executable, "-m", "snakemake"]
    if not _option(rest, "-s", "--snakefile"):
        cmd += ["--snakefile", str(wf / "Snakefile")]
    cmd.append(f"--configfile={Path(config).resolve()}")
    if not _option(rest, "-d", "--directory"):
        cmd += ["--directory", str(Path.cwd())]
    if profile == "slurm":
        if _option(rest, "--workflow-profile"):
            raise CLIError("--profile slurm is the packaged SLURM workflow profile; give it or --workflow-profile")
        cmd.append(f"--workflow-profile={wf / 'profiles' / 'slurm'}")
    elif not _option(rest, "--workflow-profile"):
        cmd.append(f"--workflow-profile={wf / 'profiles' / 'default'}")
    return cmd + list(extra) + rest


def _wait(cmd: Sequence[str]) -> int:
    """Run Snakemake; Ctrl-C reaches it (same process group) while this process ignores it, so
    Snakemake shuts down in its own time (cancelling cluster jobs, removing its lock)."""
    proc = subprocess.Popen(list(cmd))
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return proc.wait()
    finally:
        signal.signal(signal.SIGINT, previous)


def cmd_run(args) -> int:
    check_config(args.config)
    rest = list(args.snakemake_args)
    cmd = snakemake_command(args.config, rest)
    if os.environ.get("CKPTLENS_PRINT_COMMAND"):
        print(" ".join(cmd))
        return 0
    rc = _wait(cmd)
    if rc != 0:
        return 130 if rc == -signal.SIGINT else rc if rc > 0 else 1
    if args.no_report or _option(rest, *NO_REPORT_OPTIONS):
        return 0
    report = Path(args.report_file)
    report_cmd = snakemake_command(
        args.config, [a for a in rest if a not in ("-F", "--forceall")], ["--report", str(report.resolve())]
    )
    rc = _wait(report_cmd)
    if rc == 0:
        print(f"ckptlens: results in results/runs/, the report in {report}", file=sys.stderr)
    return rc if rc >= 0 else 1


def cmd_report(args) -> int:
    check_config(args.config)
    cmd = snakemake_command(args.config, args.snakemake_args, ["--report", str(Path(args.output).resolve())])
    if os.environ.get("CKPTLENS_PRINT_COMMAND"):
        print(" ".join(cmd))
        return 0
    if os.name == "posix":
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(cmd[0], cmd)  # signals and the exit status go straight to Snakemake
    return subprocess.call(cmd)  # pragma: no cover  (Windows)


# ============================================================================ the parser
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        self.exit(EXIT_USAGE, f"ckptlens: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog="ckptlens",
        description="Per-layer training dynamics over a series of checkpoints: look inside them, write a config, "
        "run the workflow and its report.",
        epilog="Quick start: ckptlens init out/ && ckptlens run config.yaml --cores 4",
    )
    parser.add_argument("--version", action="version", version=f"ckptlens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser(
        "layers",
        help="what a checkpoint holds: architecture, weight matrices, per-head pieces, modules, target patterns",
        description="What a checkpoint holds: the detected architecture (adapter), every weight matrix with its "
        "shape, the per-head pieces and circuits (…head{h}.q/.k/.v/.o/.qk/.ov), the modules activations and gradients "
        "can be captured on, and the target patterns that select each group. PATH is a .safetensors or .pt/.bin "
        "file, a save_pretrained or Trainer checkpoint folder, a shard index, or a folder (or glob) of "
        "checkpoints (then also the steps found, how each is read, and what was skipped and why). Safetensors "
        "are read from their header only; no optimizer state or other pickle beside the weights is opened.",
    )
    p.add_argument(
        "path", metavar="PATH", help="a checkpoint file or folder, a shard index, or a folder/glob of checkpoints"
    )
    p.add_argument("--json", action="store_true", help="print everything as JSON instead of text")
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser(
        "init",
        help="write a commented, valid config for a series of checkpoints (one run per PATH)",
        description="Write a commented config for the checkpoints at each PATH (a folder or glob of checkpoints; "
        "several PATHs = several runs, e.g. seeds): the source with the steps found, the architecture's default "
        "targets, a probe when a tokenizer is found beside the checkpoints (with a built-in probe text written "
        "next to the config as probe.txt), and a metric set that runs in minutes on a laptop for a model that "
        "size. The config is validated before it is written.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="a folder (or glob) of checkpoints; one run each")
    p.add_argument(
        "-o", "--output", default="config.yaml", metavar="FILE", help="the config to write (default: %(default)s)"
    )
    p.add_argument("-f", "--force", action="store_true", help="overwrite FILE if it exists")
    p.set_defaults(func=cmd_init)

    snakemake_help = (
        "any Snakemake option or target, after CONFIG (e.g. --cores 4, -n, --profile slurm for the packaged "
        "SLURM profile, --workflow-profile DIR, results/runs/RUN/metrics.parquet)"
    )
    p = sub.add_parser(
        "run",
        help="run the packaged workflow on CONFIG in the current folder, then write the HTML report",
        description="Run the packaged Snakemake workflow on CONFIG in the current folder (results/runs/<run>/, "
        "logs and .snakemake/ go here), locally or with --profile slurm, then write the HTML report. The packaged "
        "default workflow profile is used unless you give --workflow-profile (or --profile slurm); Snakemake applies "
        "it after a --profile of yours, so give --workflow-profile none to use your profile alone. Ctrl-C stops "
        "Snakemake cleanly; rerunning continues where it stopped.",
    )
    p.add_argument(
        "--report-file", default="report.html", metavar="FILE", help="the report to write (default: %(default)s)"
    )
    p.add_argument("--no-report", action="store_true", help="do not write the report")
    p.add_argument("config", metavar="CONFIG", help="the config (e.g. from `ckptlens init`)")
    p.add_argument("snakemake_args", nargs=argparse.REMAINDER, metavar="SNAKEMAKE_OPTIONS", help=snakemake_help)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "report",
        help="write the HTML report of CONFIG's results in the current folder",
        description="Write the Snakemake HTML report (figures and the PCA, correlation and dynamics tables) of "
        "the results in the current folder.",
    )
    p.add_argument(
        "-o", "--output", default="report.html", metavar="FILE", help="the report to write (default: %(default)s)"
    )
    p.add_argument("config", metavar="CONFIG", help="the config the results were computed with")
    p.add_argument("snakemake_args", nargs=argparse.REMAINDER, metavar="SNAKEMAKE_OPTIONS", help=snakemake_help)
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # `ckptlens layers X | head`: the reader is gone, so is the output
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .sources import SourceError
    from .sources.local import DiscoveryError
    from .store.records import CheckpointError

    try:
        return args.func(args)
    except (CLIError, CheckpointError, DiscoveryError, SourceError) as exc:
        print(f"ckptlens: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("ckptlens: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        raise
    except (OSError, ValueError) as exc:
        if os.environ.get("CKPTLENS_DEBUG"):
            raise
        print(f"ckptlens: error: {exc} ({type(exc).__name__}; CKPTLENS_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
