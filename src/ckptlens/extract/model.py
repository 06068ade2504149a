"""Activations, gradients and activation gradients of checkpoints: one model, built once, the
checkpoints' weights loaded in turn, each run on the same fixed probe batches.

:class:`~.probed.ProbedModel` is what extraction needs of a model, whatever it is (see
:mod:`.probed`). :func:`open_model` builds one from a checkpoint with the first family of
:data:`MODEL_FAMILIES` that recognises it — a model trained here (:mod:`.trained_model`, told apart
by the checkpoint's metadata) or else a Hugging Face ``transformers`` model (:mod:`.hf_model`).
:func:`extract_model` is the job: one checkpoint's extractions, or (:func:`extract_models`) a series
of checkpoints of one model, which is then built once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from ..store.failures import naming_source
from ..store.patterns import select
from ..store.tensors import GRADIENT_STATS_FORMAT, write_tensors
from .hf_model import TRANSFORMERS
from .probed import ExtractionError, ModelFamily, ProbedModel
from .trained_model import TRAINED

KINDS = ("activations", "gradients", "gradient_stats", "activation_gradients", "attentions", "similarity_terms")
#: storage dtypes of captured activations (``probe.activation_dtype``): float32 (default) or the
#: compact float16 (half the bytes; relative rounding 2⁻¹¹ ≈ 4.9e-4; a tensor beyond float16's range
#: is kept as float32, with a warning). bfloat16 is not offered: 2⁻⁸ ≈ 3.9e-3 rounding for the same
#: bytes. Metrics that tolerate float16 (within 1e-3 relative, tested on a GPT-NeoX probe; measured
#: ≤ 5e-5): activation_norm, activation_pca_evr, rankme, anisotropy, anisotropy_microscope, cka_to_*,
#: svcca_to_*. Not: mutual_knn_to_* (neighbour ties), intrinsic_dimension (nearest-neighbour
#: distances), pwcca_to_* (inverse covariances), linearity_*, consecutive_cosine (5e-4 to 5e-2 there),
#: nor dormant_fraction (a threshold: a unit at it can flip): keep float32 for them.
ACTIVATION_DTYPES = ("float32", "float16")

#: name -> model family, in recognition order ("transformers" last: it accepts any checkpoint)
MODEL_FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (TRAINED, TRANSFORMERS)}


def open_model(checkpoint, probe: Mapping, device=None, hf_config: Mapping | None = None) -> ProbedModel:
    """The model of ``checkpoint`` with its probe, weights not yet loaded (:attr:`ProbedModel.load`)."""
    for family in MODEL_FAMILIES.values():
        if family.recognises(checkpoint, hf_config):
            return family.open(checkpoint, probe, device, hf_config)
    raise ExtractionError(  # pragma: no cover  ("transformers" recognises every checkpoint)
        f"{checkpoint}: no model family recognises it (families: {', '.join(MODEL_FAMILIES)})"
    )


def _chosen(targets: Mapping, kind: str, names: Sequence[str], checkpoint) -> list[str]:
    found = select(targets.get(kind, []), list(names))
    if not found:
        raise ExtractionError(f"{checkpoint}: no module matches targets.{kind} {list(targets.get(kind, []))}")
    return found


def _compact(acts: Mapping, dtype: str, checkpoint) -> dict:
    """Captured activations in their storage dtype (:data:`ACTIVATION_DTYPES`)."""
    import numpy as np

    from ..store.joblog import warn

    if dtype not in ACTIVATION_DTYPES:
        raise ExtractionError(f"probe.activation_dtype {dtype!r}: one of {', '.join(ACTIVATION_DTYPES)}")
    if dtype == "float32":
        return dict(acts)
    out = {}
    limit = float(np.finfo(np.float16).max)
    for name, a in acts.items():
        if a.size and float(np.max(np.abs(a[np.isfinite(a)]), initial=0.0)) > limit:
            warn(f"{checkpoint}: activations of {name!r} exceed float16's range; stored as float32")
            out[name] = a
        else:
            out[name] = a.astype(np.float16)
    return out


def run_extractions(
    pm: ProbedModel,
    checkpoint,
    targets: Mapping,
    probe: Mapping,
    outputs: Mapping[str, str],
    gradient_statistics: Sequence[str] | None = None,
    reference: dict | None = None,
    is_reference: bool = False,
) -> None:
    """The extractions ``outputs`` names (kind -> path) of the checkpoint whose weights ``pm`` holds.
    ``similarity_terms`` compares the activations with ``reference`` (:func:`reference_activations`);
    ``is_reference``: this checkpoint is the reference, and an empty ``reference`` is filled with
    its activations first.

    Weight gradients: one backward per probe batch; after each, the ``gradient_stats`` (the
    statistics ``gradient_statistics`` names, all by default) are updated on the model's device and
    the raw ``gradients`` (only if asked for) written on, so no job holds the K gradients."""
    from .capture import capture_attentions, capturing, output_gradients, raw_gradients
    from .gradients import GradientStatistics, accumulator_dtype
    from .similarity import TERMS, Centred, similarity_terms

    wants_grads = "gradients" in outputs or "gradient_stats" in outputs
    if wants_grads and pm.loss is None:  # before anything is written
        raise ExtractionError(f"{checkpoint}: {pm.no_loss_reason}")
    meta = {"source": str(checkpoint), "probe": json.dumps(dict(probe), sort_keys=True), "model_kind": pm.kind}
    first = pm.batches[0]
    device = next(pm.model.parameters()).device

    def keep_activations(acts):
        """What the activations on probe batch 0 become: the stored activations and/or the
        similarity terms (the reference's own, when this is the reference, taken first)."""
        if "activations" in outputs:
            dtype = str(probe.get("activation_dtype", "float32"))
            write_tensors(_compact(acts, dtype, checkpoint), outputs["activations"], meta)
        if "similarity_terms" in outputs:
            itself = is_reference and reference is not None
            if itself and not reference:
                reference.update({n: Centred(a, device) for n, a in acts.items()})
            terms = similarity_terms(acts, reference or {}, device, itself=itself)
            write_tensors(terms, outputs["similarity_terms"], {**meta, "terms": ",".join(TERMS)})

    wants_acts = "activations" in outputs or "similarity_terms" in outputs
    # one forward serves the activations and the first gradient batch where they coincide
    shared = wants_acts and wants_grads and pm.loss_runs_first_forward
    if wants_acts and not shared:
        keep_activations(_activations(pm, targets, checkpoint))
    if wants_grads:
        mods = {c: pm.modules[c] for c in _chosen(targets, "gradients", pm.params, checkpoint)}
        stats = None
        if "gradient_stats" in outputs:
            stats = GradientStatistics(gradient_statistics, accumulator_dtype(device))
        each = stats.update if stats is not None else None
        loss, captured = pm.loss, {}
        if shared:
            acts_mods = _activation_modules(pm, targets, checkpoint)

            def loss(i):
                if i:
                    return pm.loss(i)
                with capturing(pm.model, acts_mods, pm.mask(first)) as got:
                    out = pm.loss(0)
                captured.update(got)
                return out

        raw = raw_gradients(pm.model, loss, len(pm.batches), mods, pm.transposed, each=each)
        if "gradients" in outputs:
            write_tensors(raw, outputs["gradients"], meta)  # one array held at a time
        else:
            for _ in raw:  # the statistics only: nothing leaves the device but them
                pass
        if shared:
            keep_activations(captured)
            captured.clear()
        if stats is not None:
            stats_meta = {
                **meta,
                "format": GRADIENT_STATS_FORMAT,
                "statistics": ",".join(stats.statistics),
                "n_batches": str(stats.k),
            }
            write_tensors(stats.result(), outputs["gradient_stats"], stats_meta)
    if "activation_gradients" in outputs:
        if not pm.n_outputs:
            raise ExtractionError(
                f"{checkpoint}: activation gradients need a model with several outputs (the two-forces MLP)"
            )
        mods = {c: pm.modules[c] for c in _chosen(targets, "activation_gradients", pm.modules, checkpoint)}
        write_tensors(
            output_gradients(pm.model, lambda: pm.forward(first), mods, pm.n_outputs),
            outputs["activation_gradients"],
            meta,
        )
    if "attentions" in outputs:
        if pm.attentions is None:
            raise ExtractionError(f"{checkpoint}: this model does not expose its attention probabilities")
        chosen = _chosen(targets, "attentions", pm.attention_modules, checkpoint)
        write_tensors(
            capture_attentions(lambda: pm.attentions(first, chosen), pm.mask(first)), outputs["attentions"], meta
        )


def extract_models(
    checkpoints: Sequence,
    targets: Mapping,
    probe: Mapping,
    outputs: Sequence[Mapping[str, str]],
    device=None,
    hf_config: Mapping | None = None,
    gradient_statistics: Sequence[str] | None = None,
    reference=None,
) -> None:
    """:func:`run_extractions` for a series of checkpoints of one model (``outputs[i]`` for
    ``checkpoints[i]``): the model and the probe are built once, from the first checkpoint.
    ``reference``: the checkpoint ``similarity_terms`` compare with (None: its checkpoint failed,
    the terms are NaN); its activations are captured first and held for the whole series (when it
    is one of the series, its weights are loaded once)."""
    import torch

    from ..sources.devices import pick_device

    if not checkpoints:
        return
    torch.manual_seed(0)
    dev = torch.device(device) if device is not None else pick_device()
    with naming_source(checkpoints[0]):
        pm = open_model(checkpoints[0], probe, dev, hf_config)
    order = list(range(len(checkpoints)))
    held = None
    if any("similarity_terms" in outs for outs in outputs):
        held = {}
        same = [i for i in order if reference is not None and str(checkpoints[i]) == str(reference)]
        order = same + [i for i in order if i not in same]  # the reference first: it fills ``held``
        if reference is not None and not same:  # another chunk's: its activations, once, first
            with naming_source(reference):
                pm.load(reference)
                held.update(reference_activations(pm, targets, reference))
    for i in order:
        checkpoint, outs = checkpoints[i], outputs[i]
        with naming_source(checkpoint):  # an error names the checkpoint, and its source file
            pm.load(checkpoint)
            is_ref = reference is not None and str(checkpoint) == str(reference)
            run_extractions(pm, checkpoint, targets, probe, outs, gradient_statistics, held, is_ref)


def reference_activations(pm: ProbedModel, targets: Mapping, checkpoint) -> dict:
    """The activation targets' outputs on probe batch 0 of the checkpoint whose weights ``pm``
    holds, centred in float64 on the model's device (:class:`.similarity.Centred`)."""
    from .similarity import Centred

    device = next(pm.model.parameters()).device
    return {n: Centred(a, device) for n, a in _activations(pm, targets, checkpoint).items()}


def _activations(pm: ProbedModel, targets: Mapping, checkpoint) -> dict:
    """The activation targets' outputs on probe batch 0 (float32 [rows, features], real tokens)."""
    from .capture import capture_outputs

    first = pm.batches[0]
    mods = _activation_modules(pm, targets, checkpoint)
    return capture_outputs(pm.model, lambda: pm.forward(first), mods, pm.mask(first))


def _activation_modules(pm: ProbedModel, targets: Mapping, checkpoint) -> dict[str, str]:
    """The activation targets: checkpoint name -> the model's module name."""
    return {c: pm.modules[c] for c in _chosen(targets, "activations", pm.modules, checkpoint)}


def extract_model(
    checkpoint,
    targets: Mapping,
    probe: Mapping,
    outputs: Mapping[str, str],
    device=None,
    hf_config: Mapping | None = None,
    gradient_statistics: Sequence[str] | None = None,
) -> None:
    """Activations, gradients, gradient statistics and/or activation gradients (whichever
    ``outputs`` names: kind -> path) of one checkpoint, from one model load. ``hf_config``: a
    Hugging Face config to build the model from, instead of the one in the checkpoint's metadata;
    ``gradient_statistics``: those a ``gradient_stats`` output keeps (default: all)."""
    extract_models([checkpoint], targets, probe, [outputs], device, hf_config, gradient_statistics)


def extract_chunk(
    src,
    outputs: Mapping[str, str],
    steps: Sequence[int],
    targets: Mapping,
    probe: Mapping,
    threads: int | None = None,
    gradient_statistics: Sequence[str] | None = None,
    reference=None,
) -> int:
    """A workflow job: the extractions ``outputs`` names (kind -> chunk folder) of the checkpoints
    ``steps`` in the chunk folder ``src``, from one model; a failed checkpoint's record is passed on
    to its outputs, and a failed ``reference`` makes the similarity terms NaN. Returns how many
    checkpoints were extracted (torch is imported only when one is; the process's allocator then
    keeps freed large blocks, :mod:`.allocator`)."""
    from pathlib import Path

    from ..store.failures import checkpoint_record, pass_on
    from ..store.layout import step_name

    todo = []  # (checkpoint, {kind: file}) of the steps that did not fail
    for step in steps:
        checkpoint = Path(src) / step_name(step)
        files = {kind: Path(folder) / step_name(step) for kind, folder in outputs.items()}
        if not pass_on([checkpoint], list(files.values())):
            todo.append((checkpoint, files))
    if todo:
        from .allocator import keep_freed_memory

        keep_freed_memory()  # each batch reuses the last one's freed blocks instead of faulting in new pages
        import torch

        if threads:
            torch.set_num_threads(threads)
        if reference is not None and checkpoint_record(reference) is not None:
            print(f"the final checkpoint {reference} failed: CKA to it is NaN")
            reference = None
        checkpoints, files = [c for c, _ in todo], [f for _, f in todo]
        extract_models(checkpoints, targets, probe, files, gradient_statistics=gradient_statistics, reference=reference)
    for folder in outputs.values():
        Path(folder).mkdir(parents=True, exist_ok=True)  # a chunk of failed steps only still has its folder
    return len(todo)
