"""Checkpoints from the Hugging Face Hub (source ``type: huggingface``): one revision (git branch) per training step, as EleutherAI
publishes Pythia (``EleutherAI/pythia-160m-deduped`` at revision ``step1000``, ...).

- :func:`pythia_steps`, :func:`select_revisions`: which revisions, as ``{step: revision}`` — pure, no
  network, so the workflow can call them while Snakemake parses it;
- :func:`download_revision`: one revision's weights, config and tokenizer files into a folder
  (``huggingface_hub.snapshot_download``, inside a job; ``ckptlens fetch`` downloads beforehand), marked with
  :data:`MARKER` so that :func:`cleanup` can later delete it — and only it;
- :func:`fetch_or_record`: the workflow job (source ``type: huggingface``): one revision taken from the
  Hugging Face cache when it is complete there (:func:`cached_snapshot`, no network: how jobs read
  offline, ``HF_HUB_OFFLINE=1``), else downloaded, converted to safetensors and its download deleted
  (``delete_after``); a revision whose checkpoint cannot be read becomes a failure record;
- :func:`select_checkpoints`: series published as one repository per checkpoint (``models``) or as a
  revision list in a file (``revisions_file``), steps parsed from the names (:func:`revision_step`,
  :func:`repo_step`);
- :func:`resolve_revision`, :func:`bytes_needed`, :func:`download_to_cache`: ``ckptlens fetch`` — each
  revision resolved to its commit with its file sizes, then downloaded into the Hugging Face cache,
  retried after the ``Retry-After`` of a 429 (:func:`with_retries`).

Nothing here imports ``huggingface_hub`` (or anything heavy) at import time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..store import layout
from ..store.failures import write_checkpoint_record
from ..store.joblog import warn
from ..store.records import CheckpointError, make_record
from ..store.requires import require
from . import Source, SourceError, parse_model_size, register

#: file written into a download folder before anything else; :func:`cleanup` deletes only folders holding it
MARKER = ".ckptlens-download.json"
_MARKER_SIGNATURE = "ckptlens hub download"

#: what is fetched of a revision: weights (safetensors or PyTorch, sharded or not), config, tokenizer
ALLOW_PATTERNS = [
    "config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "generation_config.json",
]

PYTHIA_FINAL_STEP = 143000
#: a download that fails for another reason than a missing repository or revision is tried again
#: (a network fault is not a bad checkpoint), after DOWNLOAD_BACKOFF_S × attempt seconds
DOWNLOAD_ATTEMPTS = 3
DOWNLOAD_BACKOFF_S = 5.0


class RevisionError(ValueError):
    """A bad revision selection, or a revision that cannot be downloaded; the message names it."""


def pythia_steps() -> list[int]:
    """The 154 steps EleutherAI published for every Pythia model: 0, 1, 2, 4, …, 512, then every 1000
    steps from 1000 to 143000."""
    return [0] + [2**i for i in range(10)] + list(range(1000, PYTHIA_FINAL_STEP + 1, 1000))


#: the step in a published revision's name: ``step1000`` (Pythia), ``step-125000`` and
#: ``stage1-step-40000`` (SmolLM2/3), ``step1000-tokens4B`` (OLMo-1), ``stage1-step1000-tokens4B`` and
#: ``stage2-ingredient1-step11000-tokens93B`` (OLMo-2), ``global_step1200`` (BLOOM, Megatron/DeepSpeed),
#: ``ckpt_000`` (Amber, K2), ``checkpoint-1200`` (the Trainer; Stanford CRFM's GPT-2 runs)
_STEP_NAMES = (
    re.compile(r"^(?:[A-Za-z0-9]+-)*?(?:global_)?step[-_]?(\d+)(?:-[A-Za-z0-9.]+)*$"),
    re.compile(r"^(?:ckpt|checkpoint)[-_](\d+)$"),
)


def revision_step(name: str) -> int | None:
    """The training step in a revision's name (see :data:`_STEP_NAMES`), None where it has none
    (``main``). The rest of the name (a stage, a token count) is not part of the step: the revision
    keeps its full name."""
    name = str(name).strip()
    for rx in _STEP_NAMES:
        m = rx.match(name)
        if m:
            return int(m[1])
    return None


def revision_name(step: int) -> str:
    return f"step{int(step)}"


def _step_of(rev) -> int:
    if isinstance(rev, bool):
        raise RevisionError(f"revision {rev!r}: expected a step number or a name like 'step1000'")
    if isinstance(rev, int):
        if rev < 0:
            raise RevisionError(f"revision {rev}: steps are non-negative")
        return rev
    step = revision_step(rev)
    if step is None:
        raise RevisionError(
            f"revision {rev!r}: no step in its name (expected 'step<N>', 'step-<N>', 'stage1-step<N>-tokens<T>B', "
            "'global_step<N>', 'ckpt_<N>', 'checkpoint-<N>' or an integer; for another name give a mapping "
            "{step: revision})"
        )
    return step


def select_revisions(spec: Mapping) -> dict[int, str]:
    """``{step: revision}``, sorted by step, from a source spec (pure: no network).

    - ``revisions``: a list of names like ``"step1000"`` or step integers, or a mapping
      ``{step: revision name}`` (for branches whose name has no step, e.g. ``{143000: main}``);
    - or ``steps``: ``"pythia"`` (the 154 published steps, :func:`pythia_steps`) or a list of integers,
      with ``every: N`` (every N-th of them, starting with the first; default 1) and
      ``include_final: true`` (add the last one if the thinning skipped it).
    """
    if "revisions" in spec and "steps" in spec:
        raise RevisionError("give either 'revisions' or 'steps' (with 'every'), not both")
    given = [k for k in ("revisions", "revisions_file", "steps", "models") if k in spec]
    if len(given) > 1:
        raise RevisionError(f"give one of 'revisions', 'revisions_file', 'steps', 'models'; not {' and '.join(given)}")
    if "models" in spec:
        return {s: rev for s, (_, rev) in select_checkpoints(spec).items()}
    if "revisions_file" in spec:
        return _revisions_from_file(spec)
    if "revisions" in spec and "match" in spec and isinstance(spec["revisions"], (list, tuple)):
        return _thin(spec, _listed(_matching(spec, list(spec["revisions"])), "revisions"))
    if "revisions" in spec:
        revs = spec["revisions"]
        if isinstance(revs, Mapping):
            out = {}
            for step, name in revs.items():
                try:
                    s = int(step)
                except (TypeError, ValueError):
                    raise RevisionError(f"revisions: key {step!r} is not a step number") from None
                if not isinstance(name, str) or not name:
                    raise RevisionError(f"revisions: step {s} maps to {name!r}, not a revision name")
                out[s] = name
        elif isinstance(revs, (list, tuple)):
            out = {}
            for r in revs:
                s = _step_of(r)
                if s in out:
                    raise RevisionError(
                        f"revisions: step {s} is listed twice ({out[s]!r} and {r!r}); revisions of different "
                        "stages with the same step need a mapping {step: revision} with steps that tell them apart"
                    )
                out[s] = r if isinstance(r, str) else revision_name(s)
        else:
            raise RevisionError(f"revisions: expected a list or a mapping, got {type(revs).__name__}")
        if not out:
            raise RevisionError("revisions: the list is empty")
        return _thin(spec, out)
    if "steps" not in spec:
        raise RevisionError("give 'revisions' (a list) or 'steps' ('pythia' or a list of integers)")
    steps = spec["steps"]
    if steps == "pythia":
        steps = pythia_steps()
    elif (
        isinstance(steps, (list, tuple))
        and steps
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in steps)
    ):
        steps = sorted(set(steps))
    else:
        raise RevisionError(f"steps: expected 'pythia' or a non-empty list of step integers, got {steps!r}")
    every = spec.get("every", 1)
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise RevisionError(f"every: expected a positive integer, got {every!r}")
    chosen = steps[::every]
    if spec.get("include_final") and chosen[-1] != steps[-1]:
        chosen.append(steps[-1])
    return {s: revision_name(s) for s in chosen}


#: a step in a repository's name, one repository per checkpoint: ``TinyLlama-1.1B-intermediate-step-480k-1T``
#: (a ``k`` counts thousands), ``multiberts-seed_0-step_20k``; the last step mark of the name counts
_REPO_STEP = re.compile(r"(?:^|[^a-z0-9])step[-_]?(\d+)(k?)(?![a-z0-9])", re.IGNORECASE)
#: a training stage in a revision's name: steps restart in each (OLMo-2, SmolLM3)
_STAGE = re.compile(r"^(stage\d+(?:-ingredient\d+)?)-", re.IGNORECASE)


def repo_step(repo_id: str) -> int | None:
    """The training step in a repository's name (one repository per checkpoint), None where it has
    none: ``TinyLlama/TinyLlama-1.1B-intermediate-step-480k-1T`` -> 480000,
    ``google/multiberts-seed_0-step_20k`` -> 20000; a name that is a revision name
    (:func:`revision_step`) gives its step."""
    name = str(repo_id).rsplit("/", 1)[-1]
    marks = _REPO_STEP.findall(name)
    if marks:
        digits, k = marks[-1]
        return int(digits) * (1000 if k else 1)
    return revision_step(name)


def revision_stage(name: str) -> str | None:
    """The training stage a revision's name starts with (``stage1``, ``stage2-ingredient3``), or None."""
    m = _STAGE.match(str(name).strip())
    return m[1] if m else None


