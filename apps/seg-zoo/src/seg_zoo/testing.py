"""A local Hugging Face Hub for offline tests: olah serves downloads, a project-owned receiver takes uploads.

This module starts a Hub that lives on the loopback interface and needs no network, so seg's own tests (and users
who test their pipelines offline) can run the real ``huggingface_hub`` client end to end: ``create_repo``,
``upload_folder`` / ``upload_file`` / ``push_to_hub``, ``create_tag``, then ``hf_hub_download`` /
``snapshot_download`` / ``from_pretrained``. There is no paper behind it, so there are no equation numbers to cite;
the behaviour follows the project note ``docs/reference/hub-testing.md`` (verified against huggingface_hub 2.4.0).

Two servers, one endpoint:

* **olah** (``olah==0.5.4``, an installable, MIT-licensed Hub mirror) runs with ``offline = true`` as a
  subprocess and serves plain git repositories from ``root/"mirrors"`` over the Hub's download API (GET/HEAD).
* **The upload receiver** is a *test double of the Hub's upload API written by this project; it is not the
  Hub and not part of olah.* It is a stdlib ``ThreadingHTTPServer`` in a thread that answers the POST
  requests the client sends to upload, commits into the git repositories olah serves, and forwards
  everything else (GET, HEAD, other POSTs such as ``paths-info``) verbatim to olah with ``http.client``,
  without following redirects. ``HF_ENDPOINT`` points at the receiver, so one URL covers both directions.

The receiver implements:

* ``POST /api/repos/create``: ``{"name", "organization", "type"?}``. Creates a git repository on branch
  ``main`` with an initial empty commit. Replies 200 ``{"url"}``, or 409 with the same ``url`` when the
  repository exists (``exist_ok=True`` relies on this). ``type`` may be ``"model"`` (default) or
  ``"dataset"``; an id without an organization is refused with 400.
* ``POST /api/validate-yaml``: always 200 ``{"errors": [], "warnings": []}`` (no card validation).
* ``POST /api/{type}s/{org}/{name}/preupload/{rev}``: every file is ``"regular"`` and none is ignored.
* ``POST /api/{type}s/{org}/{name}/commit/{rev}``: the NDJSON body (``header``, ``file`` with base64 content,
  ``deletedFile``, ``deletedFolder``) is applied to the work tree, then ``git add -A`` and ``git commit`` with
  the summary (and description). Replies ``{"commitUrl", "commitOid"}`` with the new HEAD sha. A
  ``parentCommit`` that is not HEAD gives 412; deleting a missing path gives 404 ``EntryNotFound``.
* ``POST /api/{type}s/{org}/{name}/tag/{rev}``: ``{"tag", "message"?}``, what ``HfApi.create_tag`` sends.
  Creates a git tag at the revision (annotated when a message is given). 409 when the tag exists, 404
  ``RevisionNotFound`` when the revision does not resolve to a commit.

Deliberate limits of the receiver: only the ``main`` branch can be written (a preupload or commit to another
revision, or ``create_pr=True``, is refused with 400 and a message saying so); ``lfsFile`` operations are refused
(everything is uploaded "regular", so the client never uses LFS or Xet); ``preupload`` returns no remote ``oid``,
so unchanged files are re-sent and every commit creates a git commit (``--allow-empty``); authentication is
ignored (:meth:`LocalHub.env` sets a dummy ``HF_TOKEN``); repository ids, revisions, tags and file paths are
validated (no ``..``, no absolute paths, nothing under ``.git``) before anything touches the disk.

olah limits that matter to users (olah 0.5.4 with huggingface_hub 2.4.0):

* a binary file of 121 to 149 bytes makes olah fail with 500 (it tries to read it as an LFS pointer), so HEAD,
  tree listing and snapshot downloads of such a repository fail: keep fixture files at >= 150 bytes;
* ``model_info`` / ``repo_info`` need ``revision="main"``: without a revision olah answers 401, so they raise
  and ``repo_exists()`` returns False;
* a missing file gives ``RepositoryNotFoundError`` (the real Hub gives ``EntryNotFoundError``);
* ``list_repo_commits`` fails (olah's author entries lack ``"user"``);
* no LFS or Xet: downloads never exercise the client's LFS/Xet paths.

Layout under ``root``: ``mirrors/{models,datasets}/<org>/<name>`` (git work trees), ``olah-cache/``,
``olah.toml``, ``olah.log`` (olah's stdout and stderr), ``logs/`` (olah's own log), ``receiver.log`` and
``cache/`` (the default ``HF_HUB_CACHE`` of :meth:`LocalHub.env`).

Example:
    >>> with local_hub(tmp_path) as hub:  # doctest: +SKIP
    ...     subprocess.run([sys.executable, "client.py"], env=hub.env(), check=True)
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["REPO_TYPES", "LocalHub", "OlahNotFoundError", "local_hub"]

REPO_TYPES: tuple[str, ...] = ("model", "dataset")
"""The repository types the local Hub can create and write."""

_HOST = "127.0.0.1"
_GIT_IDENTITY = ("-c", "user.name=seg LocalHub", "-c", "user.email=local-hub@seg.invalid")
_GIT_SAFE_CONFIG = ("-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false", "-c", "core.autocrlf=false")
_NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?")
_REV_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}")
_ACTION_RE = re.compile(
    r"/api/(?P<type>[a-z]+)s/(?P<org>[^/]+)/(?P<name>[^/]+)/(?P<action>preupload|commit|tag)/(?P<rev>.+)"
)
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
_CHUNK = 64 * 1024
_LOG_TAIL = 4000


class OlahNotFoundError(RuntimeError):
    """Raised by :func:`local_hub` when the ``olah-cli`` executable cannot be found.

    Tests usually turn it into a skip: ``pytest.skip(str(error))``.
    """


@dataclass(frozen=True)
class LocalHub:
    """A running local Hub, as yielded by :func:`local_hub`.

    Attributes:
        endpoint: ``http://127.0.0.1:<receiver port>``, the value ``HF_ENDPOINT`` must have for the client.
        root: The folder holding the git mirrors (``root/"mirrors"/{models,datasets}/<org>/<name>``), olah's
            config, cache and logs, and the default download cache ``root/"cache"``.
    """

    endpoint: str
    root: Path

    def env(self, cache: Path | None = None) -> dict[str, str]:
        """Return an environment for a client process that talks to this Hub.

        ``huggingface_hub`` reads its configuration at import time, so run the client in a subprocess with
        this environment (``subprocess.run([...], env=hub.env())``) rather than changing ``os.environ`` in a
        process that may already have imported it.

        Args:
            cache: The ``HF_HUB_CACHE`` to use; ``None`` means ``root/"cache"``.

        Returns:
            A copy of ``os.environ`` with ``HF_ENDPOINT`` set to :attr:`endpoint`, ``HF_HUB_CACHE`` set,
            ``HF_HUB_DISABLE_TELEMETRY=1``, ``HF_HUB_OFFLINE`` removed, ``HF_TOKEN`` set to a dummy token (the
            receiver ignores authentication) and ``127.0.0.1``/``localhost`` added to ``NO_PROXY``/``no_proxy``
            so that a proxy configured in the environment is not used for the loopback endpoint.
        """
        env = dict(os.environ)
        env.pop("HF_HUB_OFFLINE", None)
        env["HF_ENDPOINT"] = self.endpoint
        env["HF_HUB_CACHE"] = str(cache if cache is not None else self.root / "cache")
        env["HF_HUB_DISABLE_TELEMETRY"] = "1"
        env["HF_TOKEN"] = "hf_test_token"
        for key in ("NO_PROXY", "no_proxy"):
            entries = [entry for entry in env.get(key, "").split(",") if entry.strip()]
            env[key] = ",".join([*entries, _HOST, "localhost"])
        return env

    def repo_path(self, repo_id: str, repo_type: str = "model") -> Path:
        """Return the git work tree that backs a repository (it may not exist yet).

        Args:
            repo_id: ``"org/name"``.
            repo_type: ``"model"`` or ``"dataset"``.

        Returns:
            ``root/"mirrors"/f"{repo_type}s"/org/name``.

        Raises:
            ValueError: If ``repo_id`` is not a safe ``"org/name"`` or ``repo_type`` is not supported.
        """
        org, name = _split_repo_id(repo_id)
        return _repo_dir(self.root / "mirrors", _check_repo_type(repo_type), org, name)


@contextmanager
def local_hub(root: Path, *, startup_timeout: float = 30.0) -> Iterator[LocalHub]:
    """Start a local Hub (olah plus the upload receiver) on the loopback interface and stop it on exit.

    Args:
        root: A folder for the Hub's repositories, config, logs and default cache; created if missing.
        startup_timeout: Seconds to wait for olah to accept TCP connections.

    Yields:
        The running :class:`LocalHub`.

    Raises:
        ValueError: If ``startup_timeout`` is not a positive finite number.
        OlahNotFoundError: If ``olah-cli`` is not installed (a ``RuntimeError``).
        RuntimeError: If ``git`` is missing, or olah exits or does not come up in time (with the tail of its log).
    """
    if not (startup_timeout > 0 and math.isfinite(startup_timeout)):
        raise ValueError(
            f"startup_timeout must be a positive number of seconds, got {startup_timeout!r}; pass e.g. 30.0"
        )
    olah = _find_olah()
    git = shutil.which("git")
    if git is None:
        raise RuntimeError("git was not found on PATH; the local Hub stores repositories as git work trees")
    root = Path(root).resolve()
    mirrors = root / "mirrors"
    for folder in (mirrors / "models", mirrors / "datasets", root / "olah-cache", root / "logs"):
        folder.mkdir(parents=True, exist_ok=True)

    receiver = _Receiver(mirrors=mirrors, git=git, log_path=root / "receiver.log")
    try:
        olah_port = _free_port()
        config = root / "olah.toml"
        config.write_text(_olah_config(olah_port, receiver.netloc, mirrors, root / "olah-cache"), encoding="utf-8")
        log_path = root / "olah.log"
        env = dict(os.environ)
        env["OLAH_LOG_PATH"] = str(root / "logs")
        env["PYTHONUNBUFFERED"] = "1"
        with log_path.open("wb") as log:  # a fresh log per start, so a failure shows this run only
            process = subprocess.Popen(
                [str(olah), "-c", str(config), "--log-path", str(root / "logs")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=root,
                env=env,
            )
        try:
            _wait_for_port(process, olah_port, startup_timeout, log_path)
            receiver.olah_port = olah_port
            thread = threading.Thread(
                target=receiver.serve_forever, kwargs={"poll_interval": 0.05}, name="seg-local-hub", daemon=True
            )
            thread.start()
            try:
                yield LocalHub(endpoint=f"http://{receiver.netloc}", root=root)
            finally:
                receiver.shutdown()
                thread.join(timeout=10)
        finally:
            _stop(process)
    finally:
        receiver.server_close()
        receiver.close_log()


# --------------------------------------------------------------------------------------------------------------------
# Startup helpers.


def _find_olah() -> Path:
    """Return the ``olah-cli`` executable: next to ``sys.executable`` first, then on PATH."""
    for name in ("olah-cli", "olah-cli.exe"):
        candidate = Path(sys.executable).parent / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("olah-cli")
    if found is None:
        raise OlahNotFoundError(
            f"olah-cli was not found next to {sys.executable} or on PATH; the local Hub needs it to serve "
            "downloads: pip install olah==0.5.4"
        )
    return Path(found)


def _free_port() -> int:
    """Return a TCP port on the loopback interface that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _toml_string(value: str) -> str:
    """Quote ``value`` as a TOML basic string (JSON string escapes are valid TOML)."""
    return json.dumps(value, ensure_ascii=True)


