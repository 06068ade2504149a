"""Activations and gradients of Hugging Face ``transformers`` models (GPT-NeoX/Pythia, GPT-2, BERT-style
encoders, ...), with the same contract as :func:`ckptlens.extract.extract_model` for the demo model.

    extract_hf(checkpoint, hf_config, targets, probe, {"activations": a.safetensors,
                                                       "gradients": g.safetensors})

Everything is offline: the model is built from its ``config.json`` content
(``AutoConfig.for_model``, ``AutoModel*.from_config``, eager attention, float32) and its weights are
loaded with ``load_state_dict`` from the checkpoint (a safetensors file of the full state dict, or any
file/folder :func:`ckptlens.checkpoint_io.open_checkpoint` reads — so pickles stay refused).

Model class and training objective (decided from the state dict and the config, in this order):

- a classification head in the state dict (``classifier.*``, or ``score.weight``) →
  ``AutoModelForSequenceClassification``; loss = cross-entropy against the probe's labels
  (mean squared error when ``num_labels == 1``);
- a causal LM (``architectures`` ending in ``ForCausalLM``/``LMHeadModel``, or a ``model_type`` that
  only has a causal-LM class, e.g. ``gpt_neox``, ``gpt2``) → ``AutoModelForCausalLM``; loss = mean
  next-token cross-entropy over the probe's real (non-padding) tokens;
- an encoder with its masked-LM head (``cls.predictions.*`` or ``lm_head.*``) →
  ``AutoModelForMaskedLM``; loss = masked-LM cross-entropy with a *deterministic* masking: in probe batch
  i, 15 % of the real, non-special tokens of each row (at least one) are replaced by the mask token,
  the positions drawn with ``numpy.random.default_rng([seed, i])``; no 80/10/10 rule. The mask token
  comes from the probe's tokenizer or ``probe["mask_token_id"]``. Activations are taken on the
  unmasked batch;
- anything else (a headless encoder such as the raw sentence-embedding MiniLM) → ``AutoModel``:
  activations only. It has no training objective of its own, and a loss through a randomly
  initialised head would not be a property of the checkpoint, so gradients are refused with an
  error that says so.

Naming: target patterns are matched (``ckptlens.patterns.select``) against the model's module names
*as the checkpoint names them* — the same names the weight extraction and the adapters use — and the
output keys use those names. ``transformers`` 5 names a few modules differently from published
checkpoints; the differences handled are:

- GPT-NeoX's output layer: ``embed_out`` in Pythia checkpoints, ``lm_head`` in transformers 5 (when
  the checkpoint says ``embed_out``, the module is called ``embed_out``);
- a checkpoint saved from the bare model (``h.0.attn...``, ``embeddings...``) loaded into a model with
  a head (``transformer.h.0.attn...``, ``bert.embeddings...``): the base-model prefix is dropped from
  the names, and added in the opposite case.

Loading is strict: a weight that the model needs and the checkpoint lacks is an error naming the file,
except buffers (rotary tables, position ids) and weights tied to one that is loaded (a tied LM head);
checkpoint tensors the model has no place for are reported in a warning (known buffers such as
GPT-NeoX's ``attention.bias``/``masked_bias`` and ``rotary_emb.inv_freq`` silently).

Outputs:

- activations: the output of each target module on probe batch 0 (eval mode, no dropout), flattened to
  [rows, features]; for outputs with a [batch, position] layout only the real (non-padding) token
  positions are kept, so the rows are the same set of tokens at every checkpoint;
- gradients: key ``"<module>#<i>"``, the gradient of the loss on probe batch i with respect to the
  module's ``weight``, computed in eval mode (dropout off, so a gradient is a deterministic function of
  the weights and the probe). GPT-2 ``Conv1D`` gradients are transposed to [out, in] like the weights
  the adapter yields.

Probe (``probe`` dict, see :func:`probe_batches`): ``tokens: ids.npy`` (int array [n, T]) or
``text: file.txt`` + ``tokenizer: folder`` (one sample per line, or ``label<TAB>text`` for a
classification model), ``seq_len``, ``batch_size``, ``n_batches``, ``seed``; ``labels: labels.npy`` for
token probes of a classification model.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .io import GRADIENT_SEP, save_tensors
from .patterns import select

CAUSAL_LM = "causal_lm"
SEQUENCE_CLASSIFICATION = "sequence_classification"
MASKED_LM = "masked_lm"
BASE = "base"

#: checkpoint tensors that are buffers of older transformers versions: dropped without a warning
_KNOWN_BUFFERS = (".attention.bias", ".attention.masked_bias", ".attn.bias", ".attn.masked_bias",
                  "inv_freq", "position_ids", "num_batches_tracked", "cos_cached", "sin_cached")

#: fraction of the real tokens masked per row for the masked-LM loss
MLM_FRACTION = 0.15

NO_LOSS = ("this checkpoint has no task head (no classifier.*, cls.predictions.*/lm_head.* or causal LM head), "
           "so it has no training loss: extract activations only, or fine-tune a head first")


class HFModelError(ValueError):
    """A checkpoint, config or probe that cannot be turned into a model run; the message names it."""


# --------------------------------------------------------------------------------------------- config
def hf_config_from_metadata(metadata: Mapping) -> dict:
    """The ``config.json`` content carried by a checkpoint's metadata: a save_pretrained folder's
    parsed config, or the safetensors metadata written by :func:`ckptlens.sources.importer.import_checkpoint`
    (non-string values JSON-encoded)."""
    from .adapters.base import decode_metadata

    # the importer's / safetensors' own entries are not part of config.json
    return decode_metadata(metadata, skip=lambda k: k.startswith("ckptlens_") or k == "format")


def model_kind(hf_config: Mapping, keys) -> str:
    """Which model class (and loss) a checkpoint gets; see the module docstring."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    keys = list(keys)
    if any(k.startswith("classifier.") for k in keys) or "score.weight" in keys:
        return SEQUENCE_CLASSIFICATION
    mt = hf_config.get("model_type")
    archs = hf_config.get("architectures") or []
    if any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in archs) or (
        mt in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and mt not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    ):
        return CAUSAL_LM
    if any(k.startswith(("cls.predictions.", "lm_head.")) for k in keys):
        return MASKED_LM
    return BASE


