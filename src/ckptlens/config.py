"""Config validation and the per-run facts the workflow needs (steps, enabled metrics, targets).

Everything here runs while Snakemake parses the workflow — on every cluster job too — so it reads
only local files (never the network) and imports nothing heavy.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from . import metrics as _metrics
from .labels import parse_model_size
from .patterns import unmatched

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"

DEFAULT_TARGETS = {"weights": ["**"], "activations": [], "gradients": [], "activation_gradients": []}
DEFAULT_PROBE = {"batch_size": 32, "n_batches": 4, "seed": 12345}
DEFAULT_TRAIN = {"batch_size": 64, "lr": 0.002, "weight_decay": 0.0, "log_every": 10, "seed": 0, "data_seed": None}


class ConfigError(ValueError):
    """An invalid config; the message starts with the offending key."""


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def validate_schema(config: Mapping, schema_path=SCHEMA_PATH) -> None:
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if not errors:
        return
    err = max(errors, key=lambda e: len(e.absolute_path))  # the most specific one names the key best
    msg = err.message
    if err.validator == "additionalProperties":
        msg = f"unknown key(s): {msg.split('(')[-1].rstrip(')')}" if "(" in msg else msg
    raise ConfigError(f"config key '{_key(err.absolute_path)}': {msg}")


def on_bad_checkpoint(config) -> str:
    """``fail`` (default) or ``skip``: what a checkpoint that cannot be read does to its run
    (see :mod:`ckptlens.faults`)."""
    return config.get("on_bad_checkpoint", "fail")


def run_names(config) -> list[str]:
    return list(config["runs"])


def source_type(config, run) -> str:
    return config["runs"][run]["source"]["type"]


def targets(config, run) -> dict[str, list[str]]:
    return {**DEFAULT_TARGETS, **config["runs"][run].get("targets", {})}


def probe(config, run) -> dict:
    return {**DEFAULT_PROBE, **config["runs"][run].get("probe", {})}


def enabled_metrics(config, run=None) -> dict[str, dict]:
    """Enabled metrics (of ``run``: its ``metrics`` subset, if set) with their resolved parameters.
    A table run computes nothing: its metrics come with the table."""
    if run is not None and source_type(config, run) == "table":
        return {}
    names = list(config.get("metrics", {}))
    if run is not None and "metrics" in config["runs"][run]:
        names = config["runs"][run]["metrics"]
    return {name: _metrics.resolve_params(name, config["metrics"][name]) for name in names}


def hf_revisions(config, run) -> dict[int, str]:
    """{step: revision} of a Hugging Face source (pure: no network)."""
    from .sources.huggingface import RevisionError, select_revisions

    try:
        return select_revisions(config["runs"][run]["source"])
    except (RevisionError, ValueError) as exc:
        raise ConfigError(f"config key 'runs.{run}.source': {exc}") from None


def needed_extractions(config, run) -> list[str]:
    """What to extract for a run: only what its enabled metrics need."""
    needs = {_metrics.FAMILIES[f].needs for f in _metrics.group_by_family(enabled_metrics(config, run))}
    return sorted(needs)


def train_settings(config, run) -> dict:
    return {**DEFAULT_TRAIN, **config["runs"][run]["source"]["train"]}


def local_checkpoints(config, run) -> dict[int, str]:
    """Step -> file of a local source (globbed now: local files only, no network)."""
    src = config["runs"][run]["source"]
    path = src["path"]
    pattern = re.compile(src["step_pattern"]) if "step_pattern" in src else None
    candidates = sorted(glob.glob(str(Path(path) / "*"))) if Path(path).is_dir() else sorted(glob.glob(path))
    found: dict[int, str] = {}
    for c in candidates:
        name = Path(c).name
        if Path(c).is_file() and not name.endswith((".safetensors", ".pt", ".bin")):
            continue
        if pattern is not None:
            m = pattern.search(name)
            step = int(m.group(1)) if m else None
        else:
            ints = re.findall(r"\d+", name)
            step = int(ints[-1]) if ints else None
        if step is None:
            continue
        if step in found:
            raise ConfigError(f"config key 'runs.{run}.source.path': {found[step]} and {c} both map to step {step}")
        found[step] = c
    if not found:
        raise ConfigError(f"config key 'runs.{run}.source.path': no checkpoints found at {path!r}")
    return dict(sorted(found.items()))


TRAINED_SOURCES = ("train_toy", "train_mlp")


def steps(config, run) -> list[int]:
    src = config["runs"][run]["source"]
    if src["type"] in TRAINED_SOURCES:
        from .toy.steps import checkpoint_steps

        t = src["train"]
        try:
            return checkpoint_steps(t["steps"], t.get("save_every", max(1, t["steps"] // 20)), t.get("save_steps"))
        except ValueError as exc:
            raise ConfigError(f"config key 'runs.{run}.source.train': {exc}") from None
    if src["type"] == "huggingface":
        return list(hf_revisions(config, run))
    if src["type"] == "table":
        return []  # the table brings its own steps
    return list(local_checkpoints(config, run))


def layer_names(config, run) -> dict[str, list[str]] | None:
    """Names the target patterns are matched against, known without loading a model: from the toy
    model's configuration, or from the header of a local safetensors checkpoint (read with the
    architecture adapter, so per-head pieces such as ``blocks.0.attn.head0.ov`` are included)."""
    from .adapters import get_adapter, module_names_from_keys
    from .toy.names import toy_state_keys

    src = config["runs"][run]["source"]
    if src["type"] in ("huggingface", "table"):
        return None  # known only once downloaded: the extraction job checks the patterns
    if src["type"] == "train_toy":
        keys, meta, shapes = toy_state_keys(src.get("model", {})), {"ckptlens_arch": "toy", "ckptlens_model": src.get("model", {})}, None
    elif src["type"] == "train_mlp":
        depth = src.get("model", {}).get("depth", 2)
        keys = [f"blocks.{i}.linear.{p}" for i in range(depth) for p in ("weight", "bias")] + ["head.weight", "head.bias"]
        meta, shapes = {}, {k: (2, 2) if k.endswith("weight") else (2,) for k in keys}
    else:
        from .checkpoint_io import CheckpointError, open_checkpoint

        def header_only(f: str) -> bool:
            """safetensors file or save_pretrained folder: keys readable without torch"""
            return f.endswith(".safetensors") or any(
                (Path(f) / n).is_file() for n in ("model.safetensors", "model.safetensors.index.json"))

        files = list(local_checkpoints(config, run).values())
        if not header_only(files[0]):
            return None  # reading a pickle's keys needs torch: the extraction job checks instead
        errors = []
        # the first readable safetensors checkpoint: a bad file is its own job's failure (or gap),
        # it must not stop the whole workflow while it is parsed
        for f in (f for f in files if header_only(f)):
            try:
                with open_checkpoint(f) as ckpt:
                    keys, meta, shapes = ckpt.keys, ckpt.metadata, ckpt.shapes
                break
            except CheckpointError as exc:
                errors.append(str(exc))
        else:
            raise ConfigError(f"config key 'runs.{run}.source.path': no checkpoint can be read: {'; '.join(errors[:3])}")
    arch = get_adapter("auto", keys, meta, shapes=shapes)
    weights = arch.layer_names(keys, shapes)
    owners = [k[: -len(".weight")] for k in keys if k.endswith(".weight")]
    return {"weights": weights, "activations": module_names_from_keys(keys), "gradients": owners}


def _check_metric_value(config, name: str, key: str) -> None:
    """``name`` is an enabled metric giving one value, or one value ``<metric>.<suffix>`` of an
    enabled multi-valued metric (qk_ov_overlap_max.k8). Not checked without a 'metrics' section:
    an imported table brings metrics of its own."""
    if not config.get("metrics"):
        return
    base, suffix = _metrics.split_metric_name(name)
    if base not in config["metrics"]:
        raise ConfigError(f"config key '{key}': metric {name!r} is not enabled under 'metrics'")
    values = _metrics.value_names(base, config["metrics"][base])
    shown = ", ".join(values[:8]) + (", …" if len(values) > 8 else "")
    if suffix is None and values:
        raise ConfigError(f"config key '{key}': metric {name!r} gives several values; name one of {shown}")
    if suffix is not None and name not in values:
        raise ConfigError(
            f"config key '{key}': {name!r} is not a value of metric {base!r} "
            + (f"(its values: {shown})" if values else "(it gives one value, named without a suffix)")
        )


def validate(config: Mapping) -> None:
    """Every check that can fail before any job runs; raises ConfigError naming the key."""
    validate_schema(config)
    for name, params in config.get("metrics", {}).items():
        try:
            _metrics.resolve_params(name, params)
        except _metrics.MetricConfigError as exc:
            raise ConfigError(str(exc)) from None
    if "task_vectors" in config["runs"]:
        raise ConfigError("config key 'runs.task_vectors': this run name is reserved for results/task_vectors/")
    for run in run_names(config):
        for i, m in enumerate(config["runs"][run].get("metrics", [])):
            if m not in config.get("metrics", {}):
                raise ConfigError(f"config key 'runs.{run}.metrics[{i}]': metric {m!r} is not enabled under 'metrics'")
    for name, tv in config.get("task_vectors", {}).items():
        for key, r in [("base_run", tv["base_run"])] + [(f"runs[{i}]", r) for i, r in enumerate(tv["runs"])]:
            if r not in config["runs"]:
                raise ConfigError(f"config key 'task_vectors.{name}.{key}': {r!r} is not a run under 'runs'")
    for name in config.get("figures", {}):
        _check_figure(config, name)
    for pair_i, pair in enumerate(config.get("analysis", {}).get("correlation_pairs", [])):
        for m in pair:
            _check_metric_value(config, m, f"analysis.correlation_pairs[{pair_i}]")
    for run in run_names(config):
        if source_type(config, run) == "table":
            path = config["runs"][run]["source"]["path"]
            if not Path(path).is_file():
                raise ConfigError(f"config key 'runs.{run}.source.path': no such file {path!r}")
            continue
        if not enabled_metrics(config, run):
            raise ConfigError(f"config key 'metrics': no metric is enabled for run {run!r}")
        if not steps(config, run):
            raise ConfigError(f"config key 'runs.{run}.source': no checkpoint steps")
        probe_cfg = config["runs"][run].get("probe", {})
        if "text" in probe_cfg and "tokenizer" not in probe_cfg:
            raise ConfigError(f"config key 'runs.{run}.probe.tokenizer': a text probe needs the model's local tokenizer folder")
        names = layer_names(config, run)
        if names is None:
            continue
        names["chain"] = names["activations"]
        names["activation_gradients"] = names["activations"]
        for kind, patterns in targets(config, run).items():
            if (kind not in needed_extractions(config, run) and kind != "chain") or not patterns:
                continue
            for i, p in enumerate(patterns):
                if unmatched([p], names[kind]):
                    sample = ", ".join(names[kind][:8])
                    raise ConfigError(
                        f"config key 'runs.{run}.targets.{kind}[{i}]': pattern {p!r} matches no module "
                        f"(modules include: {sample})"
                    )
        for kind in needed_extractions(config, run):
            if not targets(config, run)[kind]:
                raise ConfigError(
                    f"config key 'runs.{run}.targets.{kind}': enabled metrics need {kind} but no target pattern is set"
                )


# --------------------------------------------------------------------------- studies

DEFAULT_STUDY = "ckptlens"
DEFAULT_DYNAMICS = {"tolerance": 0.05, "thresholds": {}, "max_change_points": 2, "min_size": 2}
#: Figure kinds that read each run's training log (trained runs only).
FIGURES_WITH_LOGS = ("induction",)
#: Figure kinds that read each run's analysis tables instead of its metrics.
FIGURES_WITH_ANALYSIS = ("model_size",)


def study(config) -> str:
    """The study's name (the report's top-level grouping)."""
    return config.get("study", DEFAULT_STUDY)


def dynamics_settings(config) -> dict:
    """Convergence / change-point settings with defaults filled in."""
    out = {**DEFAULT_DYNAMICS, **config.get("dynamics", {})}
    out["thresholds"] = {
        m: {"direction": "above", **t} for m, t in out.get("thresholds", {}).items()
    }
    return out


def figures(config) -> dict[str, dict]:
    """Study figures, normalised: runs as a list plus a run -> legend label mapping."""
    out = {}
    for name, fig in config.get("figures", {}).items():
        runs = fig["runs"]
        labels = dict(runs) if isinstance(runs, Mapping) else {r: r for r in runs}
        spec = {**fig, "runs": list(labels), "labels": labels}
        if fig["kind"] == "gradient_pca":
            # the hidden width sets the |cos| expected between random directions
            first = config["runs"][next(iter(labels))]["source"]
            if first.get("type") == "train_mlp":
                spec["dims"] = int(first.get("model", {}).get("hidden", 32))
        if fig["kind"] == "model_size":
            spec["sizes"] = {r: fig.get("sizes", {}).get(r) or parse_model_size(r) for r in labels}
        out[name] = spec
    return out


def _check_figure(config, name) -> None:
    fig = config["figures"][name]
    key = f"figures.{name}"
    runs = list(fig["runs"])
    for r in runs:
        if r not in config["runs"]:
            raise ConfigError(f"config key '{key}.runs': {r!r} is not a run under 'runs'")
    kind = fig["kind"]
    if kind == "compare" and "metric" not in fig:
        raise ConfigError(f"config key '{key}.metric': a compare figure needs the metric to compare")
    if kind == "compare" and not any(source_type(config, r) == "table" for r in runs):
        _check_metric_value(config, fig["metric"], f"{key}.metric")
    if kind in FIGURES_WITH_LOGS:
        for r in runs:
            if source_type(config, r) != "train_toy":
                raise ConfigError(
                    f"config key '{key}.runs': {r!r} is not a train_toy run (the {kind} figure reads its training log)"
                )
    if kind == "model_size":
        for r in runs:
            if not fig.get("sizes", {}).get(r) and parse_model_size(r) is None:
                raise ConfigError(
                    f"config key '{key}.sizes': no size for run {r!r} (give its parameter count; "
                    "none could be read from the name)"
                )
