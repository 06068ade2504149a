"""Per-layer metrics computed elsewhere (source ``type: table``), as a tidy table: ``run, step, layer, metric, value``.

``load_table(path, runs=None, layers=None, metrics=None)`` reads a CSV (``.csv``, ``.csv.gz``, ``.tsv``)
or Parquet (``.parquet``, ``.pq``) file with the columns ``step, layer, metric, value`` and either
``run`` or ``model`` (renamed ``run``; ``run`` wins if both are there). Filters:

- ``runs``, ``metrics``: names (exact), a string or a list;
- ``layers``: patterns with :mod:`ckptlens.store.patterns` semantics (``*`` stays within a dotted component,
  ``**`` crosses dots, anchored at both ends), or a plain Python regular expression when the pattern
  starts with ``re:`` (``re.search`` semantics: anchor it with ``^``/``$`` yourself).

A filter value that matches nothing is an error (a typo, most likely) naming what the table has.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..store.patterns import matches
from ..store.tidy import TIDY_COLUMNS
from . import Source, register

#: Metrics of published tables that ckptlens reads (the Pythia learning-dynamics study,
#: ../shared/data/pythia-learning-dynamics), with the axis labels figures give them.
PUBLISHED_METRICS = {
    "cka_scores": "linear CKA to the final checkpoint",
    "grad_sim": "cosine of consecutive batches' gradients",
    "grad_weight_magnitudes": "gradient norm ‖∇W‖_F",
    "weight_magnitudes": "weight norm ‖W‖_F",
}


class TableError(ValueError):
    """A metrics table that cannot be read or filtered as asked; the message names the file."""


_PARQUET = (".parquet", ".pq")


def _read(path: Path):
    import pandas as pd

    name = path.name.lower()
    try:
        if name.endswith(_PARQUET):
            return pd.read_parquet(path)
        if name.endswith((".tsv", ".tsv.gz")):
            return pd.read_csv(path, sep="\t")
        if name.endswith((".csv", ".csv.gz")):
            return pd.read_csv(path)
    except Exception as exc:  # ParserError, ArrowInvalid, UnicodeDecodeError, ...: name the file
        raise TableError(f"{path}: cannot be read as a table ({type(exc).__name__}: {exc})") from exc
    raise TableError(f"{path}: unsupported table format (expected .csv, .tsv or .parquet)")


def _as_list(x, what: str) -> list[str] | None:
    if x is None:
        return None
    if isinstance(x, str):
        return [x]
    x = list(x)
    if not x:
        raise TableError(f"{what}: an empty filter list (leave it out to keep everything)")
    return [str(i) for i in x]


def layer_matches(pattern: str, name: str) -> bool:
    if pattern.startswith("re:"):
        return re.search(pattern[3:], name) is not None
    return matches(pattern, name)


def load_table(path, runs=None, layers=None, metrics=None):
    """The tidy table ``run, step, layer, metric, value`` (in that column order, the file's row order),
    filtered; see the module docstring."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise TableError(f"{path}: metrics table does not exist")
    df = _read(path)
    cols = [str(c) for c in df.columns]
    if "run" not in cols and "model" in cols:
        df = df.rename(columns={"model": "run"})
        cols = [str(c) for c in df.columns]
    missing = [c for c in TIDY_COLUMNS if c not in cols]
    if missing:
        need = [("run (or model)" if c == "run" else c) for c in missing]
        raise TableError(f"{path}: missing column(s) {', '.join(need)} (the table has: {', '.join(cols)})")
    df = df[TIDY_COLUMNS].copy()
    if df["step"].isna().any():
        raise TableError(f"{path}: column step has empty values")
    try:
        steps = pd.to_numeric(df["step"], errors="raise")
    except (ValueError, TypeError) as exc:
        raise TableError(f"{path}: column step is not numeric ({exc})") from None
    if (steps != steps.round()).any():
        raise TableError(f"{path}: column step has non-integer values")
    df["step"] = steps.astype("int64")
    try:
        df["value"] = pd.to_numeric(df["value"], errors="raise").astype("float64")
    except (ValueError, TypeError) as exc:
        raise TableError(f"{path}: column value is not numeric ({exc})") from None
    for c in ("run", "layer", "metric"):
        df[c] = df[c].astype(str)

    keep = pd.Series(True, index=df.index)
    for col, values in (("run", _as_list(runs, "runs")), ("metric", _as_list(metrics, "metrics"))):
        if values is None:
            continue
        have = set(df[col].unique())
        absent = [v for v in values if v not in have]
        if absent:
            raise TableError(f"{path}: no {col} named {absent} (the table has: {sorted(have)})")
        keep &= df[col].isin(values)
    pats = _as_list(layers, "layers")
    if pats is not None:
        for p in pats:
            if p.startswith("re:"):
                try:
                    re.compile(p[3:])
                except re.error as exc:
                    raise TableError(f"layers: {p!r} is not a valid regular expression ({exc})") from None
        names = df["layer"].unique()
        chosen = {n for n in names if any(layer_matches(p, n) for p in pats)}
        dead = [p for p in pats if not any(layer_matches(p, n) for n in names)]
        if dead:
            raise TableError(f"{path}: layer pattern(s) {dead} match no layer (e.g. {sorted(names)[:5]})")
        keep &= df["layer"].isin(chosen)
    return df[keep].reset_index(drop=True)


SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["path"],
    "description": "an already computed tidy metrics table (CSV/Parquet with run|model, metric, layer, step, value)",
    "properties": {
        "type": {"const": "table"},
        "path": {"type": "string", "minLength": 1},
        "select": {
            "type": "string",
            "description": "the value of the run/model column to take (default: the run's name)",
        },
        "layers": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "metrics": {"type": "array", "items": {"type": "string"}},
    },
}

register(
    Source(
        type="table",
        kind="table",
        description="a tidy metrics table computed elsewhere (the published Pythia study)",
        schema=SCHEMA,
        steps=lambda spec: [],  # the table brings its own steps
    )
)