def _auto_class(kind: str):
    import transformers as tf

    return {
        CAUSAL_LM: tf.AutoModelForCausalLM,
        SEQUENCE_CLASSIFICATION: tf.AutoModelForSequenceClassification,
        MASKED_LM: tf.AutoModelForMaskedLM,
        BASE: tf.AutoModel,
    }[kind]


def _num_labels(keys, shapes) -> int | None:
    for k in ("classifier.weight", "classifier.out_proj.weight", "score.weight"):
        if k in shapes:
            return int(shapes[k][0])
    return None


# --------------------------------------------------------------------------------------------- names
class _Names:
    """Model module names -> checkpoint module names (see the module docstring)."""

    def __init__(self, model, ckpt_keys):
        model_keys = list(model.state_dict())
        ck = set(ckpt_keys)
        p = getattr(model, "base_model_prefix", "") or ""
        self.rename = {}
        if "embed_out.weight" in ck and "lm_head.weight" in model_keys and "lm_head.weight" not in ck:
            self.rename["lm_head"] = "embed_out"
        self.strip = self.add = None
        if p:
            model_has = any(k.startswith(p + ".") for k in model_keys)
            ckpt_has = any(k.startswith(p + ".") for k in ck)
            if model_has and not ckpt_has:
                self.strip = p
            elif not model_has and ckpt_has and all(k.startswith(p + ".") for k in ck):
                self.add = p

    def to_ckpt(self, name: str) -> str | None:
        for src, dst in self.rename.items():
            if name == src or name.startswith(src + "."):
                return dst + name[len(src):]
        if self.strip:
            if name == self.strip:
                return None  # the checkpoint's root
            if name.startswith(self.strip + "."):
                return name[len(self.strip) + 1:]
        if self.add:
            return f"{self.add}.{name}" if name else self.add
        return name

    def key_to_ckpt(self, key: str) -> str | None:
        mod, _, leaf = key.rpartition(".")
        if not mod:
            return key
        m = self.to_ckpt(mod)
        return None if m is None else f"{m}.{leaf}"


