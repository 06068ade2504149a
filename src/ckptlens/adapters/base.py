"""Architecture adapters: from a model's state-dict tensors to canonical, architecture-free pieces.

Metrics never know architectures. An adapter reads tensors *lazily* through a ``get(name)``
callable (so a job holds one layer at a time, whatever the checkpoint's size) and yields 2-D
float32 matrices ``[out, in]`` under canonical names:

- ``<module>``: every 2-D weight under the model's own module name (the state-dict key without
  ``.weight``), e.g. ``gpt_neox.layers.0.attention.dense``, so names match forward-hook names and
  published tables. Weights stored transposed (GPT-2 ``Conv1D``) are transposed back to [out, in].
- ``<attn>.head{h}.q|k|v``: head h's query/key/value map, [d_head, d_model];
- ``<attn>.head{h}.o``: head h's slice of the output projection, [d_model, d_head];
- ``<attn>.head{h}.ov`` = W_O^h · W_V^h and ``<attn>.head{h}.qk`` = (W_Q^h)ᵀ · W_K^h / sqrt(d_head),
  both [d_model, d_model] (positional rotations such as RoPE are not part of the weights; where
  the model scales its scores otherwise (Gemma-2/3) ``qk`` carries that scale, and q/k norm gains
  are folded into ``q``, ``k`` and ``qk``: :class:`AttentionWeights`, :meth:`Adapter.notes`);
- ``embed``: the token embedding [vocab, d_model], yielded once: not also under its own module
  name (``gpt_neox.embed_in``, ``transformer.wte``), so that ``**`` weighs it once.

Grouped-query and multi-query attention (Llama-family models with fewer key/value heads than query
heads): query head h reads key/value head h // (n_heads / n_kv). Each stored matrix is named once:
``<attn>.head{h}.q|o`` and the circuits ``.qk``/``.ov`` per query head (``qk`` = head h's W_Q with
its key/value head's W_K, ``ov`` = head h's W_O with its key/value head's W_V), and the shared maps
``<attn>.kv{j}.k|v`` per key/value head j. Where every query head has its own key/value head the
names stay ``head{h}.k|v``.

``<attn>`` is the attention module whose output is the attention output (``blocks.0.attn``,
``gpt_neox.layers.0.attention``, ``transformer.h.0.attn``, ``encoder.layer.0.attention``).
Biases are not part of the pieces; :meth:`Adapter.attention_weights` returns them per head for
code that rebuilds an attention layer.

Only numpy is imported here.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

import numpy as np

from ..store.layers import layer_order

Getter = Callable[[str], np.ndarray]
Matcher = Callable[[str, str], bool]  # (pattern, name) -> bool

HEAD_PIECES = ("q", "k", "v", "o", "qk", "ov")
_HEAD_PATTERN = re.compile(r"\.(?:head|kv)[0-9*?\[]")
EMBED = "embed"


def fnmatch_pattern(pattern: str, name: str) -> bool:
    """Default matcher, (pattern, name) like ``ckptlens.store.patterns.matches``: fnmatch, case-sensitive."""
    return fnmatchcase(name, pattern)


def module_name(key: str) -> str:
    """State-dict key -> module name (``a.b.weight`` -> ``a.b``; other keys unchanged)."""
    return key[: -len(".weight")] if key.endswith(".weight") else key


def module_names_from_keys(keys: Iterable[str]) -> list[str]:
    """Every module name implied by parameter keys (all dotted prefixes), sorted, root excluded."""
    names: set[str] = set()
    for k in keys:
        parts = k.split(".")[:-1]
        for i in range(1, len(parts) + 1):
            names.add(".".join(parts[:i]))
    return sorted(names)


def _is_norm(name: str) -> bool:
    last = name.rsplit(".", 1)[-1].lower()
    return "norm" in last or last.startswith("ln")


@dataclass
class AttentionWeights:
    """One attention module split per head; W_* are [n_heads, d_head, d_model] for q and
    [n_kv_heads, d_head, d_model] for k/v (n_kv_heads = n_heads unless the attention is grouped),
    [n_heads, d_model, d_head] for o; biases are [heads, d_head] (q/k/v) and [d_model] (o), or None
    where the module has none. The weights are as stored (no norm gain folded in).

    What acts between the projections and the scores, where the architecture has it:
    ``q_gain``/``k_gain`` ([n_heads|n_kv_heads, d_head]) the gains of an RMS norm on the queries /
    keys, ``qk_norm`` its extent (``"head"``: each head's vector, ``"full"``: the whole flattened
    projection, as OLMo-2/3), ``norm_eps`` its epsilon; ``scale`` the factor of the scores (None:
    1/√d_head); ``softcap`` (scores -> softcap·tanh(scores/softcap), Gemma-2); ``alibi_slopes``
    ([n_heads], BLOOM: the score of a key at position j gets slope·j added)."""

    module: str
    n_heads: int
    W_Q: np.ndarray
    W_K: np.ndarray
    W_V: np.ndarray
    W_O: np.ndarray
    b_Q: np.ndarray | None = None
    b_K: np.ndarray | None = None
    b_V: np.ndarray | None = None
    b_O: np.ndarray | None = None
    q_gain: np.ndarray | None = None
    k_gain: np.ndarray | None = None
    qk_norm: str | None = None
    norm_eps: float = 1e-6
    scale: float | None = None
    softcap: float | None = None
    alibi_slopes: np.ndarray | None = None

    @property
    def d_head(self) -> int:
        return self.W_Q.shape[1]

    @property
    def n_kv_heads(self) -> int:
        return self.W_K.shape[0]

    @property
    def grouped(self) -> bool:
        return self.n_kv_heads != self.n_heads

    @property
    def score_scale(self) -> float:
        return 1.0 / math.sqrt(self.d_head) if self.scale is None else float(self.scale)

    def kv_head(self, h: int) -> int:
        """The key/value head query head ``h`` reads: h // (n_heads / n_kv_heads)."""
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"{self.module}: {self.n_heads} query heads do not share {self.n_kv_heads} key/value heads"
            )
        return h // (self.n_heads // self.n_kv_heads)

    def piece(self, h: int, which: str) -> np.ndarray:
        """Piece ``which`` of head ``h``: for ``k``/``v`` h is a key/value head, for the others a
        query head. ``q``/``k`` carry the norm gains (diag(g)·W); ``qk`` = q(h)ᵀ·k(kv_head(h))·scale,
        ``ov`` = W_O[h]·W_V[kv_head(h)]."""
        if which == "q":
            return self._gained(self.W_Q[h], self.q_gain, h)
        if which == "k":
            return self._gained(self.W_K[h], self.k_gain, h)
        if which == "v":
            return self.W_V[h]
        if which == "o":
            return self.W_O[h]
        if which == "ov":
            wv = self.W_V[self.kv_head(h)].astype(np.float64)
            return (self.W_O[h].astype(np.float64) @ wv).astype(np.float32)
        if which == "qk":
            j = self.kv_head(h)
            q = self._gained(self.W_Q[h], self.q_gain, h).astype(np.float64)
            k = self._gained(self.W_K[j], self.k_gain, j).astype(np.float64)
            return (q.T @ k * self.score_scale).astype(np.float32)
        raise ValueError(f"unknown head piece {which!r}; expected one of {HEAD_PIECES}")

    @staticmethod
    def _gained(w: np.ndarray, gain: np.ndarray | None, h: int) -> np.ndarray:
        if gain is None:
            return w
        return (gain[h].astype(np.float64)[:, None] * w.astype(np.float64)).astype(np.float32)


