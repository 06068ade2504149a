"""Hugging Face ``transformers`` models (GPT-NeoX/Pythia, GPT-2, BERT-style encoders, ...) built
offline from a checkpoint, with their probe batches and training loss: what
:func:`ckptlens.extract.model.extract_model` runs to capture activations and gradients.

Everything is offline: the model is built from its ``config.json`` content
(``AutoConfig.for_model``, ``AutoModel*.from_config``, eager attention, float32) and its weights are
loaded with ``load_state_dict`` from the checkpoint (a safetensors file of the full state dict, or any
file/folder :func:`ckptlens.sources.readers.open_checkpoint` reads — so pickles stay refused).

Model class and training objective (decided from the state dict and the config, in this order):

- a classification head in the state dict (``classifier.*``, or ``score.weight``) →
  ``AutoModelForSequenceClassification``; loss = cross-entropy against the probe's labels
  (mean squared error when ``num_labels == 1``);
- a causal LM (``architectures`` ending in ``ForCausalLM``/``LMHeadModel``, or a ``model_type`` that
  only has a causal-LM class, e.g. ``gpt_neox``, ``gpt2``) → ``AutoModelForCausalLM``; loss = mean
  next-token cross-entropy over the probe's real (non-padding) tokens;
- an encoder with its masked-LM head (``cls.predictions.*`` or ``lm_head.*``; ModernBERT's ``head.*`` with
  ``decoder.*``) →
  ``AutoModelForMaskedLM``; loss = masked-LM cross-entropy with a *deterministic* masking: in probe batch
  i, 15 % of the real, non-special tokens of each row (at least one) are replaced by the mask token,
  the positions drawn with ``numpy.random.default_rng([seed, i])``; no 80/10/10 rule. The mask token
  comes from the probe's tokenizer or ``probe["mask_token_id"]``. Activations are taken on the
  unmasked batch;
- anything else (a headless encoder such as the raw sentence-embedding MiniLM) → ``AutoModel``:
  activations only. It has no training objective of its own, and a loss through a randomly
  initialised head would not be a property of the checkpoint, so gradients are refused with an
  error that says so.

Naming: target patterns are matched (``ckptlens.store.patterns.select``) against the model's module names
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

Vision models (ViT, CLIP's vision tower; a ``classifier.*`` head on a ``model_type`` with an image
classification class → ``AutoModelForImageClassification``, cross-entropy on the probe's labels) read an
image probe (``images:``, :mod:`ckptlens.extract.images`); an image probe on a model that reads tokens,
or a token probe on one that reads images, is an error naming the probe key. A full CLIP model runs
its vision tower only. ``transformers`` 5 saves ViT weights under other names than it builds
(``encoder.layer.0.attention.attention.query`` for ``layers.0.attention.q_proj``): the checkpoint's
names are used throughout, mapped through transformers' own conversion table
(:func:`_saved_names`).

Probe (``probe`` dict, see :func:`probe_batches`): ``tokens: ids.npy`` (int array [n, T]) or
``text: file.txt`` + ``tokenizer: folder`` (one sample per line, or ``label<TAB>text`` for a
classification model), ``seq_len``, ``batch_size``, ``n_batches``, ``seed``; ``labels: labels.npy`` for
token probes of a classification model.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..store.requires import require
from .probed import ExtractionError, ModelFamily, ProbedModel, _indices

CAUSAL_LM = "causal_lm"
SEQUENCE_CLASSIFICATION = "sequence_classification"
IMAGE_CLASSIFICATION = "image_classification"
MASKED_LM = "masked_lm"
BASE = "base"

#: checkpoint tensors that are buffers of older transformers versions: dropped without a warning
_KNOWN_BUFFERS = (
    ".attention.bias",
    ".attention.masked_bias",
    ".attn.bias",
    ".attn.masked_bias",
    "inv_freq",
    "position_ids",
    "num_batches_tracked",
    "cos_cached",
    "sin_cached",
)

#: fraction of the real tokens masked per row for the masked-LM loss
MLM_FRACTION = 0.15

NO_LOSS = (
    "this checkpoint has no task head (no classifier.*, cls.predictions.*/lm_head.* or causal LM head), "
    "so it has no training loss: extract activations only, or fine-tune a head first"
)


def _transformers():
    """``transformers``, or one line saying it is missing and how to install it (before any work)."""
    return require("transformers", "building a Hugging Face model for activations, gradients or attentions")


# --------------------------------------------------------------------------------------------- config
def hf_config_from_metadata(metadata: Mapping) -> dict:
    """The ``config.json`` content carried by a checkpoint's metadata: a save_pretrained folder's
    parsed config, or the safetensors metadata written by :func:`ckptlens.sources.importer.import_checkpoint`
    (non-string values JSON-encoded)."""
    from ..adapters.base import decode_metadata

    # the importer's / safetensors' own entries are not part of config.json
    return decode_metadata(metadata, skip=lambda k: k.startswith("ckptlens_") or k == "format")


def model_kind(hf_config: Mapping, keys) -> str:
    """Which model class (and loss) a checkpoint gets; see the module docstring."""
    _transformers()
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    )

    keys = list(keys)
    mt = hf_config.get("model_type")
    if any(k.startswith("classifier.") for k in keys) or "score.weight" in keys:
        if (
            mt in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES
            and mt not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
        ):
            return IMAGE_CLASSIFICATION
        return SEQUENCE_CLASSIFICATION
    archs = hf_config.get("architectures") or []
    if any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in archs) or (
        mt in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and mt not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    ):
        return CAUSAL_LM
    if any(k.startswith(("cls.predictions.", "lm_head.")) for k in keys) or _modernbert_mlm_head(keys):
        return MASKED_LM
    return BASE


def _modernbert_mlm_head(keys) -> bool:
    """ModernBERT's masked-LM head: ``head.dense``/``head.norm`` and ``decoder`` beside ``model.*``."""
    ks = set(keys)
    return "head.dense.weight" in ks and ("decoder.weight" in ks or "decoder.bias" in ks)


