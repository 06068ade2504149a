"""Checkpoints from the Hugging Face Hub (source ``type: huggingface``): one revision (git branch) per training step, as EleutherAI
publishes Pythia (``EleutherAI/pythia-160m-deduped`` at revision ``step1000``, ...).

- :func:`pythia_steps`, :func:`select_revisions`: which revisions, as ``{step: revision}`` — pure, no
  network, so the workflow can call them while Snakemake parses it;
- :func:`download_revision`: one revision's weights, config and tokenizer files into a folder
  (``huggingface_hub.snapshot_download``; the network is touched only here, inside a job), marked with
  :data:`MARKER` so that :func:`cleanup` can later delete it — and only it;
- :func:`fetch_or_record`: the workflow job (source ``type: huggingface``): one revision downloaded,
  converted to safetensors and its download deleted; a revision whose checkpoint cannot be read
  becomes a failure record.

Nothing here imports ``huggingface_hub`` (or anything heavy) at import time.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import warnings
from collections.abc import Mapping
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


_STEP_NAME = re.compile(r"^step(\d+)$")


def revision_name(step: int) -> str:
    return f"step{int(step)}"


def _step_of(rev) -> int:
    if isinstance(rev, bool):
        raise RevisionError(f"revision {rev!r}: expected a step number or a name like 'step1000'")
    if isinstance(rev, int):
        if rev < 0:
            raise RevisionError(f"revision {rev}: steps are non-negative")
        return rev
    m = _STEP_NAME.match(str(rev).strip())
    if not m:
        raise RevisionError(
            f"revision {rev!r}: no step in its name (expected 'step<N>' or an integer; for another name "
            "give a mapping {step: revision})"
        )
    return int(m[1])


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
                    raise RevisionError(f"revisions: step {s} is listed twice")
                out[s] = r if isinstance(r, str) else revision_name(s)
        else:
            raise RevisionError(f"revisions: expected a list or a mapping, got {type(revs).__name__}")
        if not out:
            raise RevisionError("revisions: the list is empty")
        return dict(sorted(out.items()))
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
            permanent = type(exc).__name__ in ("RepositoryNotFoundError", "RevisionNotFoundError", "GatedRepoError")
            if permanent or attempt == DOWNLOAD_ATTEMPTS:
                raise RevisionError(f"{model_id}@{revision}: download failed ({type(exc).__name__}: {msg})") from exc
            warnings.warn(
                f"{model_id}@{revision}: download attempt {attempt} failed ({msg}); trying again", stacklevel=2
            )
            time.sleep(DOWNLOAD_BACKOFF_S * attempt)
    if not is_checkpoint_dir(dest):
        raise RevisionError(
            f"{model_id}@{revision}: the download holds no weights (no model.safetensors, pytorch_model.bin "
            f"or shard index in {dest})"
        )
    if not (dest / "config.json").is_file():
        raise RevisionError(f"{model_id}@{revision}: the download has no config.json ({dest})")
    return dest


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
)


def fetch_revision(
    model_id: str, revision: str, dst, download_dir, cache_dir=None, delete_after: bool = True, tokenizer_dir=None
) -> Path:
    """One workflow job's worth: download a revision into ``download_dir``, convert it to the safetensors
    file ``dst`` (:func:`ckptlens.sources.importer.import_checkpoint`: safe loading, config.json kept in the
    metadata), copy its tokenizer files to ``tokenizer_dir`` if given (and if it has any), then delete the
    download if ``delete_after`` (only our marked folder; see :func:`cleanup`). Returns ``dst``."""
    from .importer import import_checkpoint

    folder = download_revision(model_id, revision, download_dir, cache_dir=cache_dir)
    try:
        import_checkpoint(folder, dst)
    except ValueError as exc:
        raise RevisionError(f"{model_id}@{revision}: the downloaded checkpoint cannot be imported ({exc})") from exc
    if tokenizer_dir is not None:
        found = [folder / n for n in TOKENIZER_FILES if (folder / n).is_file()]
        if found:
            tdir = Path(tokenizer_dir)
            tdir.mkdir(parents=True, exist_ok=True)
            for f in found:
                shutil.copyfile(f, tdir / f.name)
    if delete_after:
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
    model: str, revision: str, dst, download_dir, cache_dir=None, step: int | None = None
) -> dict | None:
    """The workflow job: :func:`fetch_revision` with the download deleted afterwards. A downloaded
    checkpoint that cannot be read gives a failure record (file ``model@revision``), returned; a
    failed *download* still fails the job (after its retries): a network fault is not a bad
    checkpoint."""
    try:
        fetch_revision(model, revision, dst, download_dir=download_dir, cache_dir=cache_dir, delete_after=True)
        return None
    except RevisionError as exc:
        if not isinstance(exc.__cause__, CheckpointError):
            raise
        cleanup(download_dir)
        record = make_record(f"{model}@{revision}", str(exc.__cause__), step)
    warn(f"step {step}: bad checkpoint {record['file']}: {record['reason']} — recorded as a failed step")
    write_checkpoint_record(dst, record)
    return record


# --------------------------------------------------------------------------------------------- source
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["model"],
    "description": "a Hugging Face model and its revisions, downloaded one per job (never while the workflow is "
    "parsed); steps: pythia = the 154 published Pythia steps",
    "properties": {
        "type": {"const": "huggingface"},
        "model": {"type": "string", "minLength": 1},
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
            "description": "delete each downloaded checkpoint once its extraction has run",
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


def _materialise(spec: Mapping, step: int, out) -> dict | None:
    out = Path(out)
    return fetch_or_record(
        spec["model"],
        revisions(spec)[step],
        out,
        download_dir=layout.download_dir(out),
        cache_dir=spec.get("cache_dir"),
        step=step,
    )


register(
    Source(
        type="huggingface",
        kind="fetch",
        description="revisions of a model on the Hugging Face Hub (Pythia's step0 … step143000)",
        schema=SCHEMA,
        steps=lambda spec: list(revisions(spec)),
        materialise=_materialise,
        step_params=lambda spec, step: {
            "model": spec["model"],
            "revision": revisions(spec)[step],
            "cache_dir": spec.get("cache_dir"),
        },
        # parameters from the model's name (pythia-410m), two bytes each as the hub stores them (float16)
        checkpoint_bytes=lambda spec: None if (n := parse_model_size(spec["model"])) is None else int(2 * n),
        temporary=lambda spec: spec.get("delete_after", SCHEMA["properties"]["delete_after"]["default"]),
    )
)
