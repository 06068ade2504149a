"""``ckptlens fetch CONFIG``: bring the revisions every ``huggingface`` run of CONFIG selects into the
Hugging Face cache, on a machine with internet (a cluster's login node), so that the workflow's jobs
read them offline (``HF_HUB_OFFLINE=1`` on the compute nodes).

1. each revision is resolved to its commit (one ``model_info`` request: commit and file sizes) and the
   disk the downloads need — each file once, none already cached — is said against the free space
   before anything is downloaded (too little: nothing is);
2. each revision not yet complete in the cache is downloaded with ``huggingface_hub.snapshot_download``
   (the files :data:`ckptlens.sources.hub.ALLOW_PATTERNS` selects): a broken transfer resumes where it
   stopped, a file or revision already there is not fetched again, so rerunning the command after an
   interruption continues it;
3. the requests huggingface_hub makes start ``--interval`` seconds apart, one file at a time unless
   ``--workers``; a rate-limited (HTTP 429) or failed request is tried again after the ``Retry-After``
   the hub asks for, else after a doubling backoff (``--attempts`` in all); a missing repository or
   revision is not;
4. what was resolved and fetched (run, step, repository, revision, commit, bytes, snapshot folder) is
   written to ``--record`` (default ``results/hub_revisions.json``).

Exit status 0: every revision is in the cache; 1: some could not be fetched (listed; rerun to retry);
2: a usage error (bad config, too little disk, ``HF_HUB_OFFLINE`` set here).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from . import CLIError

DEFAULT_RECORD = "results/hub_revisions.json"


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


class _Throttle:
    """At least ``interval`` seconds between the starts of two hub requests of this command."""

    def __init__(self, interval: float):
        self.interval, self.last = max(0.0, float(interval)), None

    def __call__(self) -> None:
        if self.last is not None:
            wait = self.last + self.interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        self.last = time.monotonic()


def _free_bytes(folder: Path) -> int:
    p = folder
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def _log(msg: str) -> None:
    print(f"ckptlens fetch: {msg}", file=sys.stderr, flush=True)


def _write_record(path: Path, endpoint: str, items) -> None:
    runs: dict = {}
    for it in items:
        runs.setdefault(it.run, {})[str(it.step)] = {
            "model": it.model,
            "revision": it.revision,
            "commit": it.commit,
            "bytes": it.bytes,
            "files": it.files,
            "cache_dir": it.cache_dir,
            "status": "error" if it.error else ("cached" if it.cached else "not fetched"),
            **({"error": it.error} if it.error else {}),
        }
    record = {"endpoint": endpoint, "written": datetime.now(UTC).isoformat(timespec="seconds"), "runs": runs}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)


def cmd_fetch(args) -> int:
    from .. import config as ckcfg
    from ..sources import hub
    from ..store.requires import require
    from .run import check_config

    cfg = check_config(args.config)
    runs = [r for r in ckcfg.run_names(cfg) if ckcfg.source_type(cfg, r) == "huggingface"]
    if args.run:
        unknown = sorted(set(args.run) - set(runs))
        if unknown:
            raise CLIError(f"{args.config}: no huggingface-source run {', '.join(unknown)} (those: {', '.join(runs)})")
        runs = [r for r in runs if r in args.run]
    if not runs:
        print(f"{args.config}: no run with a huggingface source; nothing to fetch")
        return 0
    if hub.hub_offline():
        raise CLIError("HF_HUB_OFFLINE is set: fetching needs the network (unset it here, on the login node)")
    require("huggingface_hub", "ckptlens fetch (downloading revisions)")
    from huggingface_hub import constants

    endpoint = constants.ENDPOINT

    items = [
        hub.PlannedRevision(run, step, model, revision, ckcfg.source_spec(cfg, run).get("cache_dir"))
        for run in runs
        for step, (model, revision) in hub.checkpoints(ckcfg.source_spec(cfg, run)).items()
    ]
    # every request spaced; where huggingface_hub cannot be told, each revision's calls instead
    throttle = _Throttle(0 if hub.throttle_requests(args.interval) else args.interval)
    print(f"resolving {len(items)} revision(s) of {len(runs)} run(s) on {endpoint}", flush=True)
    for it in items:
        throttle()
        hub.resolve_revision(it, attempts=args.attempts, backoff_s=args.backoff, log=_log)
    for it in items:
        what = f"{it.run} step {it.step}: {it.model}@{it.revision}"
        if it.error:
            print(f"  {what}  cannot be resolved ({it.error})")
        else:
            state = "in the cache" if it.cached else f"{len(it.files)} file(s)"
            print(f"  {what}  commit {it.commit[:12]}  {human_bytes(it.bytes)}  {state}")

    caches = {str(hub.hub_cache_dir(it.cache_dir)) for it in items}
    short = []
    for cache in sorted(caches):
        mine = [it for it in items if str(hub.hub_cache_dir(it.cache_dir)) == cache]
        need, free = hub.bytes_needed(mine), _free_bytes(Path(cache))
        todo = sum(not it.cached and not it.error for it in mine)
        print(f"needs {human_bytes(need)} of disk in {cache} for {todo} revision(s) ({human_bytes(free)} free)")
        if need > free:
            short.append(f"{cache} needs {human_bytes(need)}, {human_bytes(free)} free")
    record = Path(args.record)
    _write_record(record, endpoint, items)
    if short:
        raise CLIError(
            f"not enough disk, nothing downloaded: {'; '.join(short)} (free some, or set cache_dir / HF_HOME)"
        )
    if args.dry_run:
        return 1 if any(it.error for it in items) else 0

    failed = [it for it in items if it.error]
    for it in items:
        if it.error or it.cached:
            continue
        throttle()
        t0 = time.monotonic()
        try:
            path = hub.download_to_cache(
                it, workers=args.workers, attempts=args.attempts, backoff_s=args.backoff, log=_log
            )
        except hub.RevisionError as exc:
            it.error = str(exc)
            failed.append(it)
            print(f"  FAILED {it.run} step {it.step}: {exc}", flush=True)
        else:
            print(
                f"  fetched {it.model}@{it.revision} ({it.commit[:12]}) in {time.monotonic() - t0:.1f} s: {path}",
                flush=True,
            )
        _write_record(record, endpoint, items)
    _write_record(record, endpoint, items)
    done = sum(it.cached for it in items)
    print(f"{done} of {len(items)} revision(s) in the cache; recorded in {record}")
    if failed:
        print(
            f"{len(failed)} revision(s) not fetched: "
            + ", ".join(f"{it.model}@{it.revision}" for it in failed)
            + " — run the command again to retry (what is in the cache is kept)"
        )
        return 1
    print(
        "the jobs can now read them offline: export HF_HUB_OFFLINE=1 (same HF_HOME / cache_dir) and "
        f"ckptlens run {args.config} ..."
    )
    return 0