# --------------------------------------------------------------------------------------------- model
def load_hf_model(checkpoint, hf_config: Mapping | None = None, device=None):
    """``(model, names, kind)``: the model built offline from ``hf_config`` (default: the config in the
    checkpoint's metadata) with the checkpoint's weights, in eval mode on ``device`` (default CPU);
    ``names`` maps checkpoint module names to the model's own."""
    import torch

    from .checkpoint_io import open_checkpoint

    path = Path(checkpoint)
    with open_checkpoint(path) as ckpt:
        cfg = dict(hf_config) if hf_config else hf_config_from_metadata(ckpt.metadata)
        if not cfg.get("model_type"):
            raise HFModelError(
                f"{path}: no Hugging Face config (a 'model_type' key) given or found in the checkpoint's "
                "metadata; pass the model's config.json content as hf_config"
            )
        kind = model_kind(cfg, ckpt.keys)
        model = _build(cfg, kind, ckpt.keys, ckpt.shapes, path)
        names = _Names(model, ckpt.keys)
        model_sd = model.state_dict()
        to_model = {}
        for mk in model_sd:
            ck = names.key_to_ckpt(mk)
            if ck is not None:
                to_model[ck] = mk
        state, unexpected = {}, []
        for k in ckpt.keys:
            if k in to_model:
                state[to_model[k]] = torch.from_numpy(np.array(ckpt.get(k)))
            elif not k.endswith(_KNOWN_BUFFERS):
                unexpected.append(k)

    buffers = {n for n, _ in model.named_buffers()}
    missing = [k for k in model_sd if k not in state and k not in buffers]
    tied = getattr(model.config, "tie_word_embeddings", False)
    if tied:
        model.tie_weights()
        model_sd = model.state_dict()
        loaded_ptrs = {model_sd[k].data_ptr() for k in state}
        missing = [k for k in missing if model_sd[k].data_ptr() not in loaded_ptrs]
    if missing:
        raise HFModelError(
            f"{path}: {len(missing)} weights that {type(model).__name__} needs are not in the checkpoint "
            f"(e.g. {[names.key_to_ckpt(k) or k for k in missing[:5]]}); is the config the checkpoint's own "
            f"(model_type {cfg.get('model_type')!r})?"
        )
    if unexpected:
        warnings.warn(
            f"{path}: {len(unexpected)} checkpoint tensors have no place in {type(model).__name__} and are "
            f"ignored (e.g. {unexpected[:5]})", stacklevel=2,
        )
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        msg = " ".join(str(exc).split())[:600]
        raise HFModelError(f"{path}: weights do not fit {type(model).__name__} built from its config ({msg})") from None
    if tied:
        model.tie_weights()
    model.to(device or "cpu").eval()
    return model, {c: m for m, _ in model.named_modules() if m and (c := names.to_ckpt(m))}, kind


def _build(cfg: dict, kind: str, keys, shapes, path: Path):
    import torch
    from transformers import AutoConfig

    cfg = dict(cfg)
    model_type = cfg.pop("model_type")
    for k in ("_name_or_path", "transformers_version", "torch_dtype", "dtype"):
        cfg.pop(k, None)
    if kind == SEQUENCE_CLASSIFICATION:
        n = _num_labels(keys, shapes)
        if n is not None and len(cfg.get("id2label") or {}) != n:
            cfg.pop("id2label", None)
            cfg.pop("label2id", None)
            cfg["num_labels"] = n
    try:
        config = AutoConfig.for_model(model_type, **cfg)
    except (ValueError, KeyError, TypeError) as exc:
        raise HFModelError(f"{path}: cannot build a transformers config for model_type {model_type!r} ({exc})") from exc
    cls = _auto_class(kind)
    try:
        from transformers.initialization import no_init_weights  # weights are loaded next: skip random init
    except ImportError:  # pragma: no cover  (older transformers)
        import contextlib

        no_init_weights = contextlib.nullcontext
    try:
        with no_init_weights():
            model = cls.from_config(config, attn_implementation="eager")
    except (ValueError, KeyError, TypeError) as exc:
        raise HFModelError(f"{path}: transformers has no {cls.__name__} for model_type {model_type!r} ({exc})") from exc
    return model.to(torch.float32)  # the config's torch_dtype (float16 for Pythia) is not used: float32


# --------------------------------------------------------------------------------------------- probe
def _indices(n: int, batch_size: int, n_batches: int, seed: int, what: str) -> list[np.ndarray]:
    """Batch i of a probe set of n samples: disjoint slices of one seeded permutation when the set is
    large enough, else an independent seeded sample (without replacement) per batch."""
    if batch_size > n:
        raise HFModelError(f"{what}: batch_size {batch_size} is larger than the probe set ({n} samples)")
    rng = np.random.default_rng(seed)
    if n >= batch_size * n_batches:
        order = rng.permutation(n)
        return [order[i * batch_size:(i + 1) * batch_size] for i in range(n_batches)]
    return [rng.choice(n, batch_size, replace=False) for _ in range(n_batches)]


