"""``ckptlens init PATH... [-o FILE]``: a commented, valid config for one's own checkpoints, one run
per PATH (a folder or glob of checkpoints), planned from what :mod:`.layers` reads of them: the
architecture's default targets, a probe where a tokenizer lies beside them (the built-in probe text
is written next to the config), and a metric set sized to the model."""

from __future__ import annotations

import json
import re
import textwrap
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from ckptlens.sources.readers import tokenizer_files
from ckptlens.store import layout

from . import CLIError
from .layers import Inspected, fmt_params, inspect_path


def probe_text() -> str:
    """The built-in probe text: plain, varied English sentences, one sample a line (``probe.txt``,
    shipped beside this module)."""
    return files(__package__).joinpath("probe.txt").read_text(encoding="utf-8")


#: parameters from which the default metric set is cut down so that a laptop still runs it in minutes
LARGE_MODEL = 300e6
VERY_LARGE_MODEL = 1.5e9


@dataclass
class RunPlan:
    name: str
    source_path: str
    steps: list[int]
    skipped: list[str]  # what the series leaves out, in the words of a run's notes
    architecture: str
    n_params: int
    read: str
    targets: dict[str, list[str]]
    #: "text" (a tokenizer was found: the built-in probe text), "task" (the demo model: its own task),
    #: None (weights only, ``why_no_probe`` says why)
    probe: str | None
    tokenizer: str | None = None
    why_no_probe: str = ""
    #: kind -> what its target patterns select, in words (the adapter's target groups they cover)
    target_labels: dict[str, list[str]] | None = None
    #: why the weight targets hold no per-head circuits ("" where they do)
    why_no_heads: str = ""
    #: the source as written, where it is not a local folder (a hub series), and what to say of it
    source: dict | None = None
    source_notes: tuple[str, ...] = ()


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
        if tokenizer_files(d):
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


#: at most this many revisions of a hub series go into the config ``init`` writes (log-spaced steps,
#: the first and the last kept): a few dozen checkpoints show the dynamics; all of them is the user's choice
MAX_HUB_REVISIONS = 32


def spread_steps(steps: Sequence[int], n: int = MAX_HUB_REVISIONS) -> list[int]:
    """At most ``n`` of ``steps``: the first, the last, and the ones nearest to log-spaced points between
    (training dynamics are fastest early, and series like Pythia's are log-spaced there themselves)."""
    import numpy as np

    steps = sorted(steps)
    if len(steps) <= n:
        return steps
    where = np.log1p(np.asarray(steps, dtype=float))
    free = np.ones(len(steps), dtype=bool)
    for target in np.linspace(where[0], where[-1], n):  # the nearest step not yet taken: exactly n
        i = int(np.argmin(np.where(free, np.abs(where - target), np.inf)))
        free[i] = False
    return [s for s, taken in zip(steps, ~free) if taken]


