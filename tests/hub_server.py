"""A local Hugging Face Hub for tests: real HTTP downloads and uploads through `huggingface_hub`, no mocks.

`HubServer` keeps model and dataset repositories in memory as git-like histories (every commit stays addressable by
its 40-hex hash, branches point to commits) and answers, on 127.0.0.1, the requests that `huggingface_hub` 2.x makes
for `hf_hub_download`, `snapshot_download`, `HfApi.model_info` / `dataset_info` / `repo_info` / `list_repo_tree` /
`list_repo_refs` / `file_exists`, `HfApi.create_repo`, `HfApi.create_commit` and `HfApi.upload_folder`, and so for
`HfFileSystem` (`hf://datasets/ORG/NAME/...`) and `datasets.load_dataset("ORG/NAME", streaming=True)`. A repository
is named by its path on the Hub: `ORG/NAME` for a model, `datasets/ORG/NAME` for a dataset (`HubServer.repos`,
`commit`, `resolve`); the API answers both `/api/models/ORG/NAME/...` and `/api/datasets/ORG/NAME/...`.

- `HEAD|GET /[datasets/]{namespace}/{name}/resolve/{revision}/{path}`: a regular file answers 200 with `ETag` (its
  git blob hash), `X-Repo-Commit` and `Content-Length`; a file that the Hub's default `.gitattributes` would put in
  LFS (`*.safetensors`, `*.parquet`, ...) answers 302 with `X-Linked-Etag` (its sha256), `X-Linked-Size` and a
  `Location` on a second port, the "CDN", which the client reaches without following the redirect (another origin),
  as on the Hub; the CDN answers `Range` requests (206).
- Errors carry the `X-Error-Code` header that `hf_raise_for_status` maps to `RepositoryNotFoundError`,
  `RevisionNotFoundError` and `EntryNotFoundError` (a missing file also carries `X-Repo-Commit`, so the client caches
  its absence in `.no_exist/`).
- No response ever carries `X-Xet-Hash`, so downloads never try Xet, and `preupload` answers `"regular"` for every
  file, so uploads send the content inline (base64) in the commit's NDJSON and never reach the LFS or Xet upload
  protocols (which would need their storage back ends).

`HubServer.add_static(path, data)` also serves plain files at `{endpoint}/static/{path}` (e.g. the A424 atlas files,
which brainlm_hf downloads from a pinned upstream commit, not from the Hub). Any other route answers 404 without an
error code (`huggingface_hub` also asks `/api/agent-harnesses` once per
process: the 404 keeps it from writing its registry cache into the real HF_HOME). Every request is logged
(`HubServer.requests`); `HubServer.downloads()` lists the files whose content was sent, so a test can assert that a
second load was a cache hit and that a new commit is downloaded again. `HubServer.online()` points the already
imported `huggingface_hub` at the server (its constants are read at import time, so setting `HF_ENDPOINT` afterwards
is not enough) and lifts `HF_HUB_OFFLINE`, which tests/conftest.py sets.

Failing Hubs: `HubServer.fail_status = 500` makes every request answer that status; `silent_server()` is an
endpoint that accepts connections and never answers, and `online_at(endpoint)` points `huggingface_hub` at any
endpoint as `online()` does.
"""

import base64
import hashlib
import json
import os
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from unittest import mock
from urllib.parse import parse_qs, quote, unquote, urlsplit

# Suffixes that the Hub's default .gitattributes stores in LFS (the ones a model repo is likely to hold).
LFS_SUFFIXES = (
    ".7z",
    ".arrow",
    ".bin",
    ".bz2",
    ".ckpt",
    ".gz",
    ".h5",
    ".joblib",
    ".msgpack",
    ".npy",
    ".npz",
    ".onnx",
    ".parquet",
    ".pickle",
    ".pkl",
    ".pt",
    ".pth",
    ".safetensors",
    ".tar",
    ".tflite",
    ".zip",
)
CREATED_AT = "2026-01-01T00:00:00.000Z"
# A repository is named by its path on the Hub: `ORG/NAME` for a model, `datasets/ORG/NAME` for a dataset.
REPO_PREFIXES = {"model": "", "dataset": "datasets/"}
API_FOLDERS = {f"{repo_type}s": prefix for repo_type, prefix in REPO_PREFIXES.items()}  # `/api/models/...`, ...