def _read_lines(path: Path) -> list[str]:
    try:
        lines = [ln.rstrip("\r\n") for ln in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise HFModelError(f"{path}: cannot read the probe text ({exc})") from exc
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        raise HFModelError(f"{path}: the probe text has no non-empty line")
    return lines


def _parse_label(raw: str, label2id: Mapping | None, where: str) -> int:
    raw = raw.strip()
    if label2id and raw in label2id:
        return int(label2id[raw])
    try:
        return int(raw)
    except ValueError:
        known = f" (known labels: {sorted(label2id)})" if label2id else ""
        raise HFModelError(f"{where}: label {raw!r} is neither an integer nor a label name{known}") from None


def load_tokenizer(tokenizer_dir):
    """A tokenizer saved in a local folder (``AutoTokenizer``, offline)."""
    from transformers import AutoTokenizer

    d = Path(tokenizer_dir)
    if not d.is_dir():
        raise HFModelError(f"{d}: tokenizer folder does not exist")
    try:
        tok = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
    except Exception as exc:  # OSError, ValueError, ...: name the folder
        raise HFModelError(f"{d}: cannot load a tokenizer from this folder ({type(exc).__name__}: {exc})") from exc
    if tok.pad_token is None:  # GPT-NeoX/GPT-2 tokenizers: pad with EOS (padded positions are masked anyway)
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def probe_batches(probe: Mapping, tokenizer_dir=None, label2id: Mapping | None = None) -> list[dict]:
    """The probe batches, as CPU tensors: ``input_ids`` and ``attention_mask`` [batch, T] (plus
    ``token_type_ids`` if the tokenizer makes them, and ``labels`` [batch] when the probe has labels).

    ``probe`` keys: ``tokens`` (an .npy int array [n, T]) or ``text`` (a UTF-8 file, one sample per
    line; ``label<TAB>text`` lines when every line has a tab, unless ``text_format: plain``) with
    ``tokenizer`` (a local folder; or ``tokenizer_dir``); ``seq_len`` (text: pad/truncate to it, default
    64; tokens: truncate to it); ``labels`` (an .npy int array [n], for token probes); ``batch_size``,
    ``n_batches``, ``seed`` (batch i is a fixed, seeded selection of the probe set, see ``_indices``).
    Label names are mapped through ``label2id`` (a config's), integers are used as they are."""
    import torch

    if ("tokens" in probe) == ("text" in probe):
        raise HFModelError(f"probe {dict(probe)!r}: give exactly one of 'tokens' (an .npy file) or 'text' (a .txt file)")
    bs, nb, seed = int(probe.get("batch_size", 8)), int(probe.get("n_batches", 4)), int(probe.get("seed", 0))
    seq_len = probe.get("seq_len")
    labels = None
    if "tokens" in probe:
        path = Path(probe["tokens"])
        try:
            ids = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise HFModelError(f"{path}: cannot read the probe tokens ({exc})") from exc
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise HFModelError(f"{path}: probe tokens must be an integer array [n, T], got {ids.dtype} {ids.shape}")
        if seq_len:
            ids = ids[:, : int(seq_len)]
        enc = {"input_ids": ids.astype(np.int64), "attention_mask": np.ones_like(ids, dtype=np.int64)}
        if probe.get("labels"):
            lpath = Path(probe["labels"])
            try:
                labels = np.load(lpath, allow_pickle=False).astype(np.int64).reshape(-1)
            except (OSError, ValueError) as exc:
                raise HFModelError(f"{lpath}: cannot read the probe labels ({exc})") from exc
            if len(labels) != len(ids):
                raise HFModelError(f"{lpath}: {len(labels)} labels for {len(ids)} probe samples in {path}")
        where = str(path)
    else:
        path = Path(probe["text"])
        lines = _read_lines(path)
        fmt = probe.get("text_format", "auto")
        if fmt not in ("auto", "plain", "label_text"):
            raise HFModelError(f"probe text_format {fmt!r}: expected auto, plain or label_text")
        labelled = fmt == "label_text" or (fmt == "auto" and all("\t" in ln for ln in lines))
        if labelled:
            pairs = [ln.split("\t", 1) for ln in lines]
            if any(len(p) != 2 for p in pairs):
                raise HFModelError(f"{path}: text_format label_text needs 'label<TAB>text' on every line")
            labels = np.array([_parse_label(lab, label2id, f"{path} line {i + 1}") for i, (lab, _) in enumerate(pairs)])
            texts = [t for _, t in pairs]
        else:
            texts = lines
        tdir = probe.get("tokenizer") or tokenizer_dir
        if not tdir:
            raise HFModelError(f"probe text {path}: needs a 'tokenizer' folder to tokenize it")
        tok = load_tokenizer(tdir)
        out = tok(texts, padding="max_length", truncation=True, max_length=int(seq_len or 64), return_tensors="np")
        enc = {k: np.asarray(v, dtype=np.int64) for k, v in out.items()
               if k in ("input_ids", "attention_mask", "token_type_ids")}
        where = str(path)
    batches = []
    for idx in _indices(len(enc["input_ids"]), bs, nb, seed, where):
        b = {k: torch.from_numpy(v[idx].copy()) for k, v in enc.items()}
        if labels is not None:
            b["labels"] = torch.from_numpy(labels[idx].copy())
        batches.append(b)
    return batches


def _mask_for_mlm(batch: dict, i: int, seed: int, mask_id: int, special_ids) -> dict:
    """A copy of ``batch`` with 15 % of each row's real, non-special tokens replaced by ``mask_id`` and
    ``mlm_labels`` (-100 elsewhere), the positions drawn from ``default_rng([seed, i])``."""
    import torch

    ids = batch["input_ids"].clone()
    real = batch["attention_mask"].bool()
    if special_ids:
        real &= ~torch.isin(ids, torch.tensor(sorted(special_ids), dtype=ids.dtype))
    else:  # no tokenizer: spare the first and last real token ([CLS], [SEP])
        lengths = batch["attention_mask"].sum(1)
        real[:, 0] = False
        real[torch.arange(len(ids)), (lengths - 1).clamp(min=0)] = False
    rng = np.random.default_rng([seed, i])
    labels = torch.full_like(ids, -100)
    for r in range(len(ids)):
        cand = torch.nonzero(real[r]).flatten().numpy()
        if len(cand) == 0:
            continue
        k = max(1, int(round(MLM_FRACTION * len(cand))))
        pos = torch.from_numpy(np.sort(rng.choice(cand, k, replace=False)))
        labels[r, pos] = ids[r, pos]
        ids[r, pos] = mask_id
    return {**batch, "input_ids": ids, "mlm_labels": labels}


# --------------------------------------------------------------------------------------------- run
def _model_inputs(model, batch: dict, device) -> dict:
    import inspect

    accepted = set(inspect.signature(model.forward).parameters)
    return {k: v.to(device) for k, v in batch.items()
            if k in ("input_ids", "attention_mask", "token_type_ids") and k in accepted}


def loss_fn(model, kind: str, batch: dict, device=None):
    """The training loss of ``model`` on one probe batch (see the module docstring)."""
    import torch.nn.functional as F

    if kind == BASE:
        raise HFModelError(NO_LOSS)
    device = device or next(model.parameters()).device
    logits = model(**_model_inputs(model, batch, device)).logits
    if kind == CAUSAL_LM:
        targets = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100).to(device)
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                               targets[:, 1:].reshape(-1), ignore_index=-100)
    if kind == SEQUENCE_CLASSIFICATION:
        if "labels" not in batch:
            raise HFModelError("a classification model needs labels in its probe ('label<TAB>text' lines or 'labels: x.npy')")
        y = batch["labels"].to(device)
        if logits.shape[-1] == 1:
            return F.mse_loss(logits.squeeze(-1).float(), y.float())
        return F.cross_entropy(logits.float(), y)
    if kind == MASKED_LM:
        y = batch["mlm_labels"].to(device)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1), ignore_index=-100)
    raise HFModelError(f"unknown model kind {kind!r}")