def _olah_config(port: int, netloc: str, mirrors: Path, cache: Path) -> str:
    """Return olah.toml: offline mode, serving git mirrors; generated URLs point at the receiver."""
    return "\n".join(
        [
            "[basic]",
            f"host = {_toml_string(_HOST)}",
            f"port = {port}",
            f"mirror-netloc = {_toml_string(netloc)}",
            f"mirror-lfs-netloc = {_toml_string(netloc)}",
            f"mirrors-path = [{_toml_string(str(mirrors))}]",
            f"repos-path = {_toml_string(str(cache))}",
            "metadata-cache-ttl = 0",
            "",
            "[accessibility]",
            "offline = true",
            "",
        ]
    )


def _log_tail(path: Path) -> str:
    """Return the last characters of a log file, or a note when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"<could not read {path}: {exc}>"
    return text[-_LOG_TAIL:] if text else "<empty>"


def _wait_for_port(process: subprocess.Popen[bytes], port: int, timeout: float, log_path: Path) -> None:
    """Wait until olah accepts TCP connections (``GET /`` is not a usable probe: it answers 500)."""
    deadline = time.monotonic() + timeout
    while True:
        code = process.poll()
        if code is not None:
            raise RuntimeError(
                f"olah-cli exited with code {code} during startup; tail of {log_path}:\n{_log_tail(log_path)}"
            )
        try:
            with socket.create_connection((_HOST, port), timeout=0.25):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            _stop(process)
            raise RuntimeError(
                f"olah-cli did not accept connections on {_HOST}:{port} within {timeout} s; raise startup_timeout "
                f"if the machine is slow. Tail of {log_path}:\n{_log_tail(log_path)}"
            )
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate a subprocess, and kill it if it does not exit within 10 s."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


# --------------------------------------------------------------------------------------------------------------------
# Validation of what requests name (before anything touches the disk).


def _check_name(value: object, what: str) -> str:
    """Return ``value`` if it is a safe Hub namespace or repository name, else raise ValueError."""
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value) or ".." in value or "--" in value:
        raise ValueError(
            f"{what} must be 1-96 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, "
            f"without '..' or '--'; got {value!r}"
        )
    return value


def _split_repo_id(repo_id: object) -> tuple[str, str]:
    """Split ``"org/name"`` into validated parts."""
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ValueError(f"repo_id must look like 'org/name' (exactly one '/'), got {repo_id!r}")
    org, name = repo_id.split("/")
    return _check_name(org, "the organization of repo_id"), _check_name(name, "the name of repo_id")


def _check_repo_type(repo_type: object) -> str:
    """Return ``repo_type`` if the local Hub supports it, else raise ValueError."""
    if repo_type not in REPO_TYPES:
        raise ValueError(f"repo_type must be one of {REPO_TYPES} (the local Hub has no Spaces), got {repo_type!r}")
    return str(repo_type)


def _repo_dir(mirrors: Path, repo_type: str, org: str, name: str) -> Path:
    """Return the work tree of a repository from already validated parts."""
    return mirrors / f"{repo_type}s" / org / name


def _check_file_path(value: object) -> str:
    """Return a normalised relative POSIX path inside a repository, else raise ValueError."""
    if not isinstance(value, str) or not value or "\\" in value or "\x00" in value:
        raise ValueError(f"a file path must be a non-empty POSIX path without '\\' or NUL, got {value!r}")
    if value.startswith("/"):
        raise ValueError(f"a file path must be relative to the repository root, got the absolute path {value!r}")
    parts = PurePosixPath(value).parts
    if any(part in {"..", "."} for part in value.split("/")):
        raise ValueError(f"a file path must not contain '.' or '..' segments, got {value!r}")
    if not parts or parts[0].lower() == ".git":
        raise ValueError(f"a file path must name a file outside '.git', got {value!r}")
    return "/".join(parts)


def _check_revision(value: str) -> str:
    """Return ``value`` if it is a plausible branch, tag or commit sha, else raise ValueError."""
    if not _REV_RE.fullmatch(value) or ".." in value or value.endswith(("/", ".lock")):
        raise ValueError(
            f"revision must be a branch, tag or commit sha (letters, digits, '.', '_', '-', '/'), got {value!r}"
        )
    return value


# --------------------------------------------------------------------------------------------------------------------
# The upload receiver.


class _HttpError(Exception):
    """An error reply: status, message and the optional ``X-Error-Code`` the client maps to an exception."""

    def __init__(self, status: int, message: str, error_code: str | None = None, extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.extra = extra or {}


class _Receiver(ThreadingHTTPServer):
    """The HTTP server of the receiver; holds the paths, the olah port and a lock serialising git writes."""

    daemon_threads = True

    def __init__(self, *, mirrors: Path, git: str, log_path: Path) -> None:
        super().__init__((_HOST, 0), _Handler)
        self.mirrors = mirrors
        self.git_executable = git
        self.olah_port = 0
        self.lock = threading.Lock()
        port: int = self.server_address[1]
        self.netloc = f"{_HOST}:{port}"
        self.endpoint = f"http://{self.netloc}"
        self._log_lock = threading.Lock()
        self._log = log_path.open("a", encoding="utf-8")

    def log(self, line: str) -> None:
        """Append one line to ``receiver.log``."""
        with self._log_lock:
            if not self._log.closed:
                self._log.write(line + "\n")
                self._log.flush()

    def close_log(self) -> None:
        """Close ``receiver.log``."""
        with self._log_lock:
            self._log.close()

    def run_git(self, repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
        """Run git in ``repo`` with a fixed identity and no user or system config; never raises on failure."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
        env.update({"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0"})
        command = [self.git_executable, *_GIT_IDENTITY, *_GIT_SAFE_CONFIG, "-C", str(repo), *args]
        return subprocess.run(command, capture_output=True, text=True, check=False, env=env, timeout=120)

    def git(self, repo: Path, *args: str) -> str:
        """Run git in ``repo`` and return its stripped stdout; raise ``_HttpError`` (500) on failure."""
        result = self.run_git(repo, *args)
        if result.returncode != 0:
            raise _HttpError(500, f"git {' '.join(args)} failed in {repo}: {result.stderr.strip()}")
        return result.stdout.strip()

    def repo_url(self, repo_type: str, org: str, name: str) -> str:
        """Return the web URL of a repository on this endpoint (``/datasets/`` prefix for datasets)."""
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        return f"{self.endpoint}/{prefix}{org}/{name}"