#: column names that hold the revision (and the step) in a revisions CSV (OLMo-2's lists)
_CSV_REVISION_COLUMNS = ("revision", "revisions", "branch", "ref", "name", "checkpoint")
_CSV_STEP_COLUMNS = ("step", "steps", "global_step")


def read_revisions_file(path) -> list:
    """The revisions a file lists: one per line (OLMo's ``revisions.txt``; blank lines and ``#``
    comments skipped), or a ``.csv`` (OLMo-2's lists) whose revision column is named ``revision``,
    ``branch``, ``ref``, ``name`` or ``checkpoint`` (else the first column, after a header row without
    a step in its first cell). With a ``step`` column the list is ``[(step, revision), …]``; otherwise
    revision names, their steps parsed by :func:`revision_step`."""
    import csv

    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise RevisionError(f"revisions_file {path}: cannot be read ({exc.strerror or exc})") from None
    if p.suffix.lower() != ".csv":
        out = [ln.strip() for ln in text.splitlines()]
        out = [ln for ln in out if ln and not ln.startswith("#")]
    else:
        rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
        if not rows:
            raise RevisionError(f"revisions_file {path}: no rows")
        header = [c.strip().lower() for c in rows[0]]
        rev_col = next((header.index(c) for c in _CSV_REVISION_COLUMNS if c in header), None)
        step_col = next((header.index(c) for c in _CSV_STEP_COLUMNS if c in header), None)
        if rev_col is None and step_col is None:
            rev_col = 0
            if revision_step(rows[0][0]) is None:  # a header whose names we do not know
                rows = rows[1:]
        else:
            if rev_col is None:
                raise RevisionError(
                    f"revisions_file {path}: no revision column (one of {', '.join(_CSV_REVISION_COLUMNS)})"
                )
            rows = rows[1:]
        out = []
        for i, r in enumerate(rows, start=2):
            rev = r[rev_col].strip() if rev_col < len(r) else ""
            if not rev:
                raise RevisionError(f"revisions_file {path}: row {i} has no revision")
            if step_col is None:
                out.append(rev)
                continue
            try:
                out.append((int(r[step_col].strip()), rev))
            except (ValueError, IndexError):
                raise RevisionError(f"revisions_file {path}: row {i}: no step integer in its step column") from None
    if not out:
        raise RevisionError(f"revisions_file {path}: lists no revision")
    return out


