"""A local stand-in for the part of the Hugging Face Hub's HTTP API that huggingface_hub, datasets and transformers
use to create, upload to and download from a repository, so that pushes and loads are tested for real, offline.

It serves on 127.0.0.1 at a random port from a thread, keeps file contents in a temporary folder (one file per
sha256), and records every commit with its message and operations. Failures are injected per route: an HTTP
status (`fail`) or a hang longer than the client's timeout (`hang`).

Pointing the clients at it (what works with huggingface_hub 2.4, datasets 5.2, transformers 5.25):

- `HfApi(endpoint=standin.url)`, or the `endpoint` argument of the download functions, for explicit calls;
- everything else reads the address from module constants set at import from $HF_ENDPOINT, so setting the
  variable in a test is too late: patch `huggingface_hub.constants.ENDPOINT` and
  `HUGGINGFACE_CO_URL_TEMPLATE` (hf_hub_download, snapshot_download, transformers' from_pretrained and
  pipeline), and `datasets.config.HF_ENDPOINT` and `HUB_DATASETS_URL` (load_dataset). `HfApi()` reads
  `constants.ENDPOINT` when it is created, so the patch reaches it too. `use_standin` does all of this;
- huggingface_hub 2.4 uploads through Xet whenever the `hf_xet` package is installed (it does not ask the
  server first), and the stand-in speaks only the LFS protocol: `constants.HF_HUB_DISABLE_XET` must be True
  (read at each upload, so patching the constant works). Downloads use Xet only when a response carries Xet
  headers, which the stand-in never sends;
- offline mode ($HF_HUB_OFFLINE, set by scripts/test.sh) blocks every request of huggingface_hub's client, the
  stand-in's included: `use_standin` turns it off in `huggingface_hub.constants` and `datasets.config` for the
  test, while the endpoint points at 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

LFS_SUFFIXES = (".parquet", ".safetensors", ".png", ".bin", ".pt", ".pth")
"""Files the stand-in stores as LFS objects, as the Hub's default .gitattributes does."""


@dataclass(frozen=True)
class StoredFile:
    """A file of a repository: its content's sha256 (the object's name in the store), size and git ids."""

    sha256: str
    size: int
    git_oid: str
    lfs: bool

    def entry(self, path: str) -> dict[str, Any]:
        """The tree / paths-info JSON of this file."""
        entry: dict[str, Any] = {"type": "file", "oid": self.git_oid, "size": self.size, "path": path}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": 134}
        return entry


@dataclass
class Commit:
    oid: str
    message: str
    operations: list[tuple[str, str]]
    """(key, path) of each operation: `file`, `lfsFile`, `deletedFile` or `deletedFolder`."""
    snapshot: dict[str, StoredFile]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: list[Commit] = field(default_factory=list)

    @property
    def head(self) -> dict[str, StoredFile]:
        return self.commits[-1].snapshot if self.commits else {}

    @property
    def sha(self) -> str:
        return self.commits[-1].oid if self.commits else "0" * 40


