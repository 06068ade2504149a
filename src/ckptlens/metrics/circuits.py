"""Attention-circuit metrics across layers (family ``circuits``, model scope, input: weights).

Input layout (produced by the architecture adapter into the *weights* extraction):

* ``<attn module>.head{h}.qk`` — W_QK = W_Qᵀ·W_K / √d_head, d_model × d_model: the attention score
  of a query residual vector x_q on a key residual vector x_k is x_qᵀ·W_QK·x_k (rows: query side,
  columns: key side). W_Q, W_K, W_V are [d_head, d_model], W_O is [d_model, d_head].
* ``<attn module>.head{h}.ov`` — W_OV = W_O·W_V, d_model × d_model: the head writes W_OV·x.
* ``<attn module>.head{h}.q`` / ``.k`` — W_Q, W_K of head h, [d_head, d_model] (optional; only
  ``qk_ov_rotary_sweep`` reads them, for the layer-L modules: the rotary rotation sits between them).
* ``embed`` — the token embedding E, [vocab, d_model] (optional; the token-space metrics and the
  embedding matching need it).

Attention modules are put in depth order (:func:`ckptlens.store.layers.layer_order`);
"layer L−1" of a module is the one before it in that order. Every ``weight_spectrum`` metric also
runs on these matrices, as on any weight.

Labels (the ``layer`` column): ``"<qk name>~<ov name>"`` for a layer-L QK head read against a
layer-(L−1) OV head, e.g. ``"blocks.1.attn.head0.qk~blocks.0.attn.head3.ov"`` (``pairs="all"``: every
head of L against every head of L−1; ``"same"``: head h against head h only), and
``"embed~<first attn module>.head{h}.ov"``.

Registered metrics (no reference):

qk_ov_overlap_max / qk_ov_overlap_rms (ks=[1, 2, 4, 8], pairs="all")
    K-composition subspace matching. With W_QK = U₁S₁V₁ᵀ (layer L) and W_OV = U₂S₂V₂ᵀ (layer L−1),
    s = singular values of the k×k matrix V₁[:, :k]ᵀ·U₂[:, :k] (cosines of the principal angles
    between what the key side reads and what the earlier head writes); reports max(s) resp.
    sqrt(mean s²) as ``.k{k}``, and the expected value of the same statistic for two independent
    uniformly random k-dimensional subspaces of R^d as ``.k{k}_random``
    (:func:`._circuits.random_overlap_baseline`, computed once per (d, k) and cached).
embed_ov_overlap_max / embed_ov_overlap_rms (ks=[1, 2, 4, 8])
    The same statistic between the top-k right-singular subspace of E (its directions in the
    residual stream) and the top-k left-singular subspace of each first-layer OV head.
qk_ov_diag_zscore (pairs="all")
    M = W_QK·W_OV (layer-L QK times layer-(L−1) OV): (mean of diag(M) − mean of all entries of M) /
    std of all entries (population std; 0 if M is constant). In the residual basis.
qk_ov_token_diag_zscore (pairs="all", ks=None)
    The same z-score of E·M·Eᵀ (vocab × vocab: entry (t, s) is how much a query token t attends to
    a key whose earlier-layer head wrote token s — the token-space reading the study meant: the
    residual basis is not privileged, so the residual-basis z-score is reported only for comparison).
    Computed from low-rank factors, never forming the vocab × vocab matrix.
qk_ov_token_mismatch (pairs="all", max_tokens=2048, ks=None)
    Share of tokens t for which t is not the argmax of row t of E·M·Eᵀ (a tie with the row maximum
    counts as a match, so a zero circuit gives 0). Rows are all tokens if vocab ≤ max_tokens, else a
    fixed random subset of max_tokens tokens (seed 0, the same at every checkpoint); columns are
    always all tokens. Cost ≈ rows × vocab × d_head per head pair.
Both token metrics, per rank (``ks``)
    ``ks=None`` (default): one unsuffixed value per label, of the full circuits. ``ks`` a list of
    positive integers: per label, ``.k{k}`` = the same statistic of E·[W_QK]_k·[W_OV]_k·Eᵀ, where
    [W]_k keeps the top-k singular triplets of W (the rank-k truncation onto the "top-k subspaces"
    that ``qk_ov_overlap_max`` compares: [W_QK]_k = U₁[:, :k]·S₁[:k]·V₁[:, :k]ᵀ, [W_OV]_k likewise),
    and ``.full`` = the untruncated value (the number ``ks=None`` reports unsuffixed). A k above the
    numerical rank of either circuit (see below) gives NaN; where σ_k = σ_{k+1} the truncation is
    not unique and the SVD's choice is used. The truncated products come from the same low-rank
    factors (the first k columns of E·U₁ and E·V₂, a k × k core); the mismatch ratio costs
    ≈ rows × vocab × k more per k.
qk_ov_rotary_sweep (offsets=[0, 1, 2, 4, 8, 16], ks=[1, 2, 4], rotary_base=10000.0, pairs="all")
    The K-composition matching as a function of the relative position r ≥ 0 of the key (at p − r)
    behind the query (at p), for rotary models. Rotary convention (``ckptlens.sources.trained.transformer``): each
    head's q and k features (2i, 2i+1), all d_head of them, are rotated by R(θ) = [[cos θ, −sin θ],
    [sin θ, cos θ]] with θ = position·ω_i, ω_i = rotary_base^(−2i/d_head). The score is
    (R_p q)·(R_{p−r} k)/√d_head = qᵀ·R_pᵀR_{p−r}·k/√d_head = qᵀ·R(−r·ω)·k/√d_head, so the QK circuit
    at offset r is W_QK(r) = W_Qᵀ·R(−r·ω)·W_K/√d_head (W_QK(0) = the ``.qk`` piece), built from the
    ``.q``/``.k`` pieces of the layer-L heads. For every (layer-L QK head, layer-(L−1) OV head) pair,
    labelled as for ``qk_ov_overlap_max``, and every r in ``offsets``: ``.k{k}_r{r}`` = max(s) as in
    ``qk_ov_overlap_max`` with W_QK(r) in place of W_QK (no ``_random`` baseline: it does not depend
    on r, ``qk_ov_overlap_max`` reports it), and, when ``embed`` is present, ``.zscore_r{r}`` = the
    diagonal z-score of E·W_QK(r)·W_OV·Eᵀ as in ``qk_ov_token_diag_zscore``. W_QK(r) is never
    formed: its SVD comes from QR factors of W_Qᵀ and (R·W_K)ᵀ (cost O(d_model·d_head²) per head and
    offset); angles are computed in float64. Layer-L heads without both ``.q`` and ``.k`` pieces give
    no rows (with one warning naming the missing pieces); an odd d_head or pieces of mismatched
    shapes give NaN. Models with another rotary layout (Hugging Face's ``rotate_half`` pairing
    (i, i + d_head/2), partial rotary) are not covered by this convention.

Degenerate cases: singular vectors are kept up to the matrix's numerical rank (tolerance
max(m, n)·eps(dtype)·σ₁, as numpy's matrix_rank, with the eps of the stored dtype); a k above that
rank (the top-k subspace would contain arbitrary null-space directions) or above d gives NaN (its
``_random`` baseline is still reported, NaN only for k > d). A
circuit with NaN/Inf values gives NaN for its labels. The token metrics give no rows without ``embed``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from ..store.joblog import warn
from ..store.layers import layer_order, pair_label
from ._circuits import (
    lowrank_argmax_mismatch,
    lowrank_diag_zscore,
    numerical_rank,
    overlap_singular_values,
    random_overlap_baseline,
    rotary_qk_svd,
    stored_eps,
)
from ._common import check_choice, check_int_list, check_positive_int
from .registry import MetricConfigError, family, metric

CIRCUIT_RE = re.compile(r"^(?P<module>.+)\.head(?P<head>\d+)\.(?P<kind>qk|ov|q|k)$")
EMBED = "embed"
PAIRS = ("all", "same")


# ---------------------------------------------------------------- context


@family("circuits", needs="weights", scope="model")
class CircuitContext:
    """The checkpoint's QK/OV circuits and embedding; one cached (truncated) SVD per matrix."""

    def __init__(self, store):
        self.store = store
        self.qk: dict[str, dict[int, str]] = {}
        self.ov: dict[str, dict[int, str]] = {}
        self.q: dict[str, dict[int, str]] = {}  # per-head W_Q / W_K pieces (qk_ov_rotary_sweep only)
        self.k: dict[str, dict[int, str]] = {}
        kinds = {"qk": self.qk, "ov": self.ov, "q": self.q, "k": self.k}
        modules = []  # modules with qk/ov pieces: the layer order of the position-free metrics
        all_modules = []  # modules with any head piece read here
        for name in store:
            m = CIRCUIT_RE.match(name)
            if m is None:
                continue
            if m["kind"] in ("qk", "ov") and m["module"] not in modules:
                modules.append(m["module"])
            if m["module"] not in all_modules:
                all_modules.append(m["module"])
            kinds[m["kind"]].setdefault(m["module"], {})[int(m["head"])] = name
        self.modules = layer_order(modules)
        self.rotary_modules = layer_order(all_modules)
        self.embed = EMBED if EMBED in store else None
        self._svd: dict[str, tuple | None] = {}

    def svd(self, name: str):
        """(U or None, s, V) truncated to the numerical rank (U is not computed for tall matrices
        such as the embedding, whose right singular vectors are all that is used); None if the
        matrix has NaN/Inf values."""
        if name not in self._svd:
            x = self.store[name]
            if x is None:
                self._svd[name] = None
            else:
                w = np.asarray(x, dtype=np.float64).reshape(x.shape[0], -1)
                if w.shape[0] > 2 * w.shape[1]:
                    u = None
                    _, s, vt = np.linalg.svd(np.linalg.qr(w, mode="r"))
                else:
                    u, s, vt = np.linalg.svd(w, full_matrices=False)
                r = numerical_rank(s, w.shape, stored_eps(x))
                self._svd[name] = (None if u is None else u[:, :r], s[:r], vt[:r].T)
        return self._svd[name]

    def matrix(self, name: str) -> np.ndarray | None:
        x = self.store[name]
        return None if x is None else np.asarray(x, dtype=np.float64)

    def qk_ov_pairs(self, pairs: str = "all"):
        """(qk name, ov name) for every layer-L QK head and layer-(L−1) OV head, in layer order."""
        for prev, cur in zip(self.modules, self.modules[1:]):
            for h, qk in sorted(self.qk.get(cur, {}).items()):
                for h2, ov in sorted(self.ov.get(prev, {}).items()):
                    if pairs == "all" or h == h2:
                        yield qk, ov

    def rotary_heads(self):
        """(module, h, q name, k name, [ov names of the module before, by head]) for every head of an
        attention module after the first (in the order of all head pieces) that has both W_Q and W_K
        pieces, and a list of the missing .q/.k names of heads whose previous module has OV heads."""
        found, missing = [], []
        for prev, cur in zip(self.rotary_modules, self.rotary_modules[1:]):
            ovs = sorted(self.ov.get(prev, {}).items())
            if not ovs:
                continue
            heads = sorted(set().union(*(kind.get(cur, {}) for kind in (self.qk, self.ov, self.q, self.k))))
            for h in heads:
                q, k = self.q.get(cur, {}).get(h), self.k.get(cur, {}).get(h)
                if q is None or k is None:
                    missing += [f"{cur}.head{h}.{x}" for x, n in (("q", q), ("k", k)) if n is None]
                    continue
                found.append((cur, h, q, k, ovs))
        return found, missing

    def embed_ov_pairs(self):
        if self.embed is None or not self.modules:
            return
        for _, ov in sorted(self.ov.get(self.modules[0], {}).items()):
            yield self.embed, ov

    def overlap(self, a: str, a_side: str, b: str, b_side: str, k: int) -> np.ndarray | None:
        """Singular values of A[:, :k]ᵀ·B[:, :k], A/B the left ("u") or right ("v") singular vectors."""
        fa, fb = self.svd(a), self.svd(b)
        if fa is None or fb is None:
            return None
        x = fa[0] if a_side == "u" else fa[2]
        y = fb[0] if b_side == "u" else fb[2]
        if x is None or y is None or x.shape[0] != y.shape[0] or k > x.shape[1] or k > y.shape[1]:
            return None
        return overlap_singular_values(x[:, :k], y[:, :k])

    def product_factors(self, qk: str, ov: str):
        """(P, Q) with W_QK·W_OV = P·Qᵀ: P = U₁·(S₁V₁ᵀU₂S₂) [d, r₂], Q = V₂ [d, r₂]; None if undefined."""
        f1, f2 = self.svd(qk), self.svd(ov)
        if f1 is None or f2 is None or f1[0] is None or f2[0] is None or f1[2].shape[0] != f2[0].shape[0]:
            return None
        u1, s1, v1 = f1
        u2, s2, v2 = f2
        core = s1[:, None] * (v1.T @ u2) * s2[None, :]
        return u1 @ core, v2