def _thin(spec: Mapping, chosen: Mapping[int, object]) -> dict:
    """``every: N`` (every N-th step, starting with the first) and ``include_final``, sorted by step."""
    every = spec.get("every", 1)
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise RevisionError(f"every: expected a positive integer, got {every!r}")
    steps = sorted(chosen)
    kept = steps[::every]
    if spec.get("include_final") and kept[-1] != steps[-1]:
        kept.append(steps[-1])
    return {s: chosen[s] for s in kept}


def _matching(spec: Mapping, names: list) -> list:
    """The names (or ``(step, name)`` pairs) that ``match: REGEX`` finds, all without ``match``."""
    pattern = spec.get("match")
    if pattern is None:
        return names
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise RevisionError(f"match {pattern!r} is not a valid regular expression ({exc})") from None
    kept = [n for n in names if rx.search(n[1] if isinstance(n, tuple) else str(n))]
    if not kept:
        raise RevisionError(f"match {pattern!r}: no revision matches")
    return kept


def _listed(revs: list, what: str) -> dict[int, str]:
    out: dict[int, str] = {}
    for r in revs:
        s, name = r if isinstance(r, tuple) else (_step_of(r), r if isinstance(r, str) else revision_name(_step_of(r)))
        if s in out:
            stages = {revision_stage(out[s]), revision_stage(name)}
            hint = (
                "; steps restart in each training stage: one run per stage (match: '^stage1-')"
                if len(stages) > 1
                else ""
            )
            raise RevisionError(f"{what}: step {s} is listed twice ({out[s]!r} and {name!r}){hint}")
        out[s] = name
    if not out:
        raise RevisionError(f"{what}: the list is empty")
    return out


def _revisions_from_file(spec: Mapping) -> dict[int, str]:
    path = spec["revisions_file"]
    return _thin(spec, _listed(_matching(spec, read_revisions_file(path)), f"revisions_file {path}"))


def select_checkpoints(spec: Mapping) -> dict[int, tuple[str, str]]:
    """``{step: (repository, revision)}``, sorted by step (pure: no network; a ``revisions_file`` is read).

    A series published as one repository per checkpoint (TinyLlama's ``…-intermediate-step-480k-1T``,
    MultiBERTs' ``multiberts-seed_0-step_20k``) is ``models``: a list of repository ids (steps from their
    names, :func:`repo_step`) or a mapping ``{step: repository}``, each at ``revision`` (default ``main``),
    filtered by ``match`` and thinned by ``every`` / ``include_final``. Any other spec is ``model`` at each
    revision of :func:`select_revisions`."""
    if "models" not in spec:
        if "model" not in spec:
            raise RevisionError("give 'model' (a repository id) or 'models' (one repository per checkpoint)")
        return {s: (spec["model"], rev) for s, rev in select_revisions(spec).items()}
    others = [k for k in ("model", "revisions", "revisions_file", "steps") if k in spec]
    if others:
        raise RevisionError(f"'models' names one repository per checkpoint: no {' or '.join(others)} with it")
    models, rev = spec["models"], spec.get("revision", "main")
    out: dict[int, str] = {}
    if isinstance(models, Mapping):
        for step, repo in models.items():
            try:
                s = int(step)
            except (TypeError, ValueError):
                raise RevisionError(f"models: key {step!r} is not a step number") from None
            if not isinstance(repo, str) or not repo:
                raise RevisionError(f"models: step {s} maps to {repo!r}, not a repository id")
            out[s] = repo
    elif isinstance(models, (list, tuple)) and all(isinstance(m, str) and m for m in models):
        for repo in _matching(spec, list(models)):
            s = repo_step(repo)
            if s is None:
                raise RevisionError(
                    f"models: no step in the name {repo!r} (e.g. '…-step-480k-…', '…-step_20k'); "
                    "give a mapping {step: repository}"
                )
            if s in out:
                raise RevisionError(f"models: step {s} is named twice ({out[s]!r} and {repo!r})")
            out[s] = repo
    else:
        raise RevisionError("models: expected a list of repository ids or a mapping {step: repository id}")
    if not out:
        raise RevisionError("models: the list is empty")
    return {s: (repo, rev) for s, repo in _thin(spec, out).items()}


# --------------------------------------------------------------------------------------------- download
def _write_marker(dest: Path, model_id: str, revision: str) -> None:
    (dest / MARKER).write_text(json.dumps({"created_by": _MARKER_SIGNATURE, "model": model_id, "revision": revision}))


def _is_ours(path: Path, marker: str = MARKER) -> bool:
    m = path / marker
    if m.is_symlink() or not m.is_file():
        return False
    try:
        return json.loads(m.read_text()).get("created_by") == _MARKER_SIGNATURE
    except (OSError, ValueError, AttributeError):
        return False