@dataclass(frozen=True)
class Blob:
    """The content of one file; `lfs` says whether the Hub would store it in LFS (decided by its suffix)."""

    data: bytes
    lfs: bool

    @cached_property
    def git_oid(self) -> str:
        """Git's blob hash of the content, the `ETag` of a regular file and the oid `preupload` compares."""
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()

    @cached_property
    def sha256(self) -> str:
        """The LFS oid, the `X-Linked-Etag` of an LFS file."""
        return hashlib.sha256(self.data).hexdigest()

    @cached_property
    def pointer(self) -> bytes:
        """The LFS pointer file that git stores in place of the content."""
        text = f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.data)}\n"
        return text.encode()

    @property
    def etag(self) -> str:
        """The entity tag the client keys its cache blobs on: sha256 for LFS files, the git hash otherwise."""
        return self.sha256 if self.lfs else self.git_oid

    def tree_entry(self, path: str) -> dict:
        """The entry of `GET /api/models/{repo}/tree/{revision}` for this file."""
        if not self.lfs:
            return {"type": "file", "oid": self.git_oid, "size": len(self.data), "path": path}
        pointer_oid = hashlib.sha1(b"blob %d\0" % len(self.pointer) + self.pointer).hexdigest()
        lfs = {"oid": self.sha256, "size": len(self.data), "pointerSize": len(self.pointer)}
        return {"type": "file", "oid": pointer_oid, "size": len(self.data), "path": path, "lfs": lfs}


def make_blob(path: str, data: bytes) -> Blob:
    """A blob for `path`, in LFS when its suffix is one the Hub's default .gitattributes tracks."""
    return Blob(data=data, lfs=path.lower().endswith(LFS_SUFFIXES))


@dataclass(frozen=True)
class Commit:
    """A commit: its hash, the full tree (path -> blob), its message and its parent's hash."""

    oid: str
    tree: Mapping[str, Blob]
    message: str
    parent: str | None


@dataclass
class Repo:
    """A repository (model or dataset): every commit ever made (by hash) and the branches (name -> commit hash)."""

    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LoggedRequest:
    """One request the server answered; `file` is the repo path whose content was sent (GET of a file), if any."""

    method: str
    path: str
    status: int
    file: str | None = None


class HubError(Exception):
    """An error answer: HTTP status, Hub error code (the `X-Error-Code` header, or None), message, the commit (sent
    as `X-Repo-Commit`) and extra fields of the JSON body."""

    def __init__(
        self, status: int, code: str | None, message: str, commit: str | None = None, extra: dict | None = None
    ):
        super().__init__(message)
        self.status, self.code, self.message, self.commit, self.extra = status, code, message, commit, extra or {}