@dataclass(frozen=True)
class TargetGroup:
    """Target patterns selecting one kind of piece (``kind``: weights, activations or gradients),
    ``n`` the names they match; ``default``: part of the architecture's default targets."""

    kind: str
    label: str
    patterns: list[str]
    default: bool = False
    n: int = 0


_INDEX = re.compile(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.|$)")


def _generalise(names: Iterable[str]) -> list[str]:
    """Module names with their layer index as ``*`` (``gpt_neox.layers.3.attention`` ->
    ``gpt_neox.layers.*.attention``), each pattern once, in first-seen order."""
    return list(dict.fromkeys(_INDEX.sub("*", n) for n in names))


def split_heads_rows(w: np.ndarray, n_heads: int, what: str) -> np.ndarray:
    """[n_heads·d_head, d_model] -> [n_heads, d_head, d_model] (head h = rows h·dh:(h+1)·dh)."""
    if w.shape[0] % n_heads:
        raise ValueError(f"{what}: {w.shape[0]} rows do not split into {n_heads} heads")
    return w.reshape(n_heads, w.shape[0] // n_heads, w.shape[1])


def split_heads_cols(w: np.ndarray, n_heads: int, what: str) -> np.ndarray:
    """[d_model, n_heads·d_head] -> [n_heads, d_model, d_head] (head h = columns h·dh:(h+1)·dh)."""
    if w.shape[1] % n_heads:
        raise ValueError(f"{what}: {w.shape[1]} columns do not split into {n_heads} heads")
    dh = w.shape[1] // n_heads
    return np.ascontiguousarray(w.reshape(w.shape[0], n_heads, dh).transpose(1, 0, 2))


def _f32(x) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


class NotAMatrix(ValueError):
    """A tensor an adapter took for a weight matrix is not 2-D or more (its shape was unknown)."""


class WeightMatrices(Mapping):
    """An adapter's weight matrices of one checkpoint, name -> float32 [out, in], read when asked
    for (:meth:`Adapter.weight_view`). A head piece reads its attention module's tensors once for
    all of that module's pieces (the last module's are kept), so reading in key order reads every
    tensor once."""

    def __init__(self, adapter, keys: Sequence[str], get: Getter, sources: dict[str, object]):
        self.adapter = adapter
        self._keys, self._get, self._sources = list(keys), get, sources
        self._module: str | None = None
        self._attention = None
        self._opened: list = []

    def keep_open(self, resource) -> None:
        """Close ``resource`` (what ``get`` reads from: an opened checkpoint) with this view."""
        self._opened.append(resource)

    def close(self) -> None:
        self._attention = None
        while self._opened:
            self._opened.pop().close()

    def __enter__(self) -> WeightMatrices:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def source(self, name: str) -> object:
        """The state-dict key a matrix is read from, or (attention module, head, piece)."""
        return self._sources[name]

    def __getitem__(self, name: str) -> np.ndarray:
        src = self._sources[name]
        if isinstance(src, tuple):  # head piece: (module, h, which)
            module, h, which = src
            if module != self._module:
                self._attention = None  # free the previous module's tensors first
                self._attention = self.adapter._attention_weights(self._keys, self._get, module)
                self._module = module
            return self._attention.piece(h, which)
        w = np.asarray(self._get(src))
        if w.ndim < 2:  # only possible when shapes were unknown and the name rule was wrong
            raise NotAMatrix(f"adapter {self.adapter.name!r}: {src!r} is {w.ndim}-D, not a matrix; skipped")
        if w.ndim > 2:
            w = w.reshape(w.shape[0], -1)
        if self.adapter.transposed(src):
            w = w.T
        return _f32(w)

    def __iter__(self) -> Iterator[str]:
        return iter(self._sources)

    def __len__(self) -> int:
        return len(self._sources)


def decode_metadata(metadata: Mapping | None, skip=lambda key: False) -> dict:
    """Safetensors metadata (strings only) back to values: each JSON-encoded value decoded,
    plain strings kept; keys for which ``skip(key)`` is true are left out."""
    out = {}
    for k, v in dict(metadata or {}).items():
        if skip(k):
            continue
        if isinstance(v, str):
            try:
                v = json.loads(v)
            except ValueError:
                pass
        out[k] = v
    return out


def model_config(metadata: Mapping | None) -> dict:
    """The model configuration carried by a checkpoint's metadata, whatever its form:
    a Hugging Face ``config.json`` (a dict with ``model_type``/``architectures``), the project's
    safetensors metadata key ``ckptlens_model`` (a JSON string), or a ``config`` entry."""
    if not metadata:
        return {}
    out: dict = {}
    for key in ("config", "ckptlens_model"):
        val = metadata.get(key)
        if isinstance(val, str):
            try:
                val = json.loads(val)
            except ValueError:
                val = None
        if isinstance(val, Mapping):
            out.update(val)
    if any(k in metadata for k in ("model_type", "architectures", "hidden_size", "n_embd")):
        # a config.json flattened into safetensors metadata by the importer
        out.update(decode_metadata(metadata, skip=lambda k: k in ("config", "ckptlens_model")))
    return out


class Adapter:
    """Base class. Subclasses set ``name`` and implement :meth:`detect`, :meth:`_attention_modules`
    and :meth:`_attention_weights` (and override naming rules where the architecture needs it)."""

    name: str = "base"
    #: config keys that may hold the number of attention heads, first found wins
    n_heads_keys: tuple[str, ...] = ("num_attention_heads", "n_head", "n_heads")
    #: regex (search) on module names: the per-layer blocks whose outputs are activation targets
    block_pattern: str | None = None
    #: state-dict keys (exact suffix match after an optional prefix) of the token embedding
    embed_suffixes: tuple[str, ...] = ()
    #: the attention output projection, relative to the attention module (``dense`` of
    #: ``gpt_neox.layers.0.attention``); None: no attention modules
    attention_output: str | None = None
    #: the MLP's output projection, relative to a block (``mlp.dense_4h_to_h``), or a tuple of
    #: alternatives (those the model has are used); None: no MLP
    mlp_output: str | tuple[str, ...] | None = None

    def __init__(
        self,
        metadata: Mapping | None = None,
        n_heads: int | None = None,
        shapes: Mapping[str, Sequence[int]] | None = None,
    ):
        self.metadata = dict(metadata or {})
        self.config = model_config(metadata)
        self.shapes = {k: tuple(v) for k, v in (shapes or {}).items()}
        if n_heads is None:
            for k in self.n_heads_keys:
                if isinstance(self.config.get(k), int) and not isinstance(self.config.get(k), bool):
                    n_heads = self.config[k]
                    break
        if n_heads is not None and (not isinstance(n_heads, int) or n_heads < 1):
            raise ValueError(f"adapter {self.name!r}: n_heads must be a positive integer, not {n_heads!r}")
        self.n_heads = n_heads

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_heads={self.n_heads})"

    # ---- to implement -------------------------------------------------------------------------
    @classmethod
    def detect(cls, keys: list[str]) -> bool:
        raise NotImplementedError

    @classmethod
    def accepts(cls, config: Mapping) -> bool:
        """Whether a checkpoint whose keys :meth:`detect` accepted is one this adapter is verified
        on, by its config (``model_type``); auto-detection skips the adapter where this is false."""
        return True

    def notes(self) -> list[str]:
        """What the per-head pieces of this model leave out (one line each), e.g. biases or a
        per-token norm factor between the projections and the attention scores."""
        return []

    def _attention_modules(self, keys: Sequence[str]) -> list[str]:
        """Names of the attention modules whose heads can be split (no tensor is read)."""
        return []

    def _attention_weights(self, keys: Sequence[str], get: Getter, module: str) -> AttentionWeights:
        raise NotImplementedError

    def transposed(self, key: str) -> bool:
        """Whether the 2-D tensor ``key`` is stored [in, out] (GPT-2 Conv1D): its canonical
        [out, in] matrix is its transpose."""
        return False

    def _is_matrix_key(self, key: str, shapes: Mapping[str, Sequence[int]]) -> bool:
        """Whether ``key`` is a 2-D weight: by shape when shapes are known, else by name."""
        if not key.endswith(".weight"):
            return False
        if key in shapes:
            return len(shapes[key]) == 2
        return not _is_norm(module_name(key))

    # ---- public API ---------------------------------------------------------------------------
    @property
    def heads_available(self) -> bool:
        return self.n_heads is not None

    def embed_key(self, keys: Sequence[str]) -> str | None:
        for suffix in self.embed_suffixes:
            for k in keys:
                if k == suffix or k.endswith("." + suffix):
                    return k
        return None

    def attention_modules(self, keys: Sequence[str]) -> list[str]:
        return self._attention_modules(keys)

    def attention_weights(self, keys: Sequence[str], get: Getter, module: str) -> AttentionWeights:
        """All heads of one attention module (weights and biases), read through ``get``."""
        self._require_heads()
        if module not in self._attention_modules(keys):
            raise ValueError(f"adapter {self.name!r}: {module!r} is not an attention module of this model")
        return self._attention_weights(keys, get, module)

    def layer_names(self, keys: Sequence[str], shapes: Mapping[str, Sequence[int]] | None = None) -> list[str]:
        """Every name :meth:`weight_matrices` can yield, without reading any tensor."""
        return [name for name, _ in self.plan(keys, shapes)]

    def plan(self, keys: Sequence[str], shapes: Mapping[str, Sequence[int]] | None = None) -> list[tuple[str, object]]:
        """What :meth:`weight_matrices` can yield, without reading any tensor: [(name, source)],
        source = a state-dict key (a stored matrix; :meth:`transposed` says whether it is stored
        [in, out]), or (attention module, head, piece)."""
        shapes = {**self.shapes, **{k: tuple(v) for k, v in (shapes or {}).items()}}
        keys = list(keys)
        plan: list[tuple[str, object]] = []
        seen: set[str] = set()
        ek = self.embed_key(keys)
        if ek is not None:
            plan.append((EMBED, ek))
            seen.update((EMBED, module_name(ek)))  # the embedding once, as ``embed``
        for k in keys:
            if self._is_matrix_key(k, shapes):
                n = module_name(k)
                if n not in seen:
                    plan.append((n, k))
                    seen.add(n)
        if self.heads_available:
            for module in self._attention_modules(keys):
                plan += self._head_plan(keys, shapes, module)
        return plan

    def n_kv_heads(
        self, keys: Sequence[str] = (), shapes: Mapping[str, Sequence[int]] | None = None, module=None
    ) -> int:
        """The number of key/value heads (= n_heads unless the attention is grouped)."""
        return self.n_heads

    def _head_plan(self, keys, shapes, module: str) -> list[tuple[str, tuple[str, int, str]]]:
        """[(name, (module, head, piece))] of one attention module: ``head{h}.<piece>`` for every
        query head, except k/v of grouped attention: ``kv{j}.k|v`` once per key/value head."""
        n_kv = self.n_kv_heads(keys, shapes, module)
        out = []
        for h in range(self.n_heads):
            for which in HEAD_PIECES:
                if which in ("k", "v") and n_kv != self.n_heads:
                    continue
                out.append((f"{module}.head{h}.{which}", (module, h, which)))
        if n_kv != self.n_heads:
            for j in range(n_kv):
                out += [(f"{module}.kv{j}.{w}", (module, j, w)) for w in ("k", "v")]
        return out

    def weight_view(
        self,
        keys: Sequence[str],
        get: Getter,
        patterns: Sequence[str] | Callable[[str], bool] | None = None,
        match: Matcher | None = None,
        shapes: Mapping[str, Sequence[int]] | None = None,
    ) -> WeightMatrices:
        """The matrices whose names match ``patterns`` (globs matched with ``match(pattern, name)``,
        fnmatch by default; or a predicate; None = everything) as a read-only mapping name ->
        float32 [out, in], in the order of :meth:`plan`: nothing is read until a matrix is asked
        for (the metric jobs read the checkpoint through it, one matrix at a time)."""
        keys = list(keys)
        match = match or fnmatch_pattern
        if patterns is None:
            wanted = lambda n: True  # noqa: E731
        elif callable(patterns):
            wanted = patterns
        else:
            pats = [patterns] if isinstance(patterns, str) else list(patterns)
            wanted = lambda n: any(match(p, n) for p in pats)  # noqa: E731
        plan = self.plan(keys, shapes)
        if not self.heads_available and not callable(patterns) and patterns is not None:
            names = [n for n, _ in plan]
            lost = [p for p in pats if _HEAD_PATTERN.search(p) and not any(match(p, n) for n in names)]
            if lost:
                raise ValueError(
                    f"adapter {self.name!r}: patterns {lost} ask for per-head pieces, but the number of "
                    "attention heads is unknown (no config.json/metadata with it); pass n_heads"
                )
        return WeightMatrices(self, keys, get, {name: src for name, src in plan if wanted(name)})

    def weight_matrices(
        self,
        keys: Sequence[str],
        get: Getter,
        patterns: Sequence[str] | Callable[[str], bool] | None = None,
        match: Matcher | None = None,
        shapes: Mapping[str, Sequence[int]] | None = None,
    ) -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(name, float32 [out, in])`` of :meth:`weight_view`, stored matrices first, then
        the head pieces module by module (each attention module's tensors read once); a tensor that
        turns out not to be a matrix (possible only where shapes were unknown) is skipped with a
        warning."""
        view = self.weight_view(keys, get, patterns, match, shapes)
        ordered = sorted(view, key=lambda n: isinstance(view.source(n), tuple))  # stable: plan order
        for name in ordered:
            try:
                yield name, view[name]
            except NotAMatrix as exc:
                warnings.warn(str(exc), stacklevel=2)

    def activation_modules(self, module_names: Sequence[str]) -> list[str]:
        """Default hook targets: the per-layer block outputs. ``module_names`` may be the model's
        ``named_modules()`` names or its state-dict keys (module names are then derived)."""
        names = list(module_names)
        if any(n.endswith((".weight", ".bias")) for n in names):
            names = module_names_from_keys(names)
        if self.block_pattern is None:
            return _largest_module_list(names)
        rx = re.compile(self.block_pattern)
        return layer_order({n for n in names if rx.search(n)})  # depth order, duplicates dropped

    def head_shapes(self, keys: Sequence[str], shapes: Mapping[str, Sequence[int]], module: str) -> dict[str, tuple]:
        """Shapes of one attention module's head pieces (``q``/``k``/``v``: [d_head, d_model], ``o``:
        [d_model, d_head], ``qk``/``ov``: [d_model, d_model]) from the output projection's shape,
        without reading a tensor; {} where that shape or the number of heads is unknown."""
        key = f"{module}.{self.attention_output}.weight" if self.attention_output else None
        if key is None or key not in shapes or not self.heads_available or len(shapes[key]) != 2:
            return {}
        d_model, inner = shapes[key][::-1] if self.transposed(key) else shapes[key]
        if inner % self.n_heads:
            return {}
        dh = inner // self.n_heads
        return {"q": (dh, d_model), "k": (dh, d_model), "v": (dh, d_model), "o": (d_model, dh)} | {
            "qk": (d_model, d_model),
            "ov": (d_model, d_model),
        }

    @classmethod
    def target_groups(cls, names: Mapping[str, Sequence[str]]) -> list[TargetGroup]:
        """What target patterns select in a model whose names (:func:`ckptlens.sources.layer_names.names_from_keys`:
        ``weights``, ``activations``, ``gradients``) are given: one :class:`TargetGroup` per kind of
        piece the architecture has (a group matching nothing is left out); the groups marked
        ``default`` are the run's targets when its config gives none (:meth:`default_targets`).

        Per block: the attention output projection with its per-head OV and QK circuits, the MLP
        output (weights; their weight gradients), and the block's output, the residual stream after
        the block (activations). Patterns are the model's own names with the layer index as ``*``."""
        from ..store.patterns import select

        weights = list(names.get("weights", []))
        modules = list(names.get("activations", []))
        owners = list(names.get("gradients", []))
        adapter = cls()
        blocks = _generalise(adapter.activation_modules(modules))
        attn = _generalise(adapter._attention_modules([f"{o}.weight" for o in owners]))
        out_proj = [f"{a}.{cls.attention_output}" for a in attn] if cls.attention_output else []
        mlp_names = (cls.mlp_output,) if isinstance(cls.mlp_output, str) else tuple(cls.mlp_output or ())
        mlp_out = [f"{b}.{m}" for b in blocks for m in mlp_names if select([f"{b}.{m}"], weights + owners)]
        groups = [
            TargetGroup("weights", "every weight matrix", ["**"]),
            TargetGroup("weights", "token embedding", [EMBED]),
            TargetGroup("weights", "attention output projection", out_proj, default=True),
            TargetGroup("weights", "per-head OV circuits W_O·W_V", [f"{a}.head*.ov" for a in attn], default=True),
            TargetGroup(
                "weights", "per-head QK circuits W_Qᵀ·W_K/√d_head", [f"{a}.head*.qk" for a in attn], default=True
            ),
            TargetGroup(
                "weights",
                "per-head q, k, v, o maps",
                [f"{a}.head*.{p}" for a in attn for p in ("q", "k", "v", "o")]
                + [f"{a}.kv*.{p}" for a in attn for p in ("k", "v")],
            ),
            TargetGroup("weights", "MLP output projection", mlp_out, default=True),
            TargetGroup("activations", "block outputs (the residual stream after each block)", blocks, default=True),
            TargetGroup("activations", "every module", ["**"]),
            TargetGroup("gradients", "attention output and MLP output projections", out_proj + mlp_out, default=True),
            TargetGroup("gradients", "every weight", ["**"]),
        ]
        pools = {"weights": weights, "activations": modules, "gradients": owners}
        out = []
        for g in groups:
            pats = [p for p in g.patterns if select([p], pools[g.kind])]
            if pats:
                out.append(TargetGroup(g.kind, g.label, pats, g.default, len(select(pats, pools[g.kind]))))
        return out

    @classmethod
    def default_targets(cls, names: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
        """The targets of a run whose config gives none: the default groups of :meth:`target_groups`
        (every weight matrix where the architecture has no known pieces)."""
        out: dict[str, list[str]] = {"weights": [], "activations": [], "gradients": []}
        for g in cls.target_groups(names):
            if g.default:
                out[g.kind] += [p for p in g.patterns if p not in out[g.kind]]
        if not out["weights"]:
            out["weights"] = ["**"]
        return out

    # ---- internals ----------------------------------------------------------------------------
    def _require_heads(self) -> None:
        if not self.heads_available:
            raise ValueError(f"adapter {self.name!r}: the number of attention heads is unknown; pass n_heads")


def _largest_module_list(names: Sequence[str]) -> list[str]:
    """The children of the container with the most integer-named children (a ModuleList of blocks)."""
    children: dict[str, list[str]] = {}
    for n in names:
        parent, _, last = n.rpartition(".")
        if last.isdigit():
            children.setdefault(parent, []).append(n)
    if not children:
        return []
    best = max(children.values(), key=len)
    return layer_order(set(best))


def warn_no_heads(adapter: Adapter) -> None:
    warnings.warn(
        f"adapter {adapter.name!r}: number of attention heads unknown (no config.json/metadata); "
        "per-head pieces (.head{h}.q|k|v|o|qk|ov) are not produced. Pass n_heads to get them.",
        stacklevel=3,
    )