def _auto_class(kind: str):
    tf = _transformers()

    return {
        CAUSAL_LM: tf.AutoModelForCausalLM,
        SEQUENCE_CLASSIFICATION: tf.AutoModelForSequenceClassification,
        IMAGE_CLASSIFICATION: tf.AutoModelForImageClassification,
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
        ck = set(ckpt_keys)
        p = getattr(model, "base_model_prefix", "") or ""
        # model key -> the name transformers saves it under, where the checkpoint uses those names
        # (asked only where a weight's own name is not in the checkpoint: reverting transformers'
        # conversions can copy tensors, e.g. a mixture of experts' merged weights)
        own = list(model.state_dict())

        def present(k):
            return k in ck or (p and (f"{p}.{k}" in ck or (k.startswith(p + ".") and k[len(p) + 1 :] in ck)))

        self.saved = {} if all(map(present, own)) else _saved_names(model)
        if self.saved and sum(map(present, self.saved.values())) <= sum(map(present, self.saved)):
            self.saved = {}  # the checkpoint has the model's own names
        model_keys = [self.saved.get(k, k) for k in own]
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
        self.modules = _saved_modules(model, self.saved) if self.saved else {}

    def _prefixed(self, name: str) -> str | None:
        for src, dst in self.rename.items():
            if name == src or name.startswith(src + "."):
                return dst + name[len(src) :]
        if self.strip:
            if name == self.strip:
                return None  # the checkpoint's root
            if name.startswith(self.strip + "."):
                return name[len(self.strip) + 1 :]
        if self.add:
            return f"{self.add}.{name}" if name else self.add
        return name

    def to_ckpt(self, name: str) -> str | None:
        if self.saved and name in self.modules:  # transformers 5 builds other names than it saves (ViT)
            name = self.modules[name]
        return self._prefixed(name)

    def key_to_ckpt(self, key: str) -> str | None:
        if key in self.saved:
            return self._prefixed(self.saved[key])
        mod, _, leaf = key.rpartition(".")
        if not mod:
            return key
        m = self._prefixed(mod)
        return None if m is None else f"{m}.{leaf}"


def _saved_names(model) -> dict[str, str]:
    """{model key: saved key} where transformers saves a weight under another name than the one
    its model has (its checkpoint conversion mapping reversed, e.g. ViT's
    ``layers.0.attention.q_proj`` saved as ``encoder.layer.0.attention.attention.query``); {} where
    every name is saved as it is."""
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # pragma: no cover  (transformers < 5)
        return {}
    sd = model.state_dict()
    try:
        saved = revert_weight_conversion(model, dict(sd))
    except Exception:  # pragma: no cover  (a conversion that needs more than renames)
        return {}
    ids = {id(v): k for k, v in sd.items()}
    out = {ids[id(v)]: k for k, v in saved.items() if id(v) in ids and ids[id(v)] != k}
    return out


def _saved_modules(model, saved: Mapping[str, str]) -> dict[str, str]:
    """{model module: saved module name}: a module is the longest common dotted prefix of its
    parameters' saved names (ViT's ``layers.0.attention`` -> ``encoder.layer.0.attention``, the
    parent of ``attention.query`` and ``output.dense``); where two modules get one saved name the
    outer one keeps it (its output is the saved module's). Modules without parameters are left out."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for name, module in model.named_modules():  # outer modules first
        keys = [f"{name}.{k}" if name else k for k in module.state_dict()]
        if not name or not keys:
            continue
        parts = [saved.get(k, k).split(".")[:-1] for k in keys]
        common = []
        for level in zip(*parts):
            if len(set(level)) > 1:
                break
            common.append(level[0])
        target = ".".join(common)
        if target and target not in taken:
            out[name] = target
            taken.add(target)
    return out


# --------------------------------------------------------------------------------------------- model
class HFModel:
    """A transformers model built offline from a config (default: the one in the checkpoint's
    metadata), in eval mode on ``device``; :meth:`load` puts a checkpoint's weights into it, so that
    a series of checkpoints of one model is built once. ``names`` maps checkpoint module names to
    the model's own; ``kind`` is the model class (see :func:`model_kind`)."""

    def __init__(self, checkpoint, hf_config: Mapping | None = None, device=None):
        from ..sources.readers import open_checkpoint

        _transformers()  # checked before the checkpoint is read
        path = Path(checkpoint)
        with open_checkpoint(path) as ckpt:
            cfg = dict(hf_config) if hf_config else hf_config_from_metadata(ckpt.metadata)
            if not cfg.get("model_type"):
                raise ExtractionError(
                    f"{path}: no Hugging Face config (a 'model_type' key) given or found in the checkpoint's "
                    "metadata; pass the model's config.json content as hf_config"
                )
            self.config_dict, self.kind = cfg, model_kind(cfg, ckpt.keys)
            self.keys = list(ckpt.keys)
            self.model = _build(cfg, self.kind, ckpt.keys, ckpt.shapes, path)
            self._names = _Names(self.model, ckpt.keys)
        self.device = device or "cpu"
        self.model.to(self.device).eval()
        self.names = {c: m for m, _ in self.model.named_modules() if m and (c := self._names.to_ckpt(m))}

    def load(self, checkpoint) -> None:
        """The weights of ``checkpoint`` (strict: every weight the model needs must be there)."""
        import torch

        from ..sources.readers import open_checkpoint

        path, model, names = Path(checkpoint), self.model, self._names
        model_sd = model.state_dict()
        to_model = {}
        for mk in model_sd:
            ck = names.key_to_ckpt(mk)
            if ck is not None:
                to_model[ck] = mk
        with open_checkpoint(path) as ckpt:
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
            loaded_ptrs = {model_sd[k].data_ptr() for k in state if k in model_sd}
            missing = [k for k in missing if model_sd[k].data_ptr() not in loaded_ptrs]
        if missing:
            raise ExtractionError(
                f"{path}: {len(missing)} weights that {type(model).__name__} needs are not in the checkpoint "
                f"(e.g. {[names.key_to_ckpt(k) or k for k in missing[:5]]}); is the config the checkpoint's own "
                f"(model_type {self.config_dict.get('model_type')!r})?"
            )
        if unexpected:
            warnings.warn(
                f"{path}: {len(unexpected)} checkpoint tensors have no place in {type(model).__name__} and are "
                f"ignored (e.g. {unexpected[:5]})",
                stacklevel=2,
            )
        try:
            model.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            msg = " ".join(str(exc).split())[:600]
            raise ExtractionError(
                f"{path}: weights do not fit {type(model).__name__} built from its config ({msg})"
            ) from None
        if tied:
            model.tie_weights()
        model.to(self.device).eval()

    def attention_modules(self) -> list[str]:
        """The attention modules (checkpoint names) in depth order: one per layer, the order of the
        model's ``output_attentions``."""
        from ..adapters import get_adapter
        from ..store.layers import layer_order

        adapter = get_adapter("auto", self.keys, {"config": self.config_dict})
        return layer_order(adapter.attention_modules(self.keys))

    def transposed(self, module: str) -> bool:
        """Whether a module stores its weight [in, out] (GPT-2's Conv1D): gradients are transposed
        to [out, in], like the weights the adapter yields."""
        from transformers.pytorch_utils import Conv1D

        return isinstance(dict(self.model.named_modules()).get(module), Conv1D)


def load_hf_model(checkpoint, hf_config: Mapping | None = None, device=None):
    """``(model, names, kind)``: the model built offline from ``hf_config`` (default: the config in the
    checkpoint's metadata) with the checkpoint's weights, in eval mode on ``device`` (default CPU);
    ``names`` maps checkpoint module names to the model's own."""
    hf = HFModel(checkpoint, hf_config, device)
    hf.load(checkpoint)
    return hf.model, hf.names, hf.kind


def _build(cfg: dict, kind: str, keys, shapes, path: Path):
    import torch
    from transformers import AutoConfig

    cfg = dict(cfg)
    model_type = cfg.pop("model_type")
    for k in ("_name_or_path", "transformers_version", "torch_dtype", "dtype"):
        cfg.pop(k, None)
    if kind in (SEQUENCE_CLASSIFICATION, IMAGE_CLASSIFICATION):
        n = _num_labels(keys, shapes)
        if n is not None and len(cfg.get("id2label") or {}) != n:
            cfg.pop("id2label", None)
            cfg.pop("label2id", None)
            cfg["num_labels"] = n
    try:
        config = AutoConfig.for_model(model_type, **cfg)
    except (ValueError, KeyError, TypeError) as exc:
        raise ExtractionError(
            f"{path}: cannot build a transformers config for model_type {model_type!r} ({exc})"
        ) from exc
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
        raise ExtractionError(
            f"{path}: transformers has no {cls.__name__} for model_type {model_type!r} ({exc})"
        ) from exc
    return model.to(torch.float32)  # the config's torch_dtype (float16 for Pythia) is not used: float32


# --------------------------------------------------------------------------------------------- probe
def _read_lines(path: Path) -> list[str]:
    try:
        lines = [ln.rstrip("\r\n") for ln in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ExtractionError(f"{path}: cannot read the probe text ({exc})") from exc
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        raise ExtractionError(f"{path}: the probe text has no non-empty line")
    return lines


def _parse_label(raw: str, label2id: Mapping | None, where: str) -> int:
    raw = raw.strip()
    if label2id and raw in label2id:
        return int(label2id[raw])
    try:
        return int(raw)
    except ValueError:
        known = f" (known labels: {sorted(label2id)})" if label2id else ""
        raise ExtractionError(f"{where}: label {raw!r} is neither an integer nor a label name{known}") from None


def load_tokenizer(tokenizer_dir):
    """A tokenizer saved in a local folder (``AutoTokenizer``, offline)."""
    AutoTokenizer = require("transformers", "tokenizing the probe text").AutoTokenizer

    d = Path(tokenizer_dir)
    if not d.is_dir():
        raise ExtractionError(f"{d}: tokenizer folder does not exist")
    try:
        tok = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
    except Exception as exc:  # OSError, ValueError, ...: name the folder
        raise ExtractionError(f"{d}: cannot load a tokenizer from this folder ({type(exc).__name__}: {exc})") from exc
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
        raise ExtractionError(
            f"probe {dict(probe)!r}: give exactly one of 'tokens' (an .npy file) or 'text' (a .txt file)"
        )
    bs, nb, seed = int(probe.get("batch_size", 8)), int(probe.get("n_batches", 4)), int(probe.get("seed", 0))
    seq_len = probe.get("seq_len")
    labels = None
    if "tokens" in probe:
        path = Path(probe["tokens"])
        try:
            ids = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ExtractionError(f"{path}: cannot read the probe tokens ({exc})") from exc
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ExtractionError(f"{path}: probe tokens must be an integer array [n, T], got {ids.dtype} {ids.shape}")
        if seq_len:
            ids = ids[:, : int(seq_len)]
        enc = {"input_ids": ids.astype(np.int64), "attention_mask": np.ones_like(ids, dtype=np.int64)}
        if probe.get("labels"):
            lpath = Path(probe["labels"])
            try:
                labels = np.load(lpath, allow_pickle=False).astype(np.int64).reshape(-1)
            except (OSError, ValueError) as exc:
                raise ExtractionError(f"{lpath}: cannot read the probe labels ({exc})") from exc
            if len(labels) != len(ids):
                raise ExtractionError(f"{lpath}: {len(labels)} labels for {len(ids)} probe samples in {path}")
        where = str(path)
    else:
        path = Path(probe["text"])
        lines = _read_lines(path)
        fmt = probe.get("text_format", "auto")
        if fmt not in ("auto", "plain", "label_text"):
            raise ExtractionError(f"probe text_format {fmt!r}: expected auto, plain or label_text")
        labelled = fmt == "label_text" or (fmt == "auto" and all("\t" in ln for ln in lines))
        if labelled:
            pairs = [ln.split("\t", 1) for ln in lines]
            if any(len(p) != 2 for p in pairs):
                raise ExtractionError(f"{path}: text_format label_text needs 'label<TAB>text' on every line")
            labels = np.array([_parse_label(lab, label2id, f"{path} line {i + 1}") for i, (lab, _) in enumerate(pairs)])
            texts = [t for _, t in pairs]
        else:
            texts = lines
        tdir = probe.get("tokenizer") or tokenizer_dir
        if not tdir:
            raise ExtractionError(f"probe text {path}: needs a 'tokenizer' folder to tokenize it")
        tok = load_tokenizer(tdir)
        out = tok(texts, padding="max_length", truncation=True, max_length=int(seq_len or 64), return_tensors="np")
        enc = {
            k: np.asarray(v, dtype=np.int64)
            for k, v in out.items()
            if k in ("input_ids", "attention_mask", "token_type_ids")
        }
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
    return {
        k: v.to(device)
        for k, v in batch.items()
        if k in ("input_ids", "attention_mask", "token_type_ids", "pixel_values") and k in accepted
    }


def loss_fn(model, kind: str, batch: dict, device=None):
    """The training loss of ``model`` on one probe batch (see the module docstring)."""
    import torch.nn.functional as F

    if kind == BASE:
        raise ExtractionError(NO_LOSS)
    device = device or next(model.parameters()).device
    logits = model(**_model_inputs(model, batch, device)).logits
    if kind == CAUSAL_LM:
        targets = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100).to(device)
        return F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]).float(), targets[:, 1:].reshape(-1), ignore_index=-100
        )
    if kind in (SEQUENCE_CLASSIFICATION, IMAGE_CLASSIFICATION):
        if "labels" not in batch:
            raise ExtractionError(
                "a classification model needs labels in its probe ('label<TAB>text' lines, 'labels: x.npy', "
                "or a folder of images with one sub-folder per class)"
            )
        y = batch["labels"].to(device)
        if logits.shape[-1] == 1:
            return F.mse_loss(logits.squeeze(-1).float(), y.float())
        return F.cross_entropy(logits.float(), y)
    if kind == MASKED_LM:
        y = batch["mlm_labels"].to(device)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1), ignore_index=-100)
    raise ExtractionError(f"unknown model kind {kind!r}")