class HubServer:
    """A threaded HTTP server on 127.0.0.1 (random free ports) serving in-memory model repositories.

    Use it as a context manager (`with HubServer() as hub, hub.online(): ...`); fill repositories with `commit`, or
    through the client with `HfApi().create_repo` and `upload_folder`.
    """

    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.requests: list[LoggedRequest] = []
        self._lfs_blobs: dict[str, Blob] = {}
        self._static: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._commit_count = 0
        self._servers: list[ThreadingHTTPServer] = []
        self.fail_status: int | None = None  # when set, every request answers this status

    # -- life cycle ------------------------------------------------------------------------------------------------

    def start(self) -> "HubServer":
        """Start the Hub and its "CDN" (the target of LFS redirects) on two free ports, each in a daemon thread."""
        for role in ("hub", "cdn"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
            server.daemon_threads = True
            server.hub, server.role = self, role
            threading.Thread(target=server.serve_forever, args=(0.05,), name=f"test-{role}", daemon=True).start()
            self._servers.append(server)
        return self

    def stop(self) -> None:
        """Stop both servers and close their sockets."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        """The Hub's base URL, what `HF_ENDPOINT` would be."""
        return f"http://127.0.0.1:{self._servers[0].server_port}"

    @property
    def cdn_endpoint(self) -> str:
        """Base URL of the "CDN" that serves LFS files (another origin, so the client does not follow the redirect)."""
        return f"http://127.0.0.1:{self._servers[1].server_port}"

    @contextmanager
    def online(self) -> Iterator["HubServer"]:
        """Point `huggingface_hub` and subprocesses at this server (`online_at`)."""
        with online_at(self.endpoint):
            yield self

    # -- repositories ----------------------------------------------------------------------------------------------

    def commit(
        self,
        repo_id: str,
        files: Path | Mapping[str, bytes | str | Path] | None = None,
        *,
        branch: str = "main",
        message: str = "commit",
        delete: tuple[str, ...] = (),
    ) -> str:
        """Commit `files` on `branch` of `repo_id` (both created when missing) and return the commit's hash;
        `repo_id` is the repository's path (`ORG/NAME` for a model, `datasets/ORG/NAME` for a dataset).

        `files` is a folder (all its files, at their relative paths) or a mapping from repo path to content (bytes,
        text, or a local file). The new tree is the branch's current tree with `delete` removed (a path or a folder)
        and `files` added; a new branch starts from an empty tree.
        """
        if files is None:
            files = {}
        elif isinstance(files, Path):
            files = {item.relative_to(files).as_posix(): item for item in sorted(files.rglob("*")) if item.is_file()}
        additions = {}
        for path, content in files.items():
            if isinstance(content, Path):
                content = content.read_bytes()
            elif isinstance(content, str):
                content = content.encode()
            additions[path] = make_blob(path, content)
        with self._lock:
            return self._commit(repo_id, branch, additions, delete, message)

    def _commit(
        self, repo_id: str, branch: str, additions: Mapping[str, Blob], deletions: tuple[str, ...], message: str
    ) -> str:
        """Make the commit; the caller holds the lock."""
        repo = self.repos.setdefault(repo_id, Repo())
        parent = repo.branches.get(branch)
        tree = dict(repo.commits[parent].tree) if parent else {}
        for deleted in deletions:
            prefix = deleted.rstrip("/") + "/"
            tree = {path: blob for path, blob in tree.items() if path != deleted and not path.startswith(prefix)}
        tree.update(additions)
        self._commit_count += 1
        digest = hashlib.sha1(f"{self._commit_count}\0{repo_id}\0{parent}\0{message}".encode())
        for path in sorted(tree):
            digest.update(f"\0{path}\0{tree[path].etag}".encode())
        oid = digest.hexdigest()
        repo.commits[oid] = Commit(oid=oid, tree=MappingProxyType(tree), message=message, parent=parent)
        repo.branches[branch] = oid
        self._lfs_blobs.update({blob.sha256: blob for blob in additions.values() if blob.lfs})
        return oid

    def resolve(self, repo_id: str, revision: str) -> Commit:
        """The commit a branch name or commit hash names in the repository at path `repo_id`; a `HubError` for a
        missing repository or revision."""
        repo = self.repos.get(repo_id)
        if repo is None:
            raise HubError(404, "RepoNotFound", "Repository not found")
        oid = repo.branches.get(revision, revision)
        if oid not in repo.commits:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return repo.commits[oid]

    def add_static(self, path: str, data: bytes) -> str:
        """Serve `data` at `{endpoint}/static/{path}` (GET only, logged like a file); returns that URL."""
        with self._lock:
            self._static[path] = data
        return f"{self.endpoint}/static/{path}"

    # -- request log -----------------------------------------------------------------------------------------------

    def downloads(self) -> list[str]:
        """Repo paths whose content was sent, in order (a GET of a file, from the Hub or from the CDN)."""
        return [entry.file for entry in self.requests if entry.file is not None]

    def reset_log(self) -> None:
        """Forget the requests logged so far."""
        with self._lock:
            self.requests.clear()

    def _log(self, entry: LoggedRequest) -> None:
        with self._lock:
            self.requests.append(entry)


@contextmanager
def online_at(endpoint: str) -> Iterator[str]:
    """Point `huggingface_hub` (constants, the module-level `HfApi`), `datasets` and subprocesses (env) at `endpoint`.

    `huggingface_hub` and `datasets` read `HF_ENDPOINT` and `HF_HUB_OFFLINE` when they are imported, so the values
    are patched in their `constants` and `config` modules as well as in the environment; transformers' shared
    `HfApi` (which keeps the endpoint of its first use, e.g. an earlier test's server) is made anew inside, and the
    cached `HfFileSystem` instances (`hf://` URLs, which keep their endpoint and listings) are dropped on entry and
    exit. Everything is restored on exit.
    """
    from datasets import config as datasets_config
    from huggingface_hub import HfFileSystem, constants, hf_api
    from transformers.utils import hub as transformers_hub

    environ = {"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0"}
    HfFileSystem.clear_instance_cache()
    with (
        mock.patch.dict(os.environ, environ),
        mock.patch.object(constants, "ENDPOINT", endpoint),
        mock.patch.object(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        ),
        mock.patch.object(constants, "HF_HUB_OFFLINE", False),
        mock.patch.object(hf_api.api, "endpoint", endpoint),
        mock.patch.object(transformers_hub, "_hf_api", None),
        mock.patch.object(datasets_config, "HF_ENDPOINT", endpoint),
        mock.patch.object(
            datasets_config, "HUB_DATASETS_URL", endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}"
        ),
        mock.patch.object(datasets_config, "HF_HUB_OFFLINE", False),
    ):
        try:
            yield endpoint
        finally:
            HfFileSystem.clear_instance_cache()