def hf_activations(model, batch: dict, modules: Mapping[str, str], device=None) -> dict[str, np.ndarray]:
    """``{checkpoint name: output}`` of the modules (``{checkpoint name: model name}``) on one batch;
    [batch, position, ...] outputs keep only the real (attention_mask == 1) positions."""
    import torch

    device = device or next(model.parameters()).device
    all_mods = dict(model.named_modules())
    mask = batch["attention_mask"].bool()
    captured: dict[str, np.ndarray] = {}

    def hook(name):
        def fn(_module, _inp, out):
            if isinstance(out, (tuple, list)):
                out = out[0]
            elif hasattr(out, "to_tuple"):
                out = out.to_tuple()[0]
            if not isinstance(out, torch.Tensor):
                raise HFModelError(f"module {name}: its output is a {type(out).__name__}, not a tensor")
            out = out.detach().float().cpu()
            if out.dim() >= 3 and tuple(out.shape[:2]) == tuple(mask.shape):
                out = out[mask]
            captured[name] = out.reshape(-1, out.shape[-1]).numpy()

        return fn

    hooks = [all_mods[m].register_forward_hook(hook(c)) for c, m in modules.items()]
    try:
        with torch.no_grad():
            model(**_model_inputs(model, batch, device))
    finally:
        for h in hooks:
            h.remove()
    return captured