def _forward_params(module) -> set[str]:
    import inspect

    return set(inspect.signature(module.forward).parameters)


def _image_runner(model):
    """What an image batch runs through: the model, or a text-and-image model's vision tower (CLIP)."""
    accepted = _forward_params(model)
    if "input_ids" in accepted and hasattr(model, "vision_model"):
        return model.vision_model
    return model


def check_probe_fits(model, probe: Mapping, checkpoint, model_type) -> bool:
    """Whether the probe is an image probe; an error naming the key where its kind does not fit the
    model (images for a model that reads tokens, tokens/text for a vision model)."""
    from .images import TOKEN_PROBE_KEYS, probe_modality

    accepted = _forward_params(model)
    images = probe_modality(probe) == "images"
    if images and "pixel_values" not in accepted:
        raise ExtractionError(
            f"probe.images {probe['images']}: {checkpoint} is a {model_type!r} model, which reads tokens, not "
            "images: give probe.tokens (an .npy of ids) or probe.text with probe.tokenizer"
        )
    if not images and "pixel_values" in accepted and "input_ids" not in accepted:
        key = next((k for k in TOKEN_PROBE_KEYS if probe.get(k)), "tokens")
        raise ExtractionError(
            f"probe.{key} {probe.get(key)}: {checkpoint} is a {model_type!r} vision model, which reads images: "
            "give probe.images (a folder of images or an .npy [n, H, W, C])"
        )
    return images