def plan_hub_run(raw: str, insp: Inspected, cwd: Path, tokenizer_dir: Path) -> RunPlan:
    """A run over a repository's branches: the largest training stage's steps, at most
    :data:`MAX_HUB_REVISIONS` of them, and its tokenizer downloaded beside the config for the probe."""
    from ..adapters import get_adapter
    from ..sources.hub import RevisionError, download_tokenizer
    from ..sources.layer_names import names_from_keys
    from ..sources.local import skipped_sentence

    model, final = insp.hub
    if insp.series is None:
        raise CLIError(f"{raw}: is one revision; `ckptlens init` needs a series: give hf:{model} (all its branches)")
    stage, all_steps = insp.series.largest()
    steps = spread_steps(list(all_steps))
    notes = [f"the branches of {model}: {len(all_steps)} with a step" + (f" in stage {stage}" if stage else "")]
    if len(steps) < len(all_steps):
        notes.append(
            f"{len(steps)} of them written below (log-spaced steps, the first and the last); "
            f"`ckptlens layers {raw}` lists all"
        )
    notes += [n for n in insp.notes if n.startswith("steps restart")]
    notes += [skipped_sentence(n, why) for n, why in insp.series.skipped]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adapter = get_adapter("auto", insp.keys, insp.metadata, shapes=insp.shapes)
        names = names_from_keys(insp.keys, insp.metadata, insp.shapes)
    targets = type(adapter).default_targets(names)
    if insp.n_params > LARGE_MODEL:
        targets["weights"] = [p for p in targets["weights"] if ".head*." not in p] or ["**"]
    labels = target_labels(type(adapter).target_groups(names), targets)
    has_config = "(no config.json)" not in insp.how
    tok_dir = tokenizer_dir / re.sub(r"[^A-Za-z0-9_.-]+", "_", model)
    try:
        tok = bool(tokenizer_files(tok_dir)) or (has_config and bool(download_tokenizer(model, final, tok_dir)))
    except RevisionError as exc:
        raise CLIError(str(exc)) from None
    probe, why = (
        ("text", "") if tok else (None, "no config.json" if not has_config else "the repository has no tokenizer")
    )
    return RunPlan(
        name=model.split("/")[-1],
        source_path="",
        steps=steps,
        skipped=[],
        architecture=adapter.name + (f", {adapter.n_heads} heads" if adapter.n_heads else ""),
        n_params=insp.n_params,
        read=insp.how,
        targets=targets,
        probe=probe,
        tokenizer=_rel(tok_dir, cwd) if tok else None,
        why_no_probe=why,
        target_labels=labels,
        why_no_heads=_why_no_heads(adapter, labels["weights"], insp.n_params),
        source={"type": "huggingface", "model": model, "revisions": [all_steps[s] for s in steps]},
        source_notes=tuple(notes),
    )


def plan_run(raw: str, cwd: Path, tokenizer_dir: Path | None = None) -> RunPlan:
    from ..adapters import get_adapter
    from ..sources.layer_names import names_from_keys
    from ..sources.local import is_glob, skipped_notes

    insp = inspect_path(raw)
    if insp.hub is not None:
        return plan_hub_run(raw, insp, cwd, tokenizer_dir or cwd / "tokenizers")
    if insp.series is None:
        raise CLIError(
            f"{raw}: is one checkpoint; `ckptlens init` needs a series of them: give the folder that holds "
            f"them (e.g. {Path(raw).resolve().parent}) or a glob"
        )
    root = insp.series.base if is_glob(raw) else Path(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adapter = get_adapter("auto", insp.keys, insp.metadata, shapes=insp.shapes)
        names = names_from_keys(insp.keys, insp.metadata, insp.shapes)
    n_params = insp.n_params
    targets = type(adapter).default_targets(names)
    if n_params > LARGE_MODEL:  # per-head circuits are d_model² each, n_heads of them per layer
        targets["weights"] = [p for p in targets["weights"] if ".head*." not in p] or ["**"]
    labels = target_labels(type(adapter).target_groups(names), targets)
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
        source_path=raw if is_glob(raw) else _rel(Path(raw), cwd),
        steps=list(insp.series.found),
        skipped=skipped_notes(insp.series),
        architecture=adapter.name + (f", {adapter.n_heads} heads" if adapter.n_heads else ""),
        n_params=n_params,
        read=insp.how,
        targets=targets,
        probe=probe,
        tokenizer=None if tok is None else _rel(tok, cwd),
        why_no_probe=why,
        target_labels=labels,
        why_no_heads=_why_no_heads(adapter, labels["weights"], n_params),
    )