def download_revision(model_id: str, revision: str, dest_dir, cache_dir=None) -> Path:
    """Download ``model_id`` at ``revision`` (weights, config.json, tokenizer files; see
    :data:`ALLOW_PATTERNS`) into ``dest_dir`` and return it.

    ``dest_dir`` must be new, empty, or a folder this function created before (it then resumes); a
    marker file (:data:`MARKER`) is written first, so that :func:`cleanup` may delete the folder —
    even after a failed download — and never a folder we did not create. Raises
    :class:`RevisionError` naming the model and revision when the download fails or brings no weights.
    """
    from .readers import is_checkpoint_dir

    # before any folder is made: a missing package is one line, not a half-made download
    snapshot_download = require("huggingface_hub", "the huggingface source (downloading revisions)").snapshot_download
    dest = Path(dest_dir)
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise RevisionError(f"{model_id}@{revision}: destination {dest} exists and is not a folder")
    if dest.exists() and any(dest.iterdir()) and not _is_ours(dest):
        raise RevisionError(
            f"{model_id}@{revision}: destination {dest} already holds files that ckptlens did not download "
            f"(no {MARKER}); choose an empty folder"
        )
    dest.mkdir(parents=True, exist_ok=True)
    if not _is_ours(dest):
        _write_marker(dest, model_id, revision)
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        try:
            snapshot_download(
                repo_id=model_id,
                revision=revision,
                allow_patterns=ALLOW_PATTERNS,
                local_dir=str(dest),
                cache_dir=None if cache_dir is None else str(cache_dir),
            )
            break
        except Exception as exc:  # RepositoryNotFoundError, RevisionNotFoundError, HTTP/OS errors, offline mode
            msg = " ".join(str(exc).split())[:400]
            if is_permanent(exc) or attempt == DOWNLOAD_ATTEMPTS:
                raise RevisionError(f"{model_id}@{revision}: download failed ({type(exc).__name__}: {msg})") from exc
            wait = retry_after(exc)
            wait = DOWNLOAD_BACKOFF_S * attempt if wait is None else wait
            warnings.warn(
                f"{model_id}@{revision}: download attempt {attempt} failed ({msg}); trying again in {wait:g} s",
                stacklevel=2,
            )
            time.sleep(wait)
    if not is_checkpoint_dir(dest):
        raise RevisionError(
            f"{model_id}@{revision}: the download holds no weights (no model.safetensors, pytorch_model.bin "
            f"or shard index in {dest})"
        )
    if not (dest / "config.json").is_file():
        raise RevisionError(f"{model_id}@{revision}: the download has no config.json ({dest})")
    return dest


def fetch_revision(
    model_id: str, revision: str, dst, download_dir, cache_dir=None, delete_after: bool = True, tokenizer_dir=None
) -> Path:
    """One workflow job's worth: the revision's complete snapshot in the Hugging Face cache if it is there
    (:func:`cached_snapshot`: what ``ckptlens fetch`` put there; no network), else — unless
    ``HF_HUB_OFFLINE`` forbids it (:class:`RevisionError` saying to fetch first) — a download into
    ``download_dir``; converted to the safetensors
    file ``dst`` (:func:`ckptlens.sources.importer.import_checkpoint`: safe loading, config.json kept in the
    metadata), copy its tokenizer files to ``tokenizer_dir`` if given (and if it has any), then delete the
    download if ``delete_after`` (only our marked folder, never the cache; see :func:`cleanup`). Returns ``dst``."""
    from .importer import import_checkpoint
    from .readers import tokenizer_files

    folder = cached_snapshot(model_id, revision, cache_dir)
    ours = folder is None
    if folder is None:
        if hub_offline():
            raise RevisionError(
                f"{model_id}@{revision}: not in the Hugging Face cache ({hub_cache_dir(cache_dir)}) and HF_HUB_OFFLINE "
                "is set; download it first where there is internet: ckptlens fetch CONFIG (with the same HF_HOME / "
                "HF_HUB_CACHE, or the source's cache_dir)"
            )
        folder = download_revision(model_id, revision, download_dir, cache_dir=cache_dir)
    try:
        import_checkpoint(folder, dst)
    except ValueError as exc:
        raise RevisionError(f"{model_id}@{revision}: the downloaded checkpoint cannot be imported ({exc})") from exc
    if tokenizer_dir is not None:
        found = tokenizer_files(folder)
        if found:
            tdir = Path(tokenizer_dir)
            tdir.mkdir(parents=True, exist_ok=True)
            for f in found:
                shutil.copyfile(f, tdir / f.name)
    if delete_after and ours:  # the Hugging Face cache is never ours to delete
        cleanup(folder)
    return Path(dst)