def _open_image_probe(hf, probe: Mapping, checkpoint) -> ProbedModel:
    """A vision model with an image probe (:mod:`ckptlens.extract.images`)."""
    from .images import image_batches, token_mask

    model, kind, dev = hf.model, hf.kind, hf.device
    label2id = getattr(model.config, "label2id", None) if kind == IMAGE_CLASSIFICATION else None

    batches = image_batches(probe, hf.config_dict, label2id)
    runner = _image_runner(model)
    cfg = dict(hf.config_dict)
    cfg = {**cfg, **(cfg.get("vision_config") or {})}
    p = cfg.get("patch_size", 16)
    ph, pw = (p, p) if isinstance(p, int) else tuple(p)
    h, w = batches[0]["pixel_values"].shape[-2:]
    n_tokens = (h // ph) * (w // pw) + 1
    rows = token_mask(probe)
    params = dict(model.named_parameters())
    owners = [c for c, m in hf.names.items() if f"{m}.weight" in params]
    attention = hf.attention_modules()

    def forward(batch):
        return runner(pixel_values=batch["pixel_values"].to(dev))

    def attentions(batch, chosen):
        out = runner(pixel_values=batch["pixel_values"].to(dev), output_attentions=True).attentions
        if not out or len(out) != len(attention):
            raise ExtractionError(
                f"{checkpoint}: the model gave {len(out or ())} attention patterns for {len(attention)} attention modules"
            )
        return {name: out[attention.index(name)] for name in chosen}

    def loss(i):
        if kind != IMAGE_CLASSIFICATION:
            raise ExtractionError(NO_LOSS)
        return loss_fn(model, kind, batches[i], dev)

    return ProbedModel(
        model=model,
        modules=dict(hf.names),
        params=owners,
        batches=batches,
        forward=forward,
        loss=loss if kind == IMAGE_CLASSIFICATION else None,
        no_loss_reason=NO_LOSS.replace("(no classifier.*", "(no image classifier head classifier.*"),
        mask=lambda batch: rows(batch, n_tokens),
        n_outputs=None,
        transposed=hf.transposed,
        load=hf.load,
        kind=kind,
        attention_modules=attention,
        attentions=attentions if attention else None,
    )


def open_hf_model(checkpoint, probe: Mapping, device=None, hf_config: Mapping | None = None):
    """The Hugging Face model of ``checkpoint`` with its probe as a
    :class:`~ckptlens.extract.probed.ProbedModel` (weights not yet loaded). A masked LM's loss uses
    the probe batches with 15 % of the real tokens masked (see :func:`_mask_for_mlm`); its
    activations are taken on the unmasked batch. An image probe (``images``) goes to a vision model
    (:mod:`ckptlens.extract.images`)."""
    hf = HFModel(checkpoint, hf_config, device)
    model, kind = hf.model, hf.kind
    if check_probe_fits(model, probe, checkpoint, hf.config_dict.get("model_type")):
        return _open_image_probe(hf, probe, checkpoint)
    label2id = getattr(model.config, "label2id", None) if kind == SEQUENCE_CLASSIFICATION else None
    batches = probe_batches(probe, label2id=label2id)
    grad_batches = batches
    if kind == MASKED_LM:
        tok = load_tokenizer(probe["tokenizer"]) if probe.get("tokenizer") else None
        mask_id = probe.get("mask_token_id", tok.mask_token_id if tok is not None else None)
        if mask_id is None:
            raise ExtractionError(
                f"{checkpoint}: a masked-LM probe needs a tokenizer with a mask token or 'mask_token_id'"
            )
        special = set(tok.all_special_ids) if tok is not None else set()
        seed = int(probe.get("seed", 0))
        grad_batches = [_mask_for_mlm(b, i, seed, int(mask_id), special) for i, b in enumerate(batches)]
    dev = hf.device
    params = dict(model.named_parameters())
    owners = [c for c, m in hf.names.items() if f"{m}.weight" in params]
    attention = hf.attention_modules()

    def attentions(batch, chosen):
        """``output_attentions`` of the eager implementation: one [batch, heads, q, k] per layer, in
        the order of the attention modules."""
        out = model(**_model_inputs(model, batch, dev), output_attentions=True).attentions
        if not out or len(out) != len(attention):
            raise ExtractionError(
                f"{checkpoint}: the model gave {len(out or ())} attention patterns for {len(attention)} attention "
                "modules"
            )
        return {name: out[attention.index(name)] for name in chosen}

    return ProbedModel(
        model=model,
        modules=dict(hf.names),
        params=owners,
        batches=batches,
        forward=lambda batch: model(**_model_inputs(model, batch, dev)),
        loss=None if kind == BASE else (lambda i: loss_fn(model, kind, grad_batches[i], dev)),
        loss_runs_first_forward=kind in (CAUSAL_LM, SEQUENCE_CLASSIFICATION),  # (a masked LM's is masked)
        no_loss_reason=NO_LOSS,
        mask=lambda batch: batch["attention_mask"].bool(),
        n_outputs=None,
        transposed=hf.transposed,
        load=hf.load,
        kind=kind,
        attention_modules=attention,
        attentions=attentions if attention else None,
    )


#: any checkpoint not recognised by an earlier family: tried last, it accepts everything (a checkpoint
#: that is not a transformers model fails when opened, with an error that says why)
TRANSFORMERS = ModelFamily("transformers", lambda checkpoint, hf_config=None: True, open_hf_model)