# ---------------------------------------------------------------- parameters


def _config_error(name: str, key: str, msg: str):
    raise MetricConfigError(f"config key 'metrics.{name}.{key}': {msg}")


def _check_offsets(name: str, value) -> None:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        _config_error(name, "offsets", f"must be a non-empty list of non-negative integers, not {value!r}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            _config_error(name, "offsets", f"must be a non-empty list of non-negative integers, not {value!r}")


def _check_base(name: str, value) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    if not ok or not math.isfinite(value) or value <= 0:
        _config_error(name, "rotary_base", f"must be a positive number, not {value!r}")


def _rotary_params(name):
    def check(params):
        _check_offsets(name, params["offsets"])
        check_int_list(name, "ks", params["ks"])
        _check_base(name, params["rotary_base"])
        check_choice(name, "pairs", params["pairs"], PAIRS)

    return check


def _ks_pairs(name):
    def check(params):
        check_int_list(name, "ks", params["ks"])
        if "pairs" in params:
            check_choice(name, "pairs", params["pairs"], PAIRS)
        if "max_tokens" in params:
            check_positive_int(name, "max_tokens", params["max_tokens"], allow=("all",))

    return check


def _pairs_only(name):
    def check(params):
        check_choice(name, "pairs", params["pairs"], PAIRS)
        if "max_tokens" in params:
            check_positive_int(name, "max_tokens", params["max_tokens"], allow=("all",))

    return check


def _optional_ks_pairs(name):
    """``_ks_pairs`` for the token metrics, whose ``ks`` may also be None (the full circuits only)."""
    rest = _pairs_only(name)

    def check(params):
        ks = params["ks"]
        if ks is not None:
            try:
                check_int_list(name, "ks", ks)
                ok = True
            except MetricConfigError:
                ok = False
            if not ok:
                _config_error(
                    name,
                    "ks",
                    f"must be null (the full circuits only) or a non-empty list of positive integers, not {ks!r}",
                )
        rest(params)

    return check


# ---------------------------------------------------------------- subspace matching


def _overlap_table(ctx, pair_iter, a_side, b_side, ks, stat_index):
    out = {}
    for a, b in pair_iter:
        values = {}
        fa = ctx.svd(a)
        vecs = None if fa is None else (fa[2] if a_side == "v" else fa[0])
        for k in ks:
            s = ctx.overlap(a, a_side, b, b_side, int(k))
            if s is None:
                values[f"k{k}"] = math.nan
            else:
                values[f"k{k}"] = float(s.max()) if stat_index == 0 else float(np.sqrt(np.mean(s**2)))
            # the baseline depends on d and k only: defined even where the circuit's value is not
            values[f"k{k}_random"] = (
                math.nan if vecs is None else random_overlap_baseline(vecs.shape[0], int(k))[stat_index]
            )
        out[pair_label(a, b)] = values
    return out


# ---------------------------------------------------------------- suffixes (``outputs=``)


def _overlap_outputs(params) -> list[str]:
    return [f"k{int(k)}{tail}" for k in params["ks"] for tail in ("", "_random")]


def _per_k_outputs(params) -> list[str]:
    return [] if params.get("ks") is None else [f"k{int(k)}" for k in params["ks"]] + ["full"]


def _rotary_outputs(params) -> list[str]:
    offsets = [int(r) for r in params["offsets"]]
    return [f"k{int(k)}_r{r}" for r in offsets for k in params["ks"]] + [f"zscore_r{r}" for r in offsets]


@metric(
    "qk_ov_overlap_max",
    label="QK–OV matching (max cos of principal angles)",
    validate=_ks_pairs("qk_ov_overlap_max"),
    outputs=_overlap_outputs,
)
def qk_ov_overlap_max(ctx: CircuitContext, ks=(1, 2, 4, 8), pairs="all") -> dict:
    """Largest singular value of V₁[:, :k]ᵀU₂[:, :k] (layer-L QK key side vs layer-(L−1) OV output), with random baseline."""
    return _overlap_table(ctx, ctx.qk_ov_pairs(pairs), "v", "u", ks, 0)


@metric(
    "qk_ov_overlap_rms",
    label="QK–OV matching (rms cos of principal angles)",
    validate=_ks_pairs("qk_ov_overlap_rms"),
    outputs=_overlap_outputs,
)
def qk_ov_overlap_rms(ctx: CircuitContext, ks=(1, 2, 4, 8), pairs="all") -> dict:
    """sqrt(mean s²) of the singular values of V₁[:, :k]ᵀU₂[:, :k], with random baseline."""
    return _overlap_table(ctx, ctx.qk_ov_pairs(pairs), "v", "u", ks, 1)


@metric(
    "embed_ov_overlap_max",
    label="embedding–OV matching (max cos of principal angles)",
    validate=_ks_pairs("embed_ov_overlap_max"),
    outputs=_overlap_outputs,
)
def embed_ov_overlap_max(ctx: CircuitContext, ks=(1, 2, 4, 8)) -> dict:
    """Largest singular value of V_E[:, :k]ᵀU_OV[:, :k] (embedding vs first-layer OV heads), with random baseline."""
    return _overlap_table(ctx, ctx.embed_ov_pairs(), "v", "u", ks, 0)


@metric(
    "embed_ov_overlap_rms",
    label="embedding–OV matching (rms cos of principal angles)",
    validate=_ks_pairs("embed_ov_overlap_rms"),
    outputs=_overlap_outputs,
)
def embed_ov_overlap_rms(ctx: CircuitContext, ks=(1, 2, 4, 8)) -> dict:
    """sqrt(mean s²) of the singular values of V_E[:, :k]ᵀU_OV[:, :k], with random baseline."""
    return _overlap_table(ctx, ctx.embed_ov_pairs(), "v", "u", ks, 1)


# ---------------------------------------------------------------- QK·OV products


@metric("qk_ov_diag_zscore", label="diagonal z-score of W_QK·W_OV", validate=_pairs_only("qk_ov_diag_zscore"))
def qk_ov_diag_zscore(ctx: CircuitContext, pairs="all") -> dict:
    """Diagonal z-score of M = W_QK·W_OV in the residual basis."""
    out = {}
    for qk, ov in ctx.qk_ov_pairs(pairs):
        f = ctx.product_factors(qk, ov)
        out[pair_label(qk, ov)] = math.nan if f is None else lowrank_diag_zscore(*f)
    return out


def _token_pairs(ctx: CircuitContext, pairs: str):
    """(label, (E·U₁, (U₁, S₁, V₁), (U₂, S₂, V₂), E·V₂)) per pair, or (label, None) where undefined;
    each head's singular vectors are projected onto E once per layer pair. :func:`_token_factors`
    turns them into the (P, Q) of the full or a truncated E·W_QK·W_OV·Eᵀ = P·Qᵀ."""
    e = ctx.matrix(ctx.embed)
    if e is None:
        for qk, ov in ctx.qk_ov_pairs(pairs):
            yield pair_label(qk, ov), None
        return
    ev_cache: dict[str, np.ndarray | None] = {}  # ov name -> E·V₂ (the layer before the current one)
    eu_cache: dict[str, np.ndarray | None] = {}  # qk name -> E·U₁
    current_module = None
    for qk, ov in ctx.qk_ov_pairs(pairs):
        module = CIRCUIT_RE.match(qk)["module"]
        if module != current_module:
            ev_cache.clear()
            eu_cache.clear()
            current_module = module
        f1, f2 = ctx.svd(qk), ctx.svd(ov)
        if (
            f1 is None
            or f2 is None
            or f1[0] is None
            or f2[0] is None
            or f1[0].shape[0] != e.shape[1]
            or f1[2].shape[0] != f2[0].shape[0]
        ):
            yield pair_label(qk, ov), None
            continue
        if qk not in eu_cache:
            eu_cache[qk] = e @ f1[0]
        if ov not in ev_cache:
            ev_cache[ov] = e @ f2[2]
        yield pair_label(qk, ov), (eu_cache[qk], f1, f2, ev_cache[ov])


def _token_factors(factors, k: int | None = None):
    """(P, Q) with P·Qᵀ = E·W_QK·W_OV·Eᵀ (``k`` None) or E·[W_QK]_k·[W_OV]_k·Eᵀ (the top-k singular
    triplets of each circuit); None if ``factors`` is None or k exceeds the numerical rank of either
    circuit (the kept singular vectors)."""
    if factors is None:
        return None
    eu, (_, s1, v1), (u2, s2, _), ev = factors
    if k is None:
        k1, k2 = s1.size, s2.size
    elif k > s1.size or k > s2.size:
        return None
    else:
        k1 = k2 = k
    core = s1[:k1, None] * (v1[:, :k1].T @ u2[:, :k2]) * s2[None, :k2]
    return eu[:, :k1] @ core, ev[:, :k2]


def _token_table(ctx: CircuitContext, pairs: str, ks, stat) -> dict:
    """{label: stat(P, Q)} (``ks`` None) or {label: {"k{k}": ..., "full": ...}}; NaN where undefined."""
    out = {}
    for label, factors in _token_pairs(ctx, pairs):
        if ks is None:
            f = _token_factors(factors)
            out[label] = math.nan if f is None else stat(*f)
            continue
        values = {}
        for k in [*(int(k) for k in ks), None]:
            f = _token_factors(factors, k)
            values["full" if k is None else f"k{k}"] = math.nan if f is None else stat(*f)
        out[label] = values
    return out


@metric(
    "qk_ov_token_diag_zscore",
    label="token-space diagonal z-score",
    validate=_optional_ks_pairs("qk_ov_token_diag_zscore"),
    outputs=_per_k_outputs,
)
def qk_ov_token_diag_zscore(ctx: CircuitContext, pairs="all", ks=None) -> dict:
    """Diagonal z-score of E·W_QK·W_OV·Eᵀ (token space), optionally per rank-k truncation of both circuits."""
    if ctx.embed is None:
        return {}
    return _token_table(ctx, pairs, ks, lowrank_diag_zscore)


def token_rows(vocab: int, max_tokens) -> np.ndarray:
    """The query tokens the mismatch ratio looks at: all, or a fixed (seed 0) sorted random subset."""
    if max_tokens == "all" or vocab <= int(max_tokens):
        return np.arange(vocab)
    return np.sort(np.random.default_rng(0).choice(vocab, int(max_tokens), replace=False))


@metric(
    "qk_ov_token_mismatch",
    label="token mismatch ratio",
    validate=_optional_ks_pairs("qk_ov_token_mismatch"),
    outputs=_per_k_outputs,
)
def qk_ov_token_mismatch(ctx: CircuitContext, pairs="all", max_tokens=2048, ks=None) -> dict:
    """Share of tokens t whose row of E·W_QK·W_OV·Eᵀ has its argmax elsewhere than t (optionally per rank k)."""
    if ctx.embed is None:
        return {}
    rows = {}  # vocab -> the query tokens (one subset for every pair and k)

    def mismatch(p, q):
        if p.shape[0] not in rows:
            rows[p.shape[0]] = token_rows(p.shape[0], max_tokens)
        return lowrank_argmax_mismatch(p, q, rows[p.shape[0]])

    return _token_table(ctx, pairs, ks, mismatch)


# ---------------------------------------------------------------- rotary sweep


def _rotary_head_svds(ctx: CircuitContext, q: str, k: str, offsets, base):
    """{r: (U, s, V) of W_QK(r)} for one head, or None where the pieces are unusable."""
    wq, wk = ctx.store[q], ctx.store[k]
    if wq is None or wk is None:  # NaN/Inf pieces: warned by the store
        return None
    if wq.ndim != 2 or wq.shape != wk.shape:
        warn(
            f"qk_ov_rotary_sweep: {q} {wq.shape} and {k} {wk.shape} are not matching [d_head, d_model] "
            "matrices; recorded as NaN"
        )
        return None
    if wq.shape[0] % 2:
        warn(f"qk_ov_rotary_sweep: {q} has an odd d_head ({wq.shape[0]}), no rotary pairs; recorded as NaN")
        return None
    return {r: rotary_qk_svd(wq, wk, r, base) for r in offsets}


@metric(
    "qk_ov_rotary_sweep",
    label="rotary QK–OV matching",
    validate=_rotary_params("qk_ov_rotary_sweep"),
    outputs=_rotary_outputs,
)
def qk_ov_rotary_sweep(
    ctx: CircuitContext, offsets=(0, 1, 2, 4, 8, 16), ks=(1, 2, 4), rotary_base=10000.0, pairs="all"
) -> dict:
    """K-composition matching of W_QK(r) = W_Qᵀ·R(−r·ω)·W_K/√d_head (key r positions back) with the layer-(L−1) OV heads, per offset r."""
    offsets = [int(r) for r in offsets]
    heads, missing = ctx.rotary_heads()
    if missing:
        shown = ", ".join(missing[:6]) + (f", … ({len(missing)} in all)" if len(missing) > 6 else "")
        warn(
            f"qk_ov_rotary_sweep: the weights extraction lacks the per-head pieces {shown}; no rows for "
            "those heads (add '<attn>.head*.q' and '<attn>.head*.k' to targets.weights)"
        )
    e = None if ctx.embed is None else ctx.matrix(ctx.embed)
    ev_cache: dict[str, np.ndarray] = {}  # ov name -> E·V₂ (the module before the current one)
    current_module = None
    out = {}
    for module, h, q, k, ovs in heads:
        if module != current_module:
            ev_cache.clear()
            current_module = module
        ovs = [(h2, ov) for h2, ov in ovs if pairs == "all" or h2 == h]
        if not ovs:
            continue
        svds = _rotary_head_svds(ctx, q, k, offsets, rotary_base)
        eu_cache: dict[int, np.ndarray] = {}  # r -> E·U₁(r)
        for _, ov in ovs:
            f2 = ctx.svd(ov)
            values = {}
            for r in offsets:
                f1 = None if svds is None else svds[r]
                usable = f1 is not None and f2 is not None and f2[0] is not None and f1[2].shape[0] == f2[0].shape[0]
                for kk in ks:
                    kk = int(kk)
                    if usable and kk <= f1[2].shape[1] and kk <= f2[0].shape[1]:
                        values[f"k{kk}_r{r}"] = float(overlap_singular_values(f1[2][:, :kk], f2[0][:, :kk]).max())
                    else:
                        values[f"k{kk}_r{r}"] = math.nan
                if ctx.embed is None:
                    continue
                if not usable or e is None or e.shape[1] != f1[0].shape[0]:
                    values[f"zscore_r{r}"] = math.nan
                    continue
                if r not in eu_cache:
                    eu_cache[r] = e @ f1[0]
                if ov not in ev_cache:
                    ev_cache[ov] = e @ f2[2]
                core = f1[1][:, None] * (f1[2].T @ f2[0]) * f2[1][None, :]
                values[f"zscore_r{r}"] = lowrank_diag_zscore(eu_cache[r] @ core, ev_cache[ov])
            out[pair_label(f"{module}.head{h}.qk", ov)] = values
    return out