def target_labels(groups, targets: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """What the written targets select, in words: the labels of the adapter's target groups whose
    patterns they hold (so the config says what was written, whatever the architecture)."""
    return {
        kind: [g.label for g in groups if g.kind == kind and g.patterns and set(g.patterns) <= set(pats)]
        for kind, pats in targets.items()
    }


def _why_no_heads(adapter, weight_labels: Sequence[str], n_params: int) -> str:
    if any(label.startswith("per-head") for label in weight_labels):
        return ""
    if adapter.name == "generic":
        return (
            "no per-head circuits: ckptlens has no adapter for this architecture, and the generic one knows no "
            "attention blocks or heads; narrow the patterns to the matrices you want"
        )
    if n_params > LARGE_MODEL:
        return "no per-head circuits: this model is large; add '<attention>.head*.ov' to get them"
    if not adapter.n_heads:
        return "no per-head circuits: the number of attention heads is unknown (no config.json beside the weights)"
    return "no per-head circuits: this architecture has no attention heads ckptlens splits"


def _comment(text: str, indent: int) -> list[str]:
    """A config comment wrapped at 100 columns, its continuation lines indented."""
    pad = " " * indent
    return textwrap.wrap(text, width=100, initial_indent=pad + "#   ", subsequent_indent=pad + "#     ")


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


def _metric_note(name: str) -> str:
    """A metric's comment in the config: its description in the metric registry."""
    from ..metrics import METRICS

    return METRICS[name].description.removesuffix(".") if name in METRICS else ""


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
        f"# Run it from this folder:  ckptlens run <this file> --cores 4    (results go to {layout.run_dir('<run>')}/,",
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
        out.append(f"    # {p.architecture}, {fmt_params(p.n_params)} parameters; each checkpoint read as: {p.read}")
        for line in p.source_notes:
            out += _comment(line, 4)
        out.append(f"    # {len(p.steps)} steps{'' if p.source else ' found'}: {', '.join(map(str, p.steps))}")
        for line in p.skipped:
            out.append(f"    # {line}")
        if p.source:
            out.append(
                "    # downloaded one per job; on a cluster without internet: `ckptlens fetch <this file>` first"
            )
            out.append(f"    source: {_yaml(p.source)}")
        else:
            out.append(f"    source: {{type: local, path: {_yaml(p.source_path)}}}")
        out.append("    # what is measured (`ckptlens layers PATH` lists every name and pattern):")
        labels = p.target_labels or {}
        weights = "; ".join(labels.get("weights") or ["the patterns below"])
        out += _comment(f"weights: {weights}" + (f" — {p.why_no_heads}" if p.why_no_heads else ""), 4)
        if p in probe_runs and labels.get("activations"):
            out += _comment("activations: " + "; ".join(labels["activations"]), 4)
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
        note = _metric_note(m)
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

    from .. import config as ckcfg

    cwd = Path.cwd().resolve()
    out_path = Path(args.output)
    if out_path.exists() and not args.force:
        raise CLIError(f"{out_path}: exists already (use --force to overwrite it)")
    plans = [plan_run(raw, cwd, out_path.resolve().parent / "tokenizers") for raw in args.paths]
    local = [p for p in plans if p.source is None]
    for plan, name in zip(local, run_names([Path(p.name) for p in local])):
        plan.name = name
    names = [p.name for p in plans]
    for p in plans:  # two hub repositories of the same name under different owners
        if names.count(p.name) > 1 and p.source is not None:
            p.name = re.sub(r"[^A-Za-z0-9_.-]+", "_", p.source["model"])
    probe_path = out_path.resolve().parent / "probe.txt"
    needs_probe = any(p.probe == "text" for p in plans)
    probe_file = _rel(probe_path, cwd) if needs_probe else None
    command = "ckptlens init " + " ".join(args.paths) + ("" if args.output == "config.yaml" else f" -o {args.output}")
    text = render_config(plans, probe_file, command)
    cfg = yaml.safe_load(text)
    wrote_probe = 0  # sentences written
    if needs_probe and not probe_path.exists():
        probe_path.parent.mkdir(parents=True, exist_ok=True)
        builtin = probe_text()
        probe_path.write_text(builtin)
        wrote_probe = len(builtin.splitlines())
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
        print(f"  {p.name}: {len(p.steps)} steps of {p.architecture} ({fmt_params(p.n_params)}), {probe}")
        measured = "; ".join((p.target_labels or {}).get("weights") or [])
        if measured:
            print(f"    weights: {measured}" + (" (no per-head circuits)" if p.why_no_heads else ""))
        for line in p.skipped:
            print(f"    {line}")
    if wrote_probe:
        print(f"wrote {_rel(probe_path, cwd)}: the built-in probe text ({wrote_probe} sentences)")
    elif needs_probe:
        print(f"kept {_rel(probe_path, cwd)} (exists already) as the probe text")
    print(f"next: ckptlens run {args.output} --cores 4")
    return 0
