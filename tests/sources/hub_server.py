"""A Hugging Face Hub on 127.0.0.1 for huggingface_hub's real download code (``HF_ENDPOINT`` pointed at
it): a few repositories, each with several revisions (branches) of a tiny GPT-NeoX saved with
``save_pretrained`` (built offline), served the way the hub serves them —

- ``GET /api/models/{repo}/revision/{rev}[?blobs=true]``: ``{"id", "sha", "siblings": [{"rfilename",
  "size", "blobId", "lfs"}]}`` (``model_info``, ``repo_info``);
- ``GET /api/models/{repo}/tree/{rev}?recursive=…``: ``[{"type": "file", "path", "size", "oid", "lfs"}]``
  (``list_repo_tree``, which ``snapshot_download`` lists a commit with);
- ``GET /api/models/{repo}/refs``: ``{"branches": [{"name", "ref", "targetCommit"}], "tags": [], "converts": []}``
  (``list_repo_refs``);
- ``HEAD``/``GET /{repo}/resolve/{rev}/{file}``: the bytes, with ``X-Repo-Commit``, ``ETag`` (the git blob
  id, or the sha256 of an LFS file, also as ``X-Linked-Etag`` / ``X-Linked-Size``), ``Content-Length``,
  and ``Range`` requests answered ``206`` with ``Content-Range``;
- unknown repository / revision / file: ``404`` with the hub's ``X-Error-Code``.

Faults are injected per request (:meth:`HubServer.fault`): an HTTP status (429 with ``Retry-After``,
500) or a transfer cut after some bytes. Every request is logged (method, path, Range, time)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin")


def tiny_neox_folder(dest: Path, seed: int, vocab_size: int = 64, hidden_size: int = 32) -> Path:
    """A tiny GPT-NeoX (2 layers, 2 heads) saved with ``save_pretrained``: config.json, model.safetensors,
    generation_config.json. A large vocabulary makes the weights file larger than huggingface_hub's
    10 MiB download chunk (what a broken transfer resumes from)."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        tie_word_embeddings=False,
    )
    GPTNeoXForCausalLM(cfg).save_pretrained(dest)
    return dest


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Fault:
    match: str  # a substring of "METHOD /path"
    status: int | None = None
    retry_after: str | None = None
    cut_after: int | None = None  # send this many bytes of the body, then close the connection
    times: int = 1  # how many requests it hits (-1: every one)