@contextmanager
def silent_server() -> Iterator[str]:
    """The URL of a server on 127.0.0.1 that accepts every connection and never answers (a hung Hub or mirror)."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:  # closed on exit
                return

    threading.Thread(target=accept, name="test-silent-hub", daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
        for connection in accepted:
            connection.close()


class _Handler(BaseHTTPRequestHandler):
    """Routes one request of `huggingface_hub` to the `HubServer` that owns the listening socket."""

    protocol_version = "HTTP/1.1"
    server_version = "brainlm-test-hub/1"

    def log_message(self, format, *args) -> None:
        """Silence the stderr access log: `HubServer.requests` keeps it."""

    @property
    def hub(self) -> HubServer:
        return self.server.hub

    def do_HEAD(self) -> None:
        self._dispatch(send_body=False)

    def do_GET(self) -> None:
        self._dispatch(send_body=True)

    def do_POST(self) -> None:
        self._dispatch(send_body=True)

    def _dispatch(self, send_body: bool) -> None:
        url = urlsplit(self.path)
        # Split before unquoting: a revision such as "refs/pr/1" arrives as one segment, "refs%2Fpr%2F1".
        parts = [unquote(part) for part in url.path.strip("/").split("/")]
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._sent_file: str | None = None
        try:
            if self.hub.fail_status is not None:
                raise HubError(self.hub.fail_status, None, "The test hub fails on purpose")
            status, headers, content = self._route(parts, query, body)
        except HubError as error:
            status, content = error.status, json.dumps({"error": error.message, **error.extra}).encode()
            headers = {"Content-Type": "application/json", "X-Error-Message": error.message}
            if error.code is not None:
                headers["X-Error-Code"] = error.code
            if error.commit is not None:
                headers["X-Repo-Commit"] = error.commit
        # Logged before answering, so that the log is complete once the client has its answer.
        self.hub._log(LoggedRequest(self.command, url.path, status, self._sent_file if send_body else None))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(content)))  # HEAD: the size of the body a GET would get
        self.end_headers()
        if send_body:
            self.wfile.write(content)

    def _route(self, parts: list[str], query: dict[str, str], body: bytes) -> tuple[int, dict, bytes]:
        """(status, headers, body) for the request; raises `HubError` for error answers."""
        method = self.command
        if self.server.role == "cdn":
            if method == "GET" and len(parts) >= 2 and parts[0] == "lfs" and parts[1] in self.hub._lfs_blobs:
                return self._send_file("/".join(parts[3:]), self.hub._lfs_blobs[parts[1]].data)
            raise HubError(404, None, "Not found on the CDN")
        if method == "GET" and parts[:1] == ["static"] and "/".join(parts[1:]) in self.hub._static:
            return self._send_file("/".join(parts[1:]), self.hub._static["/".join(parts[1:])])
        if parts[:1] == ["api"]:
            if method == "POST" and parts[1:] == ["repos", "create"]:
                return self._create_repo(json.loads(body))
            if method == "POST" and parts[1:] == ["validate-yaml"]:
                return _json({"errors": [], "warnings": []})
            if len(parts) >= 4 and parts[1] in API_FOLDERS:
                key = API_FOLDERS[parts[1]] + f"{parts[2]}/{parts[3]}"
                return self._repo_api(method, key, parts[4:], query, body)
        skip = 1 if parts[:1] == ["datasets"] else 0  # `/datasets/{repo}/resolve/...`, or `/{repo}/resolve/...`
        if method in ("GET", "HEAD") and len(parts) >= 5 + skip and parts[2 + skip] == "resolve":
            return self._resolve("/".join(parts[: 2 + skip]), parts[3 + skip], "/".join(parts[4 + skip :]))
        raise HubError(404, None, f"{method} {self.path} is not implemented by the test hub")

    # -- downloads -------------------------------------------------------------------------------------------------

    def _resolve(self, repo_id: str, revision: str, path: str) -> tuple[int, dict, bytes]:
        """HEAD/GET of a file at a revision: the file (regular) or a redirect to the CDN (LFS)."""
        commit = self.hub.resolve(repo_id, revision)
        blob = commit.tree.get(path)
        if blob is None:
            raise HubError(404, "EntryNotFound", "Entry not found", commit=commit.oid)
        if blob.lfs:
            location = f"{self.hub.cdn_endpoint}/lfs/{blob.sha256}/{quote(repo_id, safe='')}/{quote(path)}"
            headers = {
                "Location": location,
                "ETag": f'"{blob.sha256}"',
                "X-Linked-Etag": f'"{blob.sha256}"',
                "X-Linked-Size": str(len(blob.data)),
                "X-Repo-Commit": commit.oid,
            }
            return 302, headers, b""
        status, headers, content = self._send_file(path, blob.data)
        return status, {**headers, "ETag": f'"{blob.git_oid}"', "X-Repo-Commit": commit.oid}, content

    def _send_file(self, path: str, data: bytes) -> tuple[int, dict, bytes]:
        """The file's bytes, or the part a `Range: bytes=start-[end]` header asks for (206)."""
        headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        status, content = 200, data
        ranged = self.headers.get("Range", "")
        if ranged.startswith("bytes=") and "," not in ranged:
            start, _, end = ranged.removeprefix("bytes=").partition("-")
            first, last = int(start or 0), min(int(end) if end else len(data) - 1, len(data) - 1)
            status, content = 206, data[first : last + 1]
            headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
        self._sent_file = path
        return status, headers, content

    # -- the repository API ----------------------------------------------------------------------------------------

    def _repo_api(
        self, method: str, repo_id: str, rest: list[str], query: dict[str, str], body: bytes
    ) -> tuple[int, dict, bytes]:
        """`/api/models/{repo_id}/...` and `/api/datasets/{repo_id}/...` (`repo_id`: the repository's path): info,
        tree, refs, preupload and commit."""
        if method == "GET" and (not rest or rest[0] == "revision"):
            commit = self.hub.resolve(repo_id, rest[1] if len(rest) > 1 else "main")
            return _json(self._repo_info(repo_id, commit, blobs=query.get("blobs", "").lower() == "true"))
        if method == "GET" and rest[:1] == ["tree"] and len(rest) >= 2:
            commit = self.hub.resolve(repo_id, rest[1])
            return _json(_tree(commit, "/".join(rest[2:]), recursive=query.get("recursive", "").lower() == "true"))
        if method == "GET" and rest == ["refs"]:
            self.hub.resolve(repo_id, "main")
            branches = [
                {"name": name, "ref": f"refs/heads/{name}", "targetCommit": oid}
                for name, oid in sorted(self.hub.repos[repo_id].branches.items())
            ]
            return _json({"branches": branches, "converts": [], "tags": [], "pullRequests": []})
        if method == "POST" and rest[:1] == ["preupload"] and len(rest) == 2:
            return self._preupload(repo_id, rest[1], json.loads(body))
        if method == "POST" and rest[:1] == ["commit"] and len(rest) == 2:
            if query.get("create_pr"):
                raise HubError(400, None, "Pull requests are not supported by the test hub")
            return self._create_commit(repo_id, rest[1], body)
        raise HubError(404, None, f"{method} {self.path} is not implemented by the test hub")

    def _repo_info(self, repo_id: str, commit: Commit, blobs: bool) -> dict:
        """The JSON of `GET /api/{models|datasets}/{repo_id}[/revision/{revision}]` that `ModelInfo` or
        `DatasetInfo` parses (`repo_id`: the repository's path)."""
        siblings = []
        for path, blob in sorted(commit.tree.items()):
            sibling = {"rfilename": path}
            if blobs:
                entry = blob.tree_entry(path)
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if blob.lfs:
                    sibling["lfs"] = {"size": len(blob.data), "sha256": blob.sha256, "pointerSize": len(blob.pointer)}
            siblings.append(sibling)
        name = repo_id.removeprefix(REPO_PREFIXES["dataset"])
        return {
            "id": name,
            **({} if name != repo_id else {"modelId": name}),
            "author": name.split("/")[0],
            "sha": commit.oid,
            "lastModified": CREATED_AT,
            "createdAt": CREATED_AT,
            "private": False,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
        }

    def _create_repo(self, payload: dict) -> tuple[int, dict, bytes]:
        """`POST /api/repos/create`: a new model or dataset repository whose `main` is an empty first commit."""
        repo_type = payload.get("type") or "model"
        if repo_type not in REPO_PREFIXES:
            raise HubError(400, None, f"The test hub serves model and dataset repositories, not {repo_type}s")
        if not payload.get("organization"):
            raise HubError(400, None, "The test hub has no user: give the repository a namespace")
        name = f"{payload['organization']}/{payload['name']}"
        repo_id = REPO_PREFIXES[repo_type] + name
        url = f"{self.hub.endpoint}/{repo_id}"
        with self.hub._lock:
            if repo_id in self.hub.repos:
                # The Hub's conflict answer carries the url, which `create_repo(exist_ok=True)` returns.
                raise HubError(409, None, f"You already created this {repo_type} repo", extra={"url": url})
            self.hub._commit(repo_id, "main", {}, (), "initial commit")
        return _json({"url": url, "name": name, "id": name})

    def _preupload(self, repo_id: str, revision: str, payload: dict) -> tuple[int, dict, bytes]:
        """`POST .../preupload/{revision}`: every file goes inline ("regular"); `oid` is the current content's hash."""
        tree = self._branch_head(repo_id, revision).tree
        files = [
            {
                "path": item["path"],
                "uploadMode": "regular",
                "shouldIgnore": False,
                "oid": tree[item["path"]].git_oid if item["path"] in tree else None,
            }
            for item in payload["files"]
        ]
        return _json({"files": files, "commitOid": self.hub.repos[repo_id].branches[revision]})

    def _create_commit(self, repo_id: str, revision: str, body: bytes) -> tuple[int, dict, bytes]:
        """`POST .../commit/{revision}`: apply the NDJSON operations (inline files, deletions) on the branch."""
        head = self._branch_head(repo_id, revision)
        summary, additions, deletions = "", {}, []
        for line in body.splitlines():
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value["summary"]
                if value.get("parentCommit", head.oid) != head.oid:
                    raise HubError(412, None, "A newer commit exists: parentCommit is not the head of the branch")
            elif key == "file":
                data = base64.b64decode(value["content"]) if value.get("encoding") == "base64" else value["content"]
                additions[value["path"]] = make_blob(value["path"], data if isinstance(data, bytes) else data.encode())
            elif key in ("deletedFile", "deletedFolder"):
                path = value["path"].rstrip("/")
                if not any(name == path or name.startswith(path + "/") for name in head.tree):
                    raise HubError(404, "EntryNotFound", f"A file with this name doesn't exist: {path}")
                deletions.append(path)
            else:
                raise HubError(400, None, f"Commit operation {key!r} (LFS or Xet) is not supported by the test hub")
        with self.hub._lock:
            oid = self.hub._commit(repo_id, revision, additions, tuple(deletions), summary)
        commit_url = f"{self.hub.endpoint}/{repo_id}/commit/{oid}"
        return _json({"success": True, "commitOid": oid, "commitUrl": commit_url, "pullRequestUrl": None})

    def _branch_head(self, repo_id: str, branch: str) -> Commit:
        """The head commit of a branch (uploads go to branches, never to a commit hash)."""
        commit = self.hub.resolve(repo_id, branch)
        if branch not in self.hub.repos[repo_id].branches:
            raise HubError(400, None, f"Can only commit to a branch, not to {branch}")
        return commit


def _tree(commit: Commit, folder: str, recursive: bool) -> list[dict]:
    """Entries of `GET .../tree/{revision}/{folder}`: files and folders below `folder`, all levels or one."""
    prefix = f"{folder}/" if folder else ""
    entries: dict[str, dict] = {}
    for path, blob in sorted(commit.tree.items()):
        if not path.startswith(prefix):
            continue
        parents = list(PurePosixPath(path[len(prefix) :]).parents)[-2::-1]  # the folders between, outermost first
        for parent in parents if recursive else parents[:1]:
            name = prefix + parent.as_posix()
            oid = hashlib.sha1(f"{commit.oid}\0{name}".encode()).hexdigest()
            entries.setdefault(name, {"type": "directory", "oid": oid, "size": 0, "path": name})
        if recursive or not parents:
            entries[path] = blob.tree_entry(path)
    if folder and not entries:
        raise HubError(404, "EntryNotFound", f"{folder} does not exist", commit=commit.oid)
    return list(entries.values())


def _json(payload: dict | list) -> tuple[int, dict, bytes]:
    """A 200 JSON answer."""
    return 200, {"Content-Type": "application/json"}, json.dumps(payload).encode()