class _Handler(BaseHTTPRequestHandler):
    """Answers the upload POSTs and forwards everything else to olah."""

    protocol_version = "HTTP/1.1"
    server_version = "seg-LocalHub-receiver/1"
    timeout = 120

    @property
    def hub(self) -> _Receiver:
        """The receiver this handler serves."""
        server = self.server
        assert isinstance(server, _Receiver)
        return server

    def log_message(self, format: str, *args: Any) -> None:
        """Write the access log to ``receiver.log`` instead of stderr."""
        self.hub.log(f"{self.address_string()} {format % args}")

    # ---- dispatch ----------------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        """Forward to olah."""
        self._forward()

    def do_HEAD(self) -> None:
        """Forward to olah."""
        self._forward()

    def do_PUT(self) -> None:
        """Forward to olah (which refuses writes)."""
        self._forward()

    def do_DELETE(self) -> None:
        """Forward to olah (which refuses writes)."""
        self._forward()

    def do_POST(self) -> None:
        """Answer the upload endpoints; forward any other POST to olah."""
        url = urlsplit(self.path)
        match = _ACTION_RE.fullmatch(url.path)
        if url.path not in {"/api/repos/create", "/api/validate-yaml"} and match is None:
            self._forward()
            return
        try:
            if url.path == "/api/repos/create":
                self._create_repo()
            elif url.path == "/api/validate-yaml":
                self._read_body()
                self._send_json(200, {"errors": [], "warnings": []})
            elif match is not None:
                self._repo_action(match, parse_qs(url.query, keep_blank_values=True))
        except _HttpError as error:
            self._send_error(error)
        except ValueError as error:
            self._send_error(_HttpError(400, str(error)))
        except Exception as error:  # the client should see a 500 with the reason, not a dropped connection
            self.hub.log(f"internal error: {type(error).__name__}: {error}")
            self._send_error(_HttpError(500, f"{type(error).__name__}: {error}"))

    # ---- replies -------------------------------------------------------------------------------------------------

    def _send_json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_error(self, error: _HttpError) -> None:
        headers = {"X-Error-Code": error.error_code} if error.error_code else {}
        self._send_json(error.status, {"error": error.message, **error.extra}, headers)

    def _read_body(self) -> bytes:
        """Read the request body (Content-Length or chunked)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            pieces: list[bytes] = []
            while True:
                size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
                try:
                    size = int(size_line, 16)
                except ValueError as exc:
                    raise _HttpError(400, f"bad chunk size {size_line!r} in a chunked body") from exc
                if size == 0:
                    while self.rfile.readline(1024) not in {b"\r\n", b"\n", b""}:
                        pass
                    return b"".join(pieces)
                pieces.append(self.rfile.read(size))
                self.rfile.readline(1024)
        raw = self.headers.get("Content-Length", "0")
        try:
            length = int(raw)
        except ValueError as exc:
            raise _HttpError(400, f"Content-Length must be an integer, got {raw!r}") from exc
        if length < 0:
            raise _HttpError(400, f"Content-Length must be >= 0, got {length}")
        return self.rfile.read(length) if length else b""

    def _json_body(self) -> dict[str, Any]:
        body = self._read_body()
        try:
            payload = json.loads(body or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _HttpError(400, f"the request body must be a JSON object: {exc}") from exc
        if not isinstance(payload, dict):
            raise _HttpError(400, f"the request body must be a JSON object, got {type(payload).__name__}")
        return payload

    # ---- upload endpoints ----------------------------------------------------------------------------------------

    def _create_repo(self) -> None:
        payload = self._json_body()
        repo_type = _check_repo_type(payload.get("type") or "model")
        if payload.get("organization") is None:
            raise _HttpError(
                400, "create_repo needs a namespace: pass repo_id='org/name' (the local Hub has no user accounts)"
            )
        org = _check_name(payload.get("organization"), "organization")
        name = _check_name(payload.get("name"), "name")
        hub = self.hub
        repo = _repo_dir(hub.mirrors, repo_type, org, name)
        url = hub.repo_url(repo_type, org, name)
        with hub.lock:
            if repo.exists():
                raise _HttpError(409, f"You already created this {repo_type} repo", extra={"url": url})
            repo.mkdir(parents=True)
            try:
                hub.git(repo, "init", "-q", "-b", "main")
                hub.git(repo, "commit", "-q", "--allow-empty", "-m", "initial commit")
            except _HttpError:
                shutil.rmtree(repo, ignore_errors=True)
                raise
        self._send_json(200, {"url": url, "name": f"{org}/{name}"})

    def _repo_action(self, match: re.Match[str], query: dict[str, list[str]]) -> None:
        repo_type = _check_repo_type(match["type"])
        org = _check_name(unquote(match["org"]), "organization")
        name = _check_name(unquote(match["name"]), "name")
        revision = _check_revision(unquote(match["rev"]))
        hub = self.hub
        repo = _repo_dir(hub.mirrors, repo_type, org, name)
        if not (repo / ".git").is_dir():
            raise _HttpError(404, f"Repository {repo_type} {org}/{name} not found", "RepoNotFound")
        action = match["action"]
        if action == "tag":
            self._create_tag(repo, revision)
            return
        if revision != "main" or query.get("create_pr", ["0"])[0] not in {"", "0", "false"}:
            raise _HttpError(
                400,
                f"the local Hub's receiver only writes to branch 'main' (got revision {revision!r}"
                f"{' with create_pr' if 'create_pr' in query else ''}); upload to revision='main' without create_pr",
            )
        if action == "preupload":
            self._preupload()
        else:
            self._commit(repo, hub.repo_url(repo_type, org, name))

    def _preupload(self) -> None:
        files = self._json_body().get("files")
        if not isinstance(files, list) or not all(isinstance(item, dict) for item in files):
            raise _HttpError(400, "preupload expects {'files': [{'path', 'sample', 'size'}, ...]}")
        answer = []
        for item in files:
            _check_file_path(item.get("path"))
            answer.append({"path": item["path"], "uploadMode": "regular", "shouldIgnore": False})
        self._send_json(200, {"files": answer})

    def _parse_commit(self) -> tuple[dict[str, Any], list[tuple[str, str, bytes | None]]]:
        """Parse the NDJSON commit body into its header and (kind, path, content) operations."""
        try:
            lines = [json.loads(line) for line in self._read_body().decode("utf-8").splitlines() if line.strip()]
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _HttpError(400, f"the commit body must be NDJSON: {exc}") from exc
        if not lines or not isinstance(lines[0], dict) or lines[0].get("key") != "header":
            raise _HttpError(400, "the commit body must start with a {'key': 'header', 'value': {...}} line")
        header = lines[0].get("value")
        if not isinstance(header, dict) or not isinstance(header.get("summary"), str) or not header["summary"]:
            raise _HttpError(400, "the commit header needs a non-empty 'summary'")
        operations: list[tuple[str, str, bytes | None]] = []
        for line in lines[1:]:
            value = line.get("value") if isinstance(line, dict) else None
            key = line.get("key") if isinstance(line, dict) else None
            if not isinstance(value, dict):
                raise _HttpError(400, f"each commit line must be {{'key', 'value': {{...}}}}, got {line!r:.200}")
            if key == "file":
                if value.get("encoding", "base64") != "base64" or not isinstance(value.get("content"), str):
                    raise _HttpError(400, "a 'file' operation needs base64 'content' and 'encoding': 'base64'")
                try:
                    content = base64.b64decode(value["content"], validate=True)
                except binascii.Error as exc:
                    raise _HttpError(400, f"'content' of {value.get('path')!r} is not valid base64: {exc}") from exc
                operations.append((key, _check_file_path(value.get("path")), content))
            elif key in {"deletedFile", "deletedFolder"}:
                path = value.get("path")
                if key == "deletedFolder" and isinstance(path, str):
                    path = path.rstrip("/")
                operations.append((key, _check_file_path(path), None))
            elif key == "lfsFile":
                raise _HttpError(
                    400, "the local Hub's receiver does not store LFS/Xet files: preupload answers 'regular' only"
                )
            else:
                raise _HttpError(
                    400, f"unknown commit operation key {key!r}; expected file, deletedFile, deletedFolder"
                )
        return header, operations

    def _commit(self, repo: Path, repo_url: str) -> None:
        header, operations = self._parse_commit()
        hub = self.hub
        root = repo.resolve()
        with hub.lock:
            head = hub.git(repo, "rev-parse", "HEAD")
            parent = header.get("parentCommit")
            if parent is not None and (not isinstance(parent, str) or not parent or not head.startswith(parent)):
                raise _HttpError(412, f"parentCommit {parent!r} is not the head of main ({head}); refresh and retry")
            targets = []
            for _kind, rel, _content in operations:
                target = (repo / rel).resolve()
                if not target.is_relative_to(root) or target == root:
                    raise _HttpError(400, f"path {rel!r} resolves outside the repository")
                targets.append(target)
            try:
                for (kind, rel, content), target in zip(operations, targets, strict=True):
                    if kind == "file":
                        assert content is not None
                        if target.is_dir():
                            raise _HttpError(400, f"cannot write file {rel!r}: a folder with that path exists")
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(content)
                    elif kind == "deletedFile":
                        if not target.is_file():
                            raise _HttpError(404, f"A file with this name doesn't exist: {rel!r}", "EntryNotFound")
                        target.unlink()
                    else:
                        if not target.is_dir():
                            raise _HttpError(404, f"A folder with this name doesn't exist: {rel!r}", "EntryNotFound")
                        shutil.rmtree(target)
                message = ["-m", header["summary"]]
                description = header.get("description")
                if isinstance(description, str) and description.strip():
                    message += ["-m", description]
                hub.git(repo, "add", "-A")
                hub.git(repo, "commit", "-q", "--allow-empty", *message)
                sha = hub.git(repo, "rev-parse", "HEAD")
            except BaseException:
                hub.run_git(repo, "reset", "-q", "--hard", head)
                hub.run_git(repo, "clean", "-q", "-f", "-d")
                raise
        self._send_json(200, {"commitUrl": f"{repo_url}/commit/{sha}", "commitOid": sha, "success": True})

    def _create_tag(self, repo: Path, revision: str) -> None:
        payload = self._json_body()
        tag = payload.get("tag")
        message = payload.get("message")
        hub = self.hub
        if not isinstance(tag, str) or not tag or tag.startswith("-"):
            raise _HttpError(400, f"'tag' must be a non-empty tag name, got {tag!r}")
        if hub.run_git(repo, "check-ref-format", f"refs/tags/{tag}").returncode != 0:
            raise _HttpError(400, f"'tag' {tag!r} is not a valid git tag name")
        if message is not None and not isinstance(message, str):
            raise _HttpError(400, f"'message' must be a string, got {message!r}")
        with hub.lock:
            resolved = hub.run_git(
                repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{revision}^{{commit}}"
            )
            if resolved.returncode != 0:
                raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            sha = resolved.stdout.strip()
            if hub.run_git(repo, "rev-parse", "--verify", "--quiet", f"refs/tags/{tag}").returncode == 0:
                raise _HttpError(409, f"Tag reference {tag} already exists")
            if message:
                hub.git(repo, "tag", "-a", "-m", message, "--end-of-options", tag, sha)
            else:
                hub.git(repo, "tag", "--end-of-options", tag, sha)
        self._send_json(200, {"tag": tag, "commitOid": sha})

    # ---- forwarding to olah --------------------------------------------------------------------------------------

    def _forward(self) -> None:
        """Send the request verbatim to olah and stream the answer back (no redirect following)."""
        try:
            has_body = "Content-Length" in self.headers or "Transfer-Encoding" in self.headers
            body = self._read_body() if has_body else None
        except _HttpError as error:
            self._send_error(error)
            return
        connection = http.client.HTTPConnection(_HOST, self.hub.olah_port, timeout=120)
        try:
            try:
                connection.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for key, value in self.headers.items():
                    if key.lower() not in _HOP_BY_HOP:
                        connection.putheader(key, value)
                if body is not None:
                    connection.putheader("Content-Length", str(len(body)))
                connection.endheaders(body)
                response = connection.getresponse()
            except OSError as exc:
                self._send_error(
                    _HttpError(502, f"the local Hub could not reach olah on port {self.hub.olah_port}: {exc}")
                )
                return
            self.log_request(response.status)
            self.send_response_only(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in _HOP_BY_HOP:
                    self.send_header(key, value)
            no_body = self.command == "HEAD" or response.status in {204, 304} or response.status < 200
            length = response.getheader("Content-Length")
            if no_body:
                if length is not None:
                    self.send_header("Content-Length", length)
                self.end_headers()
            elif length is not None:
                self.send_header("Content-Length", length)
                self.end_headers()
                while chunk := response.read(_CHUNK):
                    self.wfile.write(chunk)
            else:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                while chunk := response.read(_CHUNK):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")
        finally:
            connection.close()