def hf_gradients(model, kind: str, batches, modules: Mapping[str, str], device=None) -> dict[str, np.ndarray]:
    """``{"<checkpoint name>#<i>": d loss_i / d weight}`` for the modules on each batch (eval mode)."""
    from transformers.pytorch_utils import Conv1D

    all_mods = dict(model.named_modules())
    params = dict(model.named_parameters())
    keys = {}
    for c, m in modules.items():
        key = f"{m}.weight" if f"{m}.weight" in params else m
        if key not in params:
            raise HFModelError(f"module {c} has no weight parameter to take a gradient of")
        keys[c] = key
    old = {n: p.requires_grad for n, p in params.items()}
    for n, p in params.items():
        p.requires_grad_(n in set(keys.values()))
    out = {}
    model.eval()
    try:
        for i, batch in enumerate(batches):
            model.zero_grad(set_to_none=True)
            loss_fn(model, kind, batch, device).backward()
            for c, key in keys.items():
                g = params[key].grad
                if g is None:
                    raise HFModelError(f"module {c} gets no gradient from the {kind} loss")
                g = g.detach().float().cpu()
                mod = all_mods.get(key.rpartition(".")[0])
                if isinstance(mod, Conv1D):
                    g = g.T
                out[f"{c}{GRADIENT_SEP}{i}"] = g.contiguous().numpy()
    finally:
        model.zero_grad(set_to_none=True)
        for n, p in params.items():
            p.requires_grad_(old[n])
    return out


def extract_hf(checkpoint_path, hf_config: Mapping | None, targets: Mapping, probe: Mapping,
               outputs: Mapping[str, str], device=None) -> None:
    """Activations and/or gradients (whichever ``outputs`` names) of one Hugging Face checkpoint, one
    model load; see the module docstring. ``hf_config=None``: the config in the checkpoint's metadata."""
    import torch

    from .devices import pick_device

    torch.manual_seed(0)
    dev = torch.device(device) if device is not None else pick_device()
    model, names, kind = load_hf_model(checkpoint_path, hf_config, dev)
    label2id = getattr(model.config, "label2id", None) if kind == SEQUENCE_CLASSIFICATION else None
    batches = probe_batches(probe, label2id=label2id)
    if kind == MASKED_LM:
        tok = load_tokenizer(probe["tokenizer"]) if probe.get("tokenizer") else None
        mask_id = probe.get("mask_token_id", tok.mask_token_id if tok is not None else None)
        if mask_id is None:
            raise HFModelError(f"{checkpoint_path}: a masked-LM probe needs a tokenizer with a mask token or 'mask_token_id'")
        special = set(tok.all_special_ids) if tok is not None else set()
        seed = int(probe.get("seed", 0))
        grad_batches = [_mask_for_mlm(b, i, seed, int(mask_id), special) for i, b in enumerate(batches)]
    else:
        grad_batches = batches
    meta = {"source": str(checkpoint_path), "probe": json.dumps(dict(probe), sort_keys=True), "hf_kind": kind}
    available = list(names)
    if "gradients" in outputs and kind == BASE:  # before anything is written
        raise HFModelError(f"{checkpoint_path}: {NO_LOSS}")
    if "activations" in outputs:
        sel = select(targets.get("activations", []), available)
        if not sel:
            raise HFModelError(f"{checkpoint_path}: no module matches the activation targets {list(targets.get('activations', []))}")
        acts = hf_activations(model, batches[0], {c: names[c] for c in sel}, dev)
        save_tensors(acts, outputs["activations"], meta)
    if "gradients" in outputs:
        sel = select(targets.get("gradients", []), available)
        if not sel:
            raise HFModelError(f"{checkpoint_path}: no module matches the gradient targets {list(targets.get('gradients', []))}")
        grads = hf_gradients(model, kind, grad_batches, {c: names[c] for c in sel}, dev)
        save_tensors(grads, outputs["gradients"], meta)