@dataclass
class HubServer:
    repos: dict = field(default_factory=dict)  # repo -> {revision: commit}
    commits: dict = field(default_factory=dict)  # commit -> {file: bytes}
    faults: list = field(default_factory=list)
    log: list = field(default_factory=list)  # (time, method, path, range, status)
    url: str = ""
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # ------------------------------------------------------------------ content
    def add_revision(self, repo: str, revision: str, folder: Path) -> str:
        """Publish ``folder``'s files as ``repo`` at branch ``revision``; returns the commit sha."""
        files = {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}
        commit = hashlib.sha1(f"{repo}@{revision}".encode() + b"".join(files.values())).hexdigest()
        self.commits[commit] = files
        self.repos.setdefault(repo, {})[revision] = commit
        return commit

    def fault(self, match: str, **kw) -> Fault:
        f = Fault(match, **kw)
        self.faults.append(f)
        return f

    def requests(self, match: str = "") -> list:
        return [r for r in self.log if match in f"{r[1]} {r[2]}"]

    @staticmethod
    def file_meta(name: str, data: bytes) -> dict:
        lfs = name.endswith(LFS_SUFFIXES)
        etag = hashlib.sha256(data).hexdigest() if lfs else _git_blob_id(data)
        return {"lfs": lfs, "etag": etag, "size": len(data), "blob": _git_blob_id(data)}

    # ------------------------------------------------------------------ serving
    def start(self) -> HubServer:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_HEAD(self):
                hub._handle(self, head=True)

            def do_GET(self):
                hub._handle(self, head=False)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _take_fault(self, what: str) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if f.times != 0 and f.match in what:
                    if f.times > 0:
                        f.times -= 1
                    return f
        return None

    def _send(self, h, status: int, body: bytes = b"", headers: dict | None = None, head=False, cut=None):
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        if cut is not None:
            h.send_header("Connection", "close")
        h.end_headers()
        if not head:
            h.wfile.write(body if cut is None else body[:cut])
        h.wfile.flush()
        if cut is not None:
            h.close_connection = True

    def _json(self, h, obj, head=False):
        self._send(h, 200, json.dumps(obj).encode(), {"Content-Type": "application/json"}, head)

    def _not_found(self, h, code: str, head=False):
        self._send(h, 404, json.dumps({"error": code}).encode(), {"X-Error-Code": code}, head)

    def _commit_of(self, repo: str, rev: str) -> str | None:
        revs = self.repos.get(repo, {})
        if rev in revs:
            return revs[rev]
        return rev if rev in self.commits and rev in revs.values() else None

    def _handle(self, h, head: bool) -> None:
        method = "HEAD" if head else "GET"
        parts = urlsplit(h.path)
        path = unquote(parts.path)
        rng = h.headers.get("Range")
        fault = self._take_fault(f"{method} {path}")
        status_logged = fault.status if fault is not None and fault.status else 200
        self.log.append((time.monotonic(), method, path, rng, status_logged))
        if fault is not None and fault.status:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return self._send(h, fault.status, b"slow down", headers, head)
        cut = fault.cut_after if fault is not None else None

        if path.startswith("/api/models/") and path.endswith("/refs"):
            repo = path[len("/api/models/") : -len("/refs")]
            if repo not in self.repos:
                return self._not_found(h, "RepoNotFound", head)
            branches = [
                {"name": rev, "ref": f"refs/heads/{rev}", "targetCommit": commit}
                for rev, commit in self.repos[repo].items()
            ]
            return self._json(h, {"branches": branches, "tags": [], "converts": []}, head)
        if path.startswith("/api/models/"):
            rest = path[len("/api/models/") :]
            for sep in ("/revision/", "/tree/"):
                if sep in rest:
                    repo, rev = rest.split(sep, 1)
                    break
            else:
                return self._not_found(h, "EndpointNotFound", head)
            if repo not in self.repos:
                return self._not_found(h, "RepoNotFound", head)
            commit = self._commit_of(repo, rev)
            if commit is None:
                return self._not_found(h, "RevisionNotFound", head)
            files = self.commits[commit]
            if sep == "/revision/":
                siblings = []
                for name, data in files.items():
                    m = self.file_meta(name, data)
                    sib = {"rfilename": name, "size": m["size"], "blobId": m["blob"]}
                    if m["lfs"]:
                        sib["lfs"] = {"size": m["size"], "sha256": m["etag"], "pointerSize": 134}
                    siblings.append(sib)
                return self._json(h, {"id": repo, "modelId": repo, "sha": commit, "siblings": siblings}, head)
            tree = []
            for name, data in files.items():
                m = self.file_meta(name, data)
                entry = {"type": "file", "path": name, "size": m["size"], "oid": m["blob"]}
                if m["lfs"]:
                    entry["lfs"] = {"oid": m["etag"], "size": m["size"], "pointerSize": 134}
                tree.append(entry)
            return self._json(h, tree, head)

        if "/resolve/" in path:
            repo, rest = path.lstrip("/").split("/resolve/", 1)
            rev, _, name = rest.partition("/")
            if repo not in self.repos:
                return self._not_found(h, "RepoNotFound", head)
            commit = self._commit_of(repo, rev)
            if commit is None:
                return self._not_found(h, "RevisionNotFound", head)
            data = self.commits[commit].get(name)
            if data is None:
                return self._send(h, 404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, head)
            m = self.file_meta(name, data)
            headers = {"X-Repo-Commit": commit, "ETag": f'"{m["etag"]}"', "Accept-Ranges": "bytes"}
            if m["lfs"]:
                headers |= {"X-Linked-Etag": f'"{m["etag"]}"', "X-Linked-Size": str(m["size"])}
            status, body = 200, data
            if rng and not head and rng.startswith("bytes="):
                start_s, _, end_s = rng[len("bytes=") :].partition("-")
                start = int(start_s)
                end = int(end_s) if end_s else len(data) - 1
                status, body = 206, data[start : end + 1]
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return self._send(h, status, body if not head else data, headers, head, cut)
        return self._not_found(h, "EndpointNotFound", head)


def hub_env(url: str, hf_home: Path, offline: bool = False) -> dict:
    """The environment a subprocess needs to download from ``url`` into ``hf_home`` (no proxy, no
    telemetry, no token), or to read that cache offline."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and not k.startswith("HF_")}
    env.pop("TRANSFORMERS_OFFLINE", None)
    env |= {
        "HF_ENDPOINT": url,
        "HF_HOME": str(hf_home),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
        "NO_PROXY": "*",
    }
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env