def cleanup(path, created_by_us_marker: str = MARKER) -> bool:
    """Delete a downloaded revision folder — only if it holds the marker file written by
    :func:`download_revision` (a regular file with our signature). Returns whether it was deleted;
    a folder without the marker is left alone with a warning."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return False
    if path.is_symlink() or not path.is_dir():
        warnings.warn(f"{path}: not a download folder (a file or a link); not deleted", stacklevel=2)
        return False
    if not _is_ours(path, created_by_us_marker):
        warnings.warn(f"{path}: no {created_by_us_marker} marker from a ckptlens download; not deleted", stacklevel=2)
        return False
    shutil.rmtree(path)
    return True


def fetch_or_record(
    model: str, revision: str, dst, download_dir, cache_dir=None, step: int | None = None, delete_after: bool = True
) -> dict | None:
    """The workflow job: :func:`fetch_revision`, the download deleted afterwards if ``delete_after`` (the
    source's setting; the converted checkpoint is the workflow's to delete, ``temp()``). A downloaded
    checkpoint that cannot be read gives a failure record (file ``model@revision``), returned; a
    failed *download* still fails the job (after its retries): a network fault is not a bad
    checkpoint."""
    try:
        fetch_revision(model, revision, dst, download_dir=download_dir, cache_dir=cache_dir, delete_after=delete_after)
        return None
    except RevisionError as exc:
        if not isinstance(exc.__cause__, CheckpointError):
            raise
        if delete_after and Path(download_dir).exists():
            cleanup(download_dir)
        record = make_record(f"{model}@{revision}", str(exc.__cause__), step)
    warn(f"step {step}: bad checkpoint {record['file']}: {record['reason']} — recorded as a failed step")
    write_checkpoint_record(dst, record)
    return record


# --------------------------------------------------------------------------------------------- cache, fetch
#: HTTP statuses and huggingface_hub errors that no retry mends
_PERMANENT_STATUS = (401, 403, 404)
_PERMANENT_ERRORS = {
    "RepositoryNotFoundError",
    "RevisionNotFoundError",
    "GatedRepoError",
    "DisabledRepoError",
    "EntryNotFoundError",
    "RemoteEntryNotFoundError",
    "OfflineModeIsEnabled",
}
_COMMIT = re.compile(r"[0-9a-f]{40}")
#: the longest wait a Retry-After header is followed for (a longer one: this wait, then the next try)
MAX_RETRY_AFTER_S = 600.0


def _chain(exc: BaseException | None):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _response(exc: BaseException):
    """The HTTP response an error (or one it was raised from) carries, or None."""
    for e in _chain(exc):
        resp = getattr(e, "response", None)
        if isinstance(getattr(resp, "status_code", None), int):
            return resp
    return None


def retry_after(exc: BaseException) -> float | None:
    """Seconds to wait before trying again after ``exc``: the ``Retry-After`` header (seconds or an
    HTTP date) of a 429 or 503 response in its chain, at most :data:`MAX_RETRY_AFTER_S`; None
    without one (then the caller's backoff)."""
    import email.utils

    resp = _response(exc)
    if resp is None or resp.status_code not in (429, 503):
        return None
    value = (resp.headers.get("Retry-After") or "").strip()
    if not value:
        return None
    try:
        wait = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        wait = when.timestamp() - time.time()
    return min(max(wait, 0.0), MAX_RETRY_AFTER_S)


def is_permanent(exc: BaseException) -> bool:
    """Whether trying again cannot help: a missing or gated repository, revision or file, no
    permission, or offline mode."""
    if any(type(e).__name__ in _PERMANENT_ERRORS for e in _chain(exc)):
        return True
    resp = _response(exc)
    return resp is not None and resp.status_code in _PERMANENT_STATUS


def with_retries(call, what: str, attempts: int = 5, backoff_s: float = 2.0, max_backoff_s: float = 60.0, log=None):
    """``call()``, tried again after a transient failure (a network fault, HTTP 429 or 5xx): after the
    ``Retry-After`` a 429 asks for, else after ``backoff_s`` doubling up to ``max_backoff_s``;
    ``attempts`` in all. A permanent failure (:func:`is_permanent`) is raised at once."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            if is_permanent(exc) or attempt == attempts:
                raise
            wait = retry_after(exc)
            why = "rate-limited (HTTP 429)" if (r := _response(exc)) is not None and r.status_code == 429 else None
            if wait is None:
                wait = min(backoff_s * 2 ** (attempt - 1), max_backoff_s)
            msg = why or " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            (log or warn)(f"{what}: {msg}; trying again in {wait:g} s (attempt {attempt + 1} of {attempts})")
            time.sleep(wait)
    raise AssertionError("unreachable")


def throttle_requests(interval_s: float) -> bool:
    """Space the starts of every HTTP request huggingface_hub makes in this process (every thread)
    at least ``interval_s`` apart, through its client factory; False where the installed
    huggingface_hub has none (the caller then spaces its own calls)."""
    import threading

    hf = require("huggingface_hub", "ckptlens fetch (downloading revisions)")
    try:
        from huggingface_hub.utils import _http
    except ImportError:
        return False
    base = getattr(_http, "default_client_factory", None)
    if base is None or not hasattr(hf, "set_client_factory") or interval_s <= 0:
        return interval_s <= 0
    lock, last = threading.Lock(), [None]

    def space(request) -> None:
        with lock:
            now = time.monotonic()
            if last[0] is not None and (wait := last[0] + interval_s - now) > 0:
                time.sleep(wait)
                now = time.monotonic()
            last[0] = now

    def factory():
        client = base()
        client.event_hooks["request"].append(space)
        return client

    hf.set_client_factory(factory)
    hf.close_session()
    return True


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) forbids the network, as huggingface_hub reads it."""
    return any(
        os.environ.get(k, "").strip().upper() in ("1", "ON", "YES", "TRUE")
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_cache_dir(cache_dir=None) -> Path:
    """The Hugging Face cache the source reads: its ``cache_dir``, else ``HF_HUB_CACHE`` (``$HF_HOME/hub``,
    ``~/.cache/huggingface/hub``) as huggingface_hub resolves it."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    require("huggingface_hub", "the huggingface source (the Hugging Face cache)")
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_cache_dir(model_id: str, cache_dir=None) -> Path:
    return hub_cache_dir(cache_dir) / ("models--" + model_id.replace("/", "--"))


def snapshot_complete(folder) -> bool:
    """Whether a snapshot folder holds a readable checkpoint: config.json, its weights (every shard of
    an index) and no link into a blob that is missing (an interrupted download)."""
    from .readers import HF_INDEX_FILES, hf_weights_file

    folder = Path(folder)
    if not folder.is_dir() or not (folder / "config.json").is_file():
        return False
    weights = hf_weights_file(folder)
    if weights is None or not weights.is_file():
        return False
    if weights.name in HF_INDEX_FILES:
        try:
            shards = set(json.loads(weights.read_text()).get("weight_map", {}).values())
        except (OSError, ValueError, AttributeError):
            return False
        if not shards or not all((folder / s).is_file() for s in shards):
            return False
    return all(p.exists() for p in folder.rglob("*"))  # a dangling link: its blob never arrived


def cached_snapshot(model_id: str, revision: str, cache_dir=None) -> Path | None:
    """The complete cached snapshot of ``model_id`` at ``revision`` (a branch or tag through the cache's
    ``refs/``, or a commit), or None: no network, so it works on a compute node with ``HF_HUB_OFFLINE``."""
    repo = repo_cache_dir(model_id, cache_dir)
    commit = revision if _COMMIT.fullmatch(revision) else None
    if commit is None:
        ref = repo / "refs" / revision
        try:
            commit = ref.read_text().strip()
        except OSError:
            return None
    snap = repo / "snapshots" / commit
    return snap if snapshot_complete(snap) else None


# ----------------------------------------------------------------- inspecting a series on the hub
@dataclass
class HubSeries:
    """The branches of a repository as a checkpoint series (``ckptlens layers``/``init`` on
    ``hf:ORG/NAME``): ``stages`` {stage or None: {step: revision}} (steps restart in each training
    stage, so a stage is a series of its own), ``skipped`` the branches without a step, as (name, why)."""

    model: str
    stages: dict
    skipped: list = field(default_factory=list)

    def largest(self) -> tuple[str | None, dict[int, str]]:
        """The stage with the most checkpoints (ties: the first listed) and its ``{step: revision}``."""
        stage = max(self.stages, key=lambda k: len(self.stages[k]))
        return stage, self.stages[stage]


def list_series(model_id: str, log=None) -> HubSeries:
    """The repository's branches as a series: each branch whose name has a step (:func:`revision_step`)
    under its training stage (:func:`revision_stage`); the others (``main``) skipped with why."""
    hf = require("huggingface_hub", "reading a repository's revisions on the Hugging Face Hub")
    if hub_offline():
        raise RevisionError(
            f"{model_id}: listing its revisions needs the network, and HF_HUB_OFFLINE is set; name one "
            f"revision (hf:{model_id}@REVISION) that `ckptlens fetch` put in the cache"
        )
    refs = with_retries(lambda: hf.HfApi().list_repo_refs(model_id), f"{model_id}: listing branches", log=log)
    stages: dict = {}
    skipped = []
    for name in sorted(b.name for b in refs.branches):
        step = revision_step(name)
        if step is None:
            skipped.append((name, "no step in the branch name"))
            continue
        series = stages.setdefault(revision_stage(name), {})
        if step in series:
            skipped.append((name, f"step {step} is branch {series[step]!r} already"))
            continue
        series[step] = name
    if not stages:
        raise RevisionError(
            f"{model_id}: no branch names a step ({', '.join(n for n, _ in skipped[:5]) or 'no branches'}); "
            f"name one revision: hf:{model_id}@REVISION"
        )
    return HubSeries(model_id, {k: dict(sorted(v.items())) for k, v in stages.items()}, skipped)


@dataclass
class RemoteHeader:
    """A hub revision's tensor names, shapes and dtypes and its config (as
    :func:`ckptlens.sources.readers.open_checkpoint` gives a folder's), read without its weights."""

    keys: list
    shapes: dict
    dtypes: dict
    metadata: dict
    how: str


def remote_header(model_id: str, revision: str, cache_dir=None, log=None) -> RemoteHeader:
    """The header of ``model_id`` at ``revision``: from the Hugging Face cache when the snapshot is
    complete there (no network), else the safetensors headers by HTTP range requests
    (``huggingface_hub``'s ``get_safetensors_metadata``: every shard's, never the weights) and
    ``config.json``."""
    from .readers import open_checkpoint

    cached = cached_snapshot(model_id, revision, cache_dir)
    if cached is not None:
        with open_checkpoint(cached) as ckpt:
            return RemoteHeader(
                list(ckpt.keys),
                dict(ckpt.shapes),
                dict(ckpt.dtypes),
                dict(ckpt.metadata),
                f"Hugging Face cache ({cached}): header only",
            )
    if hub_offline():
        raise RevisionError(
            f"{model_id}@{revision}: not complete in the Hugging Face cache ({hub_cache_dir(cache_dir)}) and "
            "HF_HUB_OFFLINE is set; `ckptlens fetch CONFIG` downloads it"
        )
    hf = require("huggingface_hub", "reading a checkpoint's header on the Hugging Face Hub")
    what = f"{model_id}@{revision}"
    try:
        meta = with_retries(
            lambda: hf.HfApi().get_safetensors_metadata(model_id, revision=revision), f"{what}: header", log=log
        )
    except Exception as exc:
        if type(exc).__name__ == "NotASafetensorsRepoError":
            raise RevisionError(
                f"{what}: holds no safetensors weights (pickled PyTorch only), whose names cannot be read "
                "without downloading them: `ckptlens fetch` it, then `ckptlens layers` on the cached folder"
            ) from None
        raise RevisionError(f"{what}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from None
    keys, shapes, dtypes, metadata = [], {}, {}, {}
    for name in sorted(meta.files_metadata):
        f = meta.files_metadata[name]
        if not metadata and f.metadata:
            metadata.update(f.metadata)
        for key, info in f.tensors.items():
            keys.append(key)
            shapes[key] = tuple(int(d) for d in info.shape)
            dtypes[key] = str(info.dtype)
    try:
        config_path = with_retries(
            lambda: hf.hf_hub_download(model_id, "config.json", revision=revision, cache_dir=cache_dir),
            f"{what}: config.json",
            log=log,
        )
        config = json.loads(Path(config_path).read_text())
    except Exception as exc:
        if not is_permanent(exc):
            raise
        config = None
    if isinstance(config, dict):
        metadata.update(config)
    shards = len(meta.files_metadata)
    return RemoteHeader(
        keys,
        shapes,
        dtypes,
        metadata,
        f"hub {what}: safetensors header{'s of ' + str(shards) + ' shards' if shards > 1 else ''} by HTTP range"
        + (" + config.json" if isinstance(config, dict) else " (no config.json)"),
    )


def download_tokenizer(model_id: str, revision: str, dest, cache_dir=None, log=None) -> list[str]:
    """The tokenizer files the repository has at ``revision`` (:data:`ckptlens.sources.readers.TOKENIZER_FILES`),
    copied into ``dest`` (a probe's ``tokenizer`` folder); the names copied, none where it has none."""
    from .readers import TOKENIZER_FILES

    hf = require("huggingface_hub", "downloading a tokenizer from the Hugging Face Hub")
    dest = Path(dest)
    got = []
    for name in TOKENIZER_FILES:
        try:
            path = with_retries(
                lambda name=name: hf.hf_hub_download(model_id, name, revision=revision, cache_dir=cache_dir),
                f"{model_id}@{revision}: {name}",
                log=log,
            )
        except Exception as exc:
            if is_permanent(exc):  # the repository has no such file
                continue
            raise
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest / name)
        got.append(name)
    return got


@dataclass
class PlannedRevision:
    """One revision ``ckptlens fetch`` brings into the cache: resolved to its commit, with the files
    :data:`ALLOW_PATTERNS` selects and the bytes not yet in the cache."""

    run: str
    step: int
    model: str
    revision: str
    cache_dir: str | None = None
    commit: str | None = None
    files: dict = field(default_factory=dict)  # file -> bytes
    blobs: dict = field(default_factory=dict)  # blob id -> bytes (what the cache stores)
    cached: bool = False
    error: str | None = None

    @property
    def bytes(self) -> int:
        return sum(self.files.values())


def resolve_revision(item: PlannedRevision, attempts: int = 5, backoff_s: float = 2.0, log=None) -> PlannedRevision:
    """Ask the hub for ``item``'s commit and file sizes (``model_info(files_metadata=True)``, one
    request, retried like :func:`with_retries`); whether that commit is already complete in the cache.
    A permanent failure is kept in ``item.error``."""
    hf = require("huggingface_hub", "ckptlens fetch (downloading revisions)")
    from huggingface_hub.utils import filter_repo_objects

    what = f"{item.model}@{item.revision}"
    try:
        info = with_retries(
            lambda: hf.HfApi().model_info(item.model, revision=item.revision, files_metadata=True),
            what,
            attempts,
            backoff_s,
            log=log,
        )
    except Exception as exc:
        item.error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        return item
    item.commit = info.sha
    siblings = {s.rfilename: s for s in info.siblings or []}
    for name in filter_repo_objects(list(siblings), allow_patterns=ALLOW_PATTERNS):
        s = siblings[name]
        size = (s.lfs.size if s.lfs else s.size) or 0
        item.files[name] = size
        item.blobs[(s.lfs.sha256 if s.lfs else s.blob_id) or f"{item.commit}/{name}"] = size
    item.cached = cached_snapshot(item.model, item.commit, item.cache_dir) is not None
    return item


def bytes_needed(items) -> int:
    """Bytes the downloads of ``items`` add to their caches: each blob once (revisions share unchanged
    files), none already there."""
    seen, total = set(), 0
    for it in items:
        if it.error or it.cached:
            continue
        blobs_dir = repo_cache_dir(it.model, it.cache_dir) / "blobs"
        for blob, size in it.blobs.items():
            key = (str(blobs_dir), blob)
            if key in seen or (blobs_dir / blob).exists():
                continue
            seen.add(key)
            total += size
    return total


def _write_ref(item: PlannedRevision) -> None:
    """``refs/<revision>`` -> the fetched commit, as snapshot_download writes it (so that the jobs,
    offline, find the revision by its name)."""
    if _COMMIT.fullmatch(item.revision) or item.commit is None:
        return
    ref = repo_cache_dir(item.model, item.cache_dir) / "refs" / item.revision
    try:
        if ref.read_text().strip() == item.commit:
            return
    except OSError:
        pass
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
    tmp.write_text(item.commit)
    os.replace(tmp, ref)


def download_to_cache(
    item: PlannedRevision, workers: int = 1, attempts: int = 5, backoff_s: float = 2.0, log=None
) -> Path:
    """Download ``item`` (resolved by :func:`resolve_revision`) into the Hugging Face cache with
    ``snapshot_download`` — a file already there is not fetched again, a broken transfer resumes where
    it stopped — retried like :func:`with_retries`; checks the snapshot is complete and at the
    resolved commit, and returns it. Raises :class:`RevisionError`."""
    hf = require("huggingface_hub", "ckptlens fetch (downloading revisions)")
    what = f"{item.model}@{item.revision}"
    if item.cached:
        _write_ref(item)
        return repo_cache_dir(item.model, item.cache_dir) / "snapshots" / str(item.commit)
    try:
        path = with_retries(
            lambda: hf.snapshot_download(
                repo_id=item.model,
                revision=item.revision,
                allow_patterns=ALLOW_PATTERNS,
                cache_dir=item.cache_dir,
                max_workers=max(1, int(workers)),
            ),
            what,
            attempts,
            backoff_s,
            log=log,
        )
    except Exception as exc:
        raise RevisionError(
            f"{what}: download failed ({type(exc).__name__}: {' '.join(str(exc).split())[:300]})"
        ) from exc
    path = Path(path)
    if item.commit is not None and path.name != item.commit:
        # the branch moved between the two requests: what is in the cache is what counts
        warn(
            f"{what}: the branch moved from {item.commit[:12]} to {path.name[:12]} while fetching; recorded the latter"
        )
        item.commit = path.name
    if not snapshot_complete(path):
        raise RevisionError(f"{what}: the download in {path} is incomplete or holds no weights/config.json")
    item.cached = True
    return path


# --------------------------------------------------------------------------------------------- source
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "oneOf": [{"required": ["model"]}, {"required": ["models"]}],
    "description": "a Hugging Face model and its revisions (or one repository per checkpoint: models), downloaded "
    "one per job (never while the workflow is parsed) or beforehand with `ckptlens fetch CONFIG` into the Hugging "
    "Face cache, which the jobs then read offline (HF_HUB_OFFLINE=1); steps: pythia = the 154 published Pythia steps",
    "properties": {
        "type": {"const": "huggingface"},
        "model": {"type": "string", "minLength": 1},
        "models": {
            "description": "one repository per checkpoint (TinyLlama, MultiBERTs): a list of repository ids, the "
            "step read from each name (…-step-480k-…, …-step_20k), or a mapping {step: repository id}",
            "oneOf": [
                {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
                {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string", "minLength": 1}},
            ],
        },
        "revision": {
            "type": "string",
            "minLength": 1,
            "default": "main",
            "description": "with models: the revision of each repository",
        },
        "revisions_file": {
            "type": "string",
            "minLength": 1,
            "description": "a file (relative to the folder the workflow runs in) listing the revisions: one per "
            "line (OLMo's revisions.txt) or a CSV with a "
            "revision (or branch/name) column and optionally a step column (OLMo-2); steps parsed from the names "
            "(stage1-step1000-tokens4B, step-125000, global_step1200, ckpt_000, checkpoint-500)",
        },
        "match": {
            "type": "string",
            "description": "a regular expression: keep only the listed revisions (or repositories) it finds, e.g. "
            "'^stage1-' (steps restart in each training stage)",
        },
        "revisions": {
            "oneOf": [
                {"type": "array", "items": {"type": ["string", "integer"]}, "minItems": 1},
                {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"}},
            ]
        },
        "steps": {
            "oneOf": [
                {"const": "pythia"},
                {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1},
            ]
        },
        "every": {"type": "integer", "minimum": 1},
        "include_final": {"type": "boolean"},
        "delete_after": {
            "type": "boolean",
            "default": True,
            "description": "delete each downloaded checkpoint once its extraction has run (its download folder, "
            "and the converted safetensors as temp(); the Hugging Face cache `ckptlens fetch` filled is kept)",
        },
        "cache_dir": {"type": ["string", "null"]},
    },
}


def revisions(spec: Mapping) -> dict[int, str]:
    """``{step: revision}`` of a source entry, errors as :class:`SourceError`."""
    try:
        return select_revisions(spec)
    except (RevisionError, ValueError) as exc:
        raise SourceError(str(exc)) from None


def checkpoints(spec: Mapping) -> dict[int, tuple[str, str]]:
    """``{step: (repository, revision)}`` of a source entry, errors as :class:`SourceError`."""
    try:
        return select_checkpoints(spec)
    except (RevisionError, ValueError) as exc:
        raise SourceError(str(exc)) from None


def _delete_after(spec: Mapping) -> bool:
    return spec.get("delete_after", SCHEMA["properties"]["delete_after"]["default"])


def _materialise(spec: Mapping, step: int, out) -> dict | None:
    out = Path(out)
    model, revision = checkpoints(spec)[step]
    return fetch_or_record(
        model,
        revision,
        out,
        download_dir=layout.download_dir(out),
        cache_dir=spec.get("cache_dir"),
        step=step,
        delete_after=_delete_after(spec),
    )


def _step_params(spec: Mapping, step: int) -> dict:
    model, revision = checkpoints(spec)[step]
    return {"model": model, "revision": revision, "cache_dir": spec.get("cache_dir")}


def _checkpoint_bytes(spec: Mapping) -> int | None:
    """Parameters from the model's name (pythia-410m, TinyLlama-1.1B), two bytes each as the hub stores them."""
    name = spec.get("model") or next(iter(checkpoints(spec).values()))[0]
    n = parse_model_size(name)
    return None if n is None else int(2 * n)


register(
    Source(
        type="huggingface",
        kind="fetch",
        description="revisions of a model on the Hugging Face Hub (Pythia's step0 … step143000)",
        schema=SCHEMA,
        steps=lambda spec: list(checkpoints(spec)),
        materialise=_materialise,
        step_params=_step_params,
        checkpoint_bytes=_checkpoint_bytes,
        temporary=_delete_after,
    )
)