@dataclass
class Fault:
    status: int | None = None
    seconds: float = 0.0
    apply: bool = False
    """For a hang: carry the request out after the wait (the answer is lost, the work is done)."""
    times: int = 1


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubStandIn:
    """The stand-in server; use as a context manager, or `start()` and `stop()`."""

    def __init__(self, root: Path, token: str, user: str = "tester", orgs: tuple[str, ...] = ("hmu-lab",)) -> None:
        self.root = Path(root)
        (self.root / "objects").mkdir(parents=True, exist_ok=True)
        self.token = token
        self.user = user
        self.orgs = orgs
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_uploads: list[str] = []
        """The sha256 of each LFS object received, in order (a second upload of one object shows twice)."""
        self.requests: list[tuple[str, str, int]] = []
        """(method, path, status) of every request answered."""
        self.faults: dict[str, Fault] = {}
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HubStandIn:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    # What tests inject and read.

    def fail(self, route: str, status: int, times: int = 1) -> None:
        """Answer the next `times` requests of `route` (e.g. "commit", "preupload", "whoami") with `status`."""
        self.faults[route] = Fault(status=status, times=times)

    def hang(self, route: str, seconds: float, *, apply: bool = False, times: int = 1) -> None:
        """Wait `seconds` before answering `route`; without `apply` the request is then dropped undone."""
        self.faults[route] = Fault(seconds=seconds, apply=apply, times=times)

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def commits(self, repo_id: str, repo_type: str = "model") -> list[Commit]:
        repo = self.repos.get((repo_type, repo_id))
        return list(repo.commits) if repo else []

    def files(self, repo_id: str, repo_type: str = "model") -> dict[str, bytes]:
        """The repository's files at its head, with their contents."""
        repo = self.repos.get((repo_type, repo_id))
        return {path: self.read(stored) for path, stored in (repo.head if repo else {}).items()}

    def read(self, stored: StoredFile) -> bytes:
        return (self.root / "objects" / stored.sha256).read_bytes()

    def store(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.root / "objects" / sha
        if not path.exists():
            path.write_bytes(data)
        return sha

    def has_object(self, sha: str) -> bool:
        return (self.root / "objects" / sha).exists()


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


KIND = r"(?P<kind>models|datasets|spaces)"
REPO = r"(?P<repo>[^/]+/[^/]+)"
PREFIX = r"(?P<prefix>datasets/|spaces/)?"
ROUTES = [
    ("whoami", "GET", re.compile(r"^/api/whoami-v2$")),
    ("create", "POST", re.compile(r"^/api/repos/create$")),
    ("validate-yaml", "POST", re.compile(r"^/api/validate-yaml$")),
    ("info", "GET", re.compile(rf"^/api/{KIND}/{REPO}(?:/revision/(?P<rev>[^/]+))?$")),
    ("preupload", "POST", re.compile(rf"^/api/{KIND}/{REPO}/preupload/(?P<rev>[^/]+)$")),
    ("commit", "POST", re.compile(rf"^/api/{KIND}/{REPO}/commit/(?P<rev>[^/]+)$")),
    ("tree", "GET", re.compile(rf"^/api/{KIND}/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$")),
    ("paths-info", "POST", re.compile(rf"^/api/{KIND}/{REPO}/paths-info/(?P<rev>[^/]+)$")),
    ("lfs-batch", "POST", re.compile(rf"^/{PREFIX}{REPO}\.git/info/lfs/objects/batch$")),
    ("lfs-upload", "PUT", re.compile(r"^/lfs-objects/(?P<oid>[0-9a-f]{64})$")),
    ("lfs-verify", "POST", re.compile(r"^/lfs-objects/(?P<oid>[0-9a-f]{64})/verify$")),
    ("resolve", "GET", re.compile(rf"^/{PREFIX}{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")),
    ("resolve", "HEAD", re.compile(rf"^/{PREFIX}{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")),
]


def _repo_type(match: re.Match) -> str:
    groups = match.groupdict()
    if "kind" in groups:
        return groups["kind"].removesuffix("s")
    return (groups.get("prefix") or "models/").rstrip("/").removesuffix("s")


def _handler_for(hub: HubStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: pytest shows failures, not traffic
            pass

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_HEAD(self) -> None:
            self._dispatch("HEAD")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_PUT(self) -> None:
            self._dispatch("PUT")

        def _dispatch(self, method: str) -> None:
            url = urlsplit(self.path)
            path, self.query = unquote(url.path), parse_qs(url.query)
            body = self._body()
            status = 404
            try:
                for name, verb, pattern in ROUTES:
                    match = pattern.match(path)
                    if verb == method and match:
                        status = self._injected(name)
                        if status is None:
                            status = getattr(self, "route_" + name.replace("-", "_"))(match, body, method)
                        break
                else:
                    raise ApiError(404, f"the stand-in does not serve {method} {path}")
            except ApiError as error:
                status = error.status
                self._json(status, {"error": error.message}, code=error.code)
            except (BrokenPipeError, ConnectionResetError):
                status = 499
            finally:
                hub.requests.append((method, path, status))

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                parts = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(parts)
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _injected(self, name: str) -> int | None:
            """Carry out an injected fault: the status answered (0: dropped unanswered), or None to go on."""
            with hub.lock:
                fault = hub.faults.get(name)
                if fault is None:
                    return None
                fault.times -= 1
                if fault.times <= 0:
                    del hub.faults[name]
            if fault.status is not None:
                return self._json(fault.status, {"error": f"injected HTTP {fault.status}"})
            hub.stopping.wait(fault.seconds)
            if fault.apply:
                return None
            self.close_connection = True
            return 0

        def _authorised(self, required: bool) -> bool:
            header = self.headers.get("Authorization")
            if header is None:
                if required:
                    raise ApiError(401, "authentication required")
                return False
            if header != f"Bearer {hub.token}":
                raise ApiError(401, "Invalid credentials in Authorization header")
            return True

        def _repo(self, match: re.Match, write: bool = False) -> Repo:
            signed_in = self._authorised(required=write)
            repo = hub.repos.get((_repo_type(match), match["repo"]))
            if repo is None or (repo.private and not signed_in):
                raise ApiError(404, f"Repository not found: {match['repo']}", code="RepoNotFound")
            return repo

        def _snapshot(self, repo: Repo, rev: str | None) -> tuple[str, dict[str, StoredFile]]:
            rev = unquote(rev or "main")
            if rev == "main":
                return repo.sha, repo.head
            for commit in repo.commits:
                if commit.oid == rev:
                    return commit.oid, commit.snapshot
            raise ApiError(404, f"Invalid rev id: {rev}", code="RevisionNotFound")

        def _json(self, status: int, payload: Any, code: str | None = None, headers: dict | None = None) -> int:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if code:
                self.send_header("X-Error-Code", code)
            if status >= 400:
                self.send_header("X-Error-Message", str(payload.get("error", "")))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            return status

        # Routes: each answers and returns the status.

        def route_whoami(self, match: re.Match, body: bytes, method: str) -> int:
            self._authorised(required=True)
            orgs = [{"name": org, "type": "org"} for org in hub.orgs]
            return self._json(200, {"type": "user", "name": hub.user, "orgs": orgs, "auth": {"type": "access_token"}})

        def route_create(self, match: re.Match, body: bytes, method: str) -> int:
            self._authorised(required=True)
            request = json.loads(body)
            repo_type = request.get("type") or "model"
            repo_id = f"{request.get('organization') or hub.user}/{request['name']}"
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            url = f"{hub.url}/{prefix}{repo_id}"
            with hub.lock:
                if (repo_type, repo_id) in hub.repos:
                    return self._json(409, {"error": "You already created this repo", "url": url})
                private = request.get("visibility", "private" if request.get("private") else "public") == "private"
                hub.repos[(repo_type, repo_id)] = Repo(repo_type, repo_id, private)
            return self._json(200, {"url": url, "name": repo_id, "id": repo_id})

        def route_validate_yaml(self, match: re.Match, body: bytes, method: str) -> int:
            content = json.loads(body)["content"]
            found = re.match(r"^---\n(.*?)\n---\n", content, re.DOTALL)
            try:
                if found:
                    json.dumps(_safe_yaml(found.group(1)), default=str)
            except ValueError as error:
                return self._json(400, {"errors": [{"message": str(error)}], "error": str(error)})
            return self._json(200, {"errors": [], "warnings": []})

        def route_info(self, match: re.Match, body: bytes, method: str) -> int:
            repo = self._repo(match)
            sha, files = self._snapshot(repo, match["rev"])
            siblings = [{"rfilename": p, "size": f.size, "blobId": f.git_oid} for p, f in sorted(files.items())]
            return self._json(
                200,
                {
                    "id": repo.repo_id,
                    "author": repo.repo_id.split("/")[0],
                    "sha": sha,
                    "private": repo.private,
                    "gated": False,
                    "disabled": False,
                    "lastModified": "2026-01-01T00:00:00.000Z",
                    "tags": [],
                    "siblings": siblings,
                },
            )

        def route_preupload(self, match: re.Match, body: bytes, method: str) -> int:
            repo = self._repo(match, write=True)
            answers = []
            for file in json.loads(body)["files"]:
                sample = base64.b64decode(file["sample"])
                lfs = file["path"].endswith(LFS_SUFFIXES) or b"\0" in sample or file["size"] > 10_000_000
                existing = repo.head.get(file["path"])
                oid = (existing.sha256 if existing.lfs else existing.git_oid) if existing else None
                mode = "lfs" if lfs else "regular"
                answers.append({"path": file["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
            return self._json(200, {"files": answers, "commitOid": repo.sha})

        def route_lfs_batch(self, match: re.Match, body: bytes, method: str) -> int:
            self._repo(match, write=True)
            objects = []
            for item in json.loads(body)["objects"]:
                answer = {"oid": item["oid"], "size": item["size"], "authenticated": True}
                if not hub.has_object(item["oid"]):
                    href = f"{hub.url}/lfs-objects/{item['oid']}"
                    answer["actions"] = {"upload": {"href": href}, "verify": {"href": href + "/verify"}}
                objects.append(answer)
            return self._json(200, {"transfer": "basic", "objects": objects})

        def route_lfs_upload(self, match: re.Match, body: bytes, method: str) -> int:
            if hashlib.sha256(body).hexdigest() != match["oid"]:
                raise ApiError(400, "uploaded content does not match its oid")
            with hub.lock:
                hub.store(body)
                hub.lfs_uploads.append(match["oid"])
            return self._json(200, {})

        def route_lfs_verify(self, match: re.Match, body: bytes, method: str) -> int:
            if not hub.has_object(match["oid"]):
                raise ApiError(404, "object not uploaded")
            return self._json(200, {"success": True})

        def route_commit(self, match: re.Match, body: bytes, method: str) -> int:
            repo = self._repo(match, write=True)
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            header = next((line["value"] for line in lines if line["key"] == "header"), {})
            with hub.lock:
                parent = header.get("parentCommit")
                if parent and parent != repo.sha:
                    raise ApiError(412, "parent commit is not the head of the branch")
                files = dict(repo.head)
                operations = []
                for line in lines:
                    key, value = line["key"], line["value"]
                    if key == "header":
                        continue
                    operations.append((key, value["path"]))
                    if key == "file":
                        data = base64.b64decode(value["content"])
                        files[value["path"]] = StoredFile(hub.store(data), len(data), git_blob_oid(data), lfs=False)
                    elif key == "lfsFile":
                        if not hub.has_object(value["oid"]):
                            raise ApiError(422, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{value['oid']}\n"
                        files[value["path"]] = StoredFile(
                            value["oid"], value["size"], git_blob_oid(pointer.encode()), lfs=True
                        )
                    elif key == "deletedFile":
                        files.pop(value["path"], None)
                    elif key == "deletedFolder":
                        folder = value["path"].rstrip("/") + "/"
                        files = {p: f for p, f in files.items() if not p.startswith(folder)}
                seed = json.dumps([repo.sha, header, operations, time.time_ns()]).encode()
                oid = hashlib.sha1(seed).hexdigest()
                repo.commits.append(Commit(oid, header.get("summary", ""), operations, files))
            prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
            url = f"{hub.url}/{prefix}{repo.repo_id}/commit/{oid}"
            return self._json(200, {"commitUrl": url, "commitOid": oid, "pullRequestUrl": None})

        def route_tree(self, match: re.Match, body: bytes, method: str) -> int:
            repo = self._repo(match)
            _, files = self._snapshot(repo, match["rev"])
            base = (match["path"] or "").strip("/")
            recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
            entries = _tree(files, base, recursive)
            if base and not entries and base not in files:
                raise ApiError(404, f"{base} does not exist", code="EntryNotFound")
            return self._json(200, entries)

        def route_paths_info(self, match: re.Match, body: bytes, method: str) -> int:
            repo = self._repo(match)
            _, files = self._snapshot(repo, match["rev"])
            if body[:1] == b"{":
                wanted = json.loads(body).get("paths", [])
            else:
                wanted = parse_qs(body.decode()).get("paths", [])
            entries = []
            for path in (p.strip("/") for p in wanted):
                if path in files:
                    entries.append(files[path].entry(path))
                elif any(p.startswith(path + "/") for p in files) or path == "":
                    entries.append(_folder(path))
            return self._json(200, entries)

        def route_resolve(self, match: re.Match, body: bytes, method: str) -> int:
            repo = self._repo(match)
            sha, files = self._snapshot(repo, match["rev"])
            stored = files.get(match["path"])
            if stored is None:
                raise ApiError(404, f"Entry not found: {match['path']}", code="EntryNotFound")
            data = hub.read(stored)
            etag = stored.sha256 if stored.lfs else stored.git_oid
            headers = {"ETag": f'"{etag}"', "X-Repo-Commit": sha, "Accept-Ranges": "bytes"}
            if stored.lfs:
                headers |= {"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(stored.size)}
            status, content = 200, data
            ranged = re.match(r"bytes=(\d*)-(\d*)$", self.headers.get("Range", ""))
            if ranged and data:
                first = int(ranged[1]) if ranged[1] else max(0, len(data) - int(ranged[2]))
                last = min(int(ranged[2]), len(data) - 1) if ranged[1] and ranged[2] else len(data) - 1
                status, content = 206, data[first : last + 1]
                headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            if method == "GET":
                self.wfile.write(content)
            return status

    return Handler


def _safe_yaml(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"invalid YAML: {error}") from error


def _folder(path: str) -> dict[str, Any]:
    return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "path": path}


def _tree(files: dict[str, StoredFile], base: str, recursive: bool) -> list[dict[str, Any]]:
    """The entries under `base`: its children, or everything below it when recursive, folders included."""
    prefix = f"{base}/" if base else ""
    entries: dict[str, dict[str, Any]] = {}
    for path, stored in sorted(files.items()):
        if not path.startswith(prefix):
            continue
        parts = path[len(prefix) :].split("/")
        for depth in range(1, len(parts)):
            folder = prefix + "/".join(parts[:depth])
            if recursive or depth == 1:
                entries.setdefault(folder, _folder(folder))
        if recursive or len(parts) == 1:
            entries[path] = stored.entry(path)
    return list(entries.values())


@contextmanager
def use_standin(monkeypatch: pytest.MonkeyPatch, hub: HubStandIn) -> Iterator[HubStandIn]:
    """Point huggingface_hub, datasets and transformers at the stand-in for the length of a test (see the
    module docstring for why each setting is needed)."""
    import datasets
    from huggingface_hub import constants
    from huggingface_hub.utils import close_session

    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", hub.url)
    monkeypatch.setattr(datasets.config, "HUB_DATASETS_URL", hub.url + "/datasets/{repo_id}/resolve/{revision}/{path}")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", hub.token)
    close_session()  # a client opened under other settings is not reused
    try:
        yield hub
    finally:
        close_session()
