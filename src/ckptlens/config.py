"""The config: its validation, its defaults, and the per-run facts the workflow needs (steps,
enabled metrics, targets, probe, study figures).

Everything here runs while Snakemake parses the workflow — on every cluster job too — so it reads
only local files (never the network) and imports nothing heavy (no torch, no matplotlib). Every
default lives in the schema (``workflow/schemas/config.schema.yaml``, and each source's fragment
in :mod:`ckptlens.sources`); this module reads them from there.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

import yaml

from . import metrics as _metrics
from .plots import studies as _figures
from .sources import SOURCES, SourceError, get_source
from .store.patterns import unmatched
from .store.tensors import targets_key


def _workflow_dir() -> Path:
    """The workflow's folder: ``workflow/`` beside ``src/`` in a source tree (a clone, or a copy of
    it on PYTHONPATH), else the installed package ``ckptlens.workflow`` (a wheel, or an editable
    install, whose finder maps it to the clone's ``workflow/``)."""
    here = Path(__file__).resolve()
    tree = here.parents[2] / "workflow"
    if here.parents[1].name == "src" and (tree / "Snakefile").is_file():
        return tree
    from importlib.resources import files

    return Path(str(files("ckptlens.workflow")))


#: the Snakefile, rules, scripts, schemas, report captions, profiles and envs
WORKFLOW_DIR = _workflow_dir()
SCHEMA_PATH = WORKFLOW_DIR / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """An invalid config; the message starts with the offending key."""


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


@functools.lru_cache(maxsize=4)
def schema(schema_path=SCHEMA_PATH) -> dict:
    return yaml.safe_load(Path(schema_path).read_text())


def _validate(instance, fragment: Mapping, prefix: list) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(fragment)
    errors = list(validator.iter_errors(instance))
    if not errors:
        return
    err = max(errors, key=lambda e: len(e.absolute_path))  # the most specific one names the key best
    msg = err.message
    if err.validator == "additionalProperties":
        msg = f"unknown key(s): {msg.split('(')[-1].rstrip(')')}" if "(" in msg else msg
    raise ConfigError(f"config key '{_key(prefix + list(err.absolute_path))}': {msg}")


def validate_schema(config: Mapping, schema_path=SCHEMA_PATH) -> None:
    """The config against the schema, each run's source against its source type's schema."""
    _validate(config, schema(schema_path), [])
    for run, entry in config["runs"].items():
        try:
            source = get_source(entry["source"]["type"])
        except SourceError as exc:
            raise ConfigError(f"config key 'runs.{run}.source.type': {exc}") from None
        _validate(entry["source"], source.schema, ["runs", run, "source"])


def defaults(*path: str) -> dict:
    """The ``default`` of every property of the schema object at ``path`` (``"$defs", "run",
    "probe"`` or a top-level key such as ``"dynamics"``)."""
    node = schema()
    if path and path[0] == "$defs":
        node, path = node["$defs"], path[1:]
    else:
        node = node["properties"]
    for i, p in enumerate(path):
        node = node[p] if i == 0 else node["properties"][p]
    return {k: v["default"] for k, v in node.get("properties", {}).items() if "default" in v}


def default(key: str):
    """The schema's default of a top-level key."""
    return schema()["properties"][key]["default"]


# --------------------------------------------------------------------------- per-run facts


def on_bad_checkpoint(config) -> str:
    """``fail`` or ``skip``: what a checkpoint that cannot be read does to its run
    (:mod:`ckptlens.store.records`)."""
    return config.get("on_bad_checkpoint", default("on_bad_checkpoint"))


def run_names(config) -> list[str]:
    return list(config["runs"])


def source_spec(config, run) -> dict:
    return config["runs"][run]["source"]


def source_type(config, run) -> str:
    return source_spec(config, run)["type"]


def source(config, run):
    """The run's :class:`~ckptlens.sources.Source`."""
    return SOURCES[source_type(config, run)]


def source_is_temporary(config, run) -> bool:
    """Whether a run's checkpoints are deleted once read (a hub source's ``delete_after``)."""
    src = source(config, run)
    return src.kind == "fetch" and bool(src.temporary(config["runs"][run]["source"]))


def runs_of_kind(config, kind: str) -> list[str]:
    """The runs whose source is of ``kind`` ("train", "fetch", "table")."""
    return [r for r in run_names(config) if source(config, r).kind == kind]


def _source_error(run, exc: SourceError) -> ConfigError:
    return ConfigError(f"config key 'runs.{run}.source{'.' + exc.key if exc.key else ''}': {exc}")


def targets(config, run) -> dict[str, list[str]]:
    """The run's target patterns: its ``targets`` over the schema's defaults. A run without
    ``targets`` gets its architecture's defaults (:func:`ckptlens.adapters.default_targets`: per
    block the attention output projection with its per-head OV/QK circuits, the MLP output, the
    block output) where its module names are known at parse time (:func:`layer_names`), the
    schema's (weights: every matrix) where they are not (hub sources, pickles)."""
    base = defaults("$defs", "run", "targets")
    entry = config["runs"][run]
    if "targets" in entry or source(config, run).kind == "table":
        return {**base, **entry.get("targets", {})}
    try:
        names = layer_names(config, run)
    except ConfigError:  # reported by validate(); the schema's defaults meanwhile
        names = None
    if names is None:
        return base
    return {**base, **_architecture_targets(tuple((k, tuple(v)) for k, v in sorted(names.items())))}


@functools.lru_cache(maxsize=32)
def _architecture_targets(names: tuple) -> dict[str, list[str]]:
    from .adapters import default_targets

    return default_targets({k: list(v) for k, v in names})


def probe(config, run) -> dict:
    return {**defaults("$defs", "run", "probe"), **config["runs"][run].get("probe", {})}


#: the probe keys that name a file
PROBE_FILE_KEYS = ("tokens", "labels", "text")


def probe_files(config, run) -> list[str]:
    """The files a run's probe is read from: its tokens, labels and text files, and the files of
    its tokenizer folder (:data:`ckptlens.sources.readers.TOKENIZER_FILES`), so that editing any
    of them extracts again."""
    from .sources.readers import tokenizer_files

    cfg = config["runs"][run].get("probe", {})
    files = [str(cfg[k]) for k in PROBE_FILE_KEYS if cfg.get(k)]
    if cfg.get("tokenizer"):
        files += [str(f) for f in tokenizer_files(cfg["tokenizer"])]
    if cfg.get("images"):  # an .npy, or every image file of the folder
        p = Path(cfg["images"])
        files += sorted(str(f) for f in p.rglob("*") if f.is_file()) if p.is_dir() else [str(p)]
    if cfg.get("preprocessor"):
        p = Path(cfg["preprocessor"])
        files.append(str(p / "preprocessor_config.json" if p.is_dir() else p))
    return files


def enabled_metrics(config, run=None) -> dict[str, dict]:
    """Enabled metrics (of ``run``: its ``metrics`` subset, if set) with their resolved parameters.
    A table run computes nothing: its metrics come with the table."""
    if run is not None and source(config, run).kind == "table":
        return {}
    names = list(config.get("metrics", {}))
    if run is not None and "metrics" in config["runs"][run]:
        names = config["runs"][run]["metrics"]
    return {name: _metrics.resolve_params(name, config["metrics"][name]) for name in names}


def needed_extractions(config, run) -> list[str]:
    """What to extract for a run: only what its enabled metrics need."""
    needs = {_metrics.FAMILIES[f].needs for f in _metrics.group_by_family(enabled_metrics(config, run))}
    return sorted(needs)


def steps(config, run) -> list[int]:
    try:
        return source(config, run).steps(source_spec(config, run))
    except SourceError as exc:
        raise _source_error(run, exc) from None


def layer_names(config, run) -> dict[str, list[str]] | None:
    """Names the target patterns are matched against, where the source knows them without loading
    a model (None otherwise: the extraction job checks the patterns)."""
    try:
        return source(config, run).layer_names(source_spec(config, run))
    except SourceError as exc:
        raise _source_error(run, exc) from None


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
    if suffix is not None and name not in values and not _metrics.values_depend_on_input(base):
        raise ConfigError(
            f"config key '{key}': {name!r} is not a value of metric {base!r} "
            + (f"(its values: {shown})" if values else "(it gives one value, named without a suffix)")
        )


def _run_facts(config) -> _figures.RunFacts:
    return _figures.RunFacts(
        source_type=lambda r: source_type(config, r),
        source=lambda r: source_spec(config, r),
        check_metric_value=lambda m, key: _check_metric_value(config, m, key),
    )


def _check_targets(config, run) -> None:
    names = layer_names(config, run)
    needed = needed_extractions(config, run)
    wanted = {targets_key(k) for k in needed}  # gradient statistics are of the gradients targets
    if names is not None:
        names = {**names, "chain": names["activations"], "activation_gradients": names["activations"]}
        for kind, patterns in targets(config, run).items():
            if (kind not in wanted and kind != "chain") or not patterns:
                continue
            for i, p in enumerate(patterns):
                if unmatched([p], names[kind]):
                    sample = ", ".join(names[kind][:8])
                    raise ConfigError(
                        f"config key 'runs.{run}.targets.{kind}[{i}]': pattern {p!r} matches no module "
                        f"(modules include: {sample})"
                    )
    for kind in needed:
        key = targets_key(kind)
        if not targets(config, run)[key]:
            raise ConfigError(
                f"config key 'runs.{run}.targets.{key}': enabled metrics need {kind} but no target pattern is set"
            )


def validate(config: Mapping) -> None:
    """Every check that can fail before any job runs; raises ConfigError naming the key."""
    validate_schema(config)
    for name, params in config.get("metrics", {}).items():
        try:
            _metrics.resolve_params(name, params)
        except _metrics.MetricConfigError as exc:
            raise ConfigError(str(exc)) from None
    for run in run_names(config):
        for i, m in enumerate(config["runs"][run].get("metrics", [])):
            if m not in config.get("metrics", {}):
                raise ConfigError(f"config key 'runs.{run}.metrics[{i}]': metric {m!r} is not enabled under 'metrics'")
    for name, tv in config.get("task_vectors", {}).items():
        for key, r in [("base_run", tv["base_run"])] + [(f"runs[{i}]", r) for i, r in enumerate(tv["runs"])]:
            if r not in config["runs"]:
                raise ConfigError(f"config key 'task_vectors.{name}.{key}': {r!r} is not a run under 'runs'")
    figures(config)
    for pair_i, pair in enumerate(config.get("analysis", {}).get("correlation_pairs", [])):
        for m in pair:
            _check_metric_value(config, m, f"analysis.correlation_pairs[{pair_i}]")
    for run in run_names(config):
        if source(config, run).kind == "table":
            path = source_spec(config, run)["path"]
            if not Path(path).is_file():
                raise ConfigError(f"config key 'runs.{run}.source.path': no such file {path!r}")
            continue
        if not enabled_metrics(config, run):
            raise ConfigError(f"config key 'metrics': no metric is enabled for run {run!r}")
        if not steps(config, run):
            raise ConfigError(f"config key 'runs.{run}.source': no checkpoint steps")
        probe_cfg = config["runs"][run].get("probe", {})
        if "text" in probe_cfg and "tokenizer" not in probe_cfg:
            raise ConfigError(
                f"config key 'runs.{run}.probe.tokenizer': a text probe needs the model's local tokenizer folder"
            )
        _check_probe_files(run, probe_cfg)
        _check_probe_kind(config, run, probe_cfg)
        _check_targets(config, run)


def _check_probe_files(run, probe_cfg) -> None:
    """The probe's files exist (they are the extraction's inputs: a missing one is named here,
    before any job starts, not by Snakemake as a missing input)."""
    for key in PROBE_FILE_KEYS:
        if probe_cfg.get(key) and not Path(probe_cfg[key]).is_file():
            raise ConfigError(f"config key 'runs.{run}.probe.{key}': no such file {probe_cfg[key]!r}")
    if probe_cfg.get("images") and not Path(probe_cfg["images"]).exists():
        raise ConfigError(f"config key 'runs.{run}.probe.images': no such file or folder {probe_cfg['images']!r}")
    pre = probe_cfg.get("preprocessor")
    if pre and not (Path(pre).is_file() or (Path(pre) / "preprocessor_config.json").is_file()):
        raise ConfigError(f"config key 'runs.{run}.probe.preprocessor': no preprocessor_config.json at {pre!r}")
    tok = probe_cfg.get("tokenizer")
    if tok:
        from .sources.readers import tokenizer_files

        if not Path(tok).is_dir():
            raise ConfigError(f"config key 'runs.{run}.probe.tokenizer': no such folder {tok!r}")
        if not tokenizer_files(tok):
            raise ConfigError(f"config key 'runs.{run}.probe.tokenizer': {tok!r} holds no tokenizer files")


def _check_probe_kind(config, run, probe_cfg) -> None:
    """An image probe on a model that reads tokens, or a token probe on a vision model, and images
    that cannot be read, named here, where the model's kind is known from its names (the
    architecture adapter); the images' size and channels against the model's are checked when the
    extraction job builds it, before any forward."""
    if not probe_cfg.get("images") and not any(probe_cfg.get(k) for k in ("tokens", "text")):
        return
    from .extract.images import images_shape, modality_error
    from .extract.probed import ExtractionError

    if probe_cfg.get("images"):
        try:
            images_shape(probe_cfg["images"])
        except ExtractionError as exc:
            raise ConfigError(f"config key 'runs.{run}.probe.images': {exc}") from None
    names = layer_names(config, run)
    if not names:
        return
    from .adapters import adapter_for_names

    msg = modality_error(probe_cfg, adapter_for_names(names).name, f"runs.{run}.probe")
    if msg:
        raise ConfigError(msg)


# --------------------------------------------------------------------------- studies


def study(config) -> str:
    """The study's name (the report's top-level grouping)."""
    return config.get("study", default("study"))


def dynamics_settings(config) -> dict:
    """Convergence / change-point settings with the schema's defaults filled in."""
    out = {**defaults("dynamics"), **config.get("dynamics", {})}
    direction = schema()["properties"]["dynamics"]["properties"]["thresholds"]["additionalProperties"]
    direction = direction["properties"]["direction"]["default"]
    out["thresholds"] = {m: {"direction": direction, **t} for m, t in out.get("thresholds", {}).items()}
    return out


def figures(config) -> dict[str, dict]:
    """Study figures, checked and normalised by their kind (:mod:`ckptlens.plots.studies`): runs
    as a list plus a run -> legend label mapping, and what the kind derives from the config."""
    facts = _run_facts(config)
    out = {}
    for name, fig in config.get("figures", {}).items():
        runs = list(fig["runs"])
        for r in runs:
            if r not in config["runs"]:
                raise ConfigError(f"config key 'figures.{name}.runs': {r!r} is not a run under 'runs'")
        try:
            out[name] = _figures.check_figure(name, fig, facts)
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return out


# --------------------------------------------------------------------------- task vectors


def sample_settings(config, name: str) -> dict | None:
    """``task_vectors.<name>.sample`` with its defaults (None: no sampling); ``evaluate`` becomes
    ``{task, tokenizer, max_len}`` (a bare string is the task), the tokenizer defaulting to the
    base run's probe tokenizer."""
    tv = config["task_vectors"][name]
    sample = tv.get("sample")
    if sample is None:
        return None
    out = {**_sample_defaults(), **{k: v for k, v in sample.items() if k != "evaluate"}}
    ev = sample.get("evaluate")
    if ev is not None:
        ev = {**_evaluate_defaults(), **({"task": ev} if isinstance(ev, str) else ev)}
        if not ev.get("tokenizer"):
            ev["tokenizer"] = probe(config, tv["base_run"]).get("tokenizer")
        out["evaluate"] = ev
    return out


def _sample_node() -> dict:
    return schema()["properties"]["task_vectors"]["additionalProperties"]["properties"]["sample"]


def _sample_defaults() -> dict:
    return {k: v["default"] for k, v in _sample_node()["properties"].items() if "default" in v}


def _evaluate_defaults() -> dict:
    obj = next(o for o in _sample_node()["properties"]["evaluate"]["oneOf"] if o.get("type") == "object")
    return {k: v["default"] for k, v in obj["properties"].items() if "default" in v}


# --------------------------------------------------------------------------- jobs sized to their work

#: checkpoint bytes one job reads at most: a checkpoint this large or larger gets a job of its own
CHECKPOINT_BYTES_PER_JOB = 2 << 30
#: checkpoints one job carries at most, however small the model
MAX_CHECKPOINTS_PER_JOB = 64
#: checkpoints a metric job carries at least: its inputs (the extractions) are far smaller than the
#: checkpoints, and every job pays for a process and its imports (about 1-2 s)
MIN_METRIC_CHECKPOINTS_PER_JOB = 32


def checkpoints_per_job(config, run) -> int:
    """How many checkpoints one materialisation or extraction job of ``run`` handles: the run's
    ``checkpoints_per_job``, or (``auto``) as many as fit in :data:`CHECKPOINT_BYTES_PER_JOB`
    (one per job for a multi-GB model, at most :data:`MAX_CHECKPOINTS_PER_JOB` for a small one;
    one per job where the size cannot be known)."""
    setting = config["runs"][run].get("checkpoints_per_job", defaults("$defs", "run")["checkpoints_per_job"])
    if setting != "auto":
        return int(setting)
    src, spec = source(config, run), source_spec(config, run)
    size = src.checkpoint_bytes(spec)
    if size is None and src.kind == "fetch":
        from .sources.readers import files_bytes

        size = files_bytes(src.inputs(spec, steps(config, run)[0])) or None
    if not size:
        return 1
    return max(1, min(MAX_CHECKPOINTS_PER_JOB, CHECKPOINT_BYTES_PER_JOB // size))


def chunks(config, run) -> list[list[int]]:
    """The run's steps in consecutive chunks of :func:`checkpoints_per_job` (the last one partial):
    chunk ``i`` is the same whatever steps are added after it, so that one more checkpoint at the
    end reruns only the last chunk's jobs."""
    all_steps, size = steps(config, run), checkpoints_per_job(config, run)
    return [all_steps[i : i + size] for i in range(0, len(all_steps), size)]


def metric_parts(config, run) -> list[list[int]]:
    """The chunks (their indices) each metric job of ``run`` reads: consecutive groups holding at
    least the run's ``checkpoints_per_metric_job`` (``auto``: :data:`MIN_METRIC_CHECKPOINTS_PER_JOB`)
    checkpoints, stable like the chunks."""
    n_chunks, size = len(chunks(config, run)), checkpoints_per_job(config, run)
    setting = config["runs"][run].get("checkpoints_per_metric_job", "auto")
    at_least = MIN_METRIC_CHECKPOINTS_PER_JOB if setting == "auto" else int(setting)
    per_part = max(1, -(-at_least // size))
    if setting == "auto" and "weights" in needed_extractions(config, run) and source_is_temporary(config, run):
        # weight metrics read the checkpoints, which a temporary source deletes once every job
        # reading them has run: a metric job per chunk keeps a chunk on disk, not a part of them
        per_part = 1
    return [list(range(i, min(i + per_part, n_chunks))) for i in range(0, n_chunks, per_part)]
