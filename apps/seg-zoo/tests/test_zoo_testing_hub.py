"""seg_zoo.testing: the local Hub (olah + the project's upload receiver) round-trips with the real client.

huggingface_hub reads its environment at import and CI runs with HF_HUB_OFFLINE=1, so every client call runs in a
subprocess started with ``hub.env()``. Expected bytes are computed here from the files the test wrote, and the git
side is checked with git itself, independently of the client and of olah.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import math
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from seg_zoo.testing import REPO_TYPES, LocalHub, OlahNotFoundError, local_hub


def _start(stack: contextlib.ExitStack, root: Path) -> LocalHub:
    try:
        return stack.enter_context(local_hub(root))
    except OlahNotFoundError as error:
        pytest.skip(f"olah-cli is not installed, so the local Hub cannot start: {error}")


def _run_client(hub: LocalHub, tmp_path: Path, code: str, *args: str) -> Any:
    """Run ``code`` in a fresh interpreter against the hub; return the JSON its last stdout line holds."""
    script = tmp_path / "client.py"
    script.write_text(textwrap.dedent(code), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script), *args],
        env=hub.env(cache=tmp_path / "hf-cache"),
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"client failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def _git(repo: Path, *args: str) -> str:
    git = shutil.which("git")
    assert git is not None
    return subprocess.run([git, "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _safetensors(values: list[float]) -> bytes:
    """A safetensors file written by hand from the format: u64 header size, JSON header, raw little-endian data."""
    data = struct.pack(f"<{len(values)}f", *values)
    header = json.dumps({"weight": {"dtype": "F32", "shape": [len(values)], "data_offsets": [0, len(data)]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data


def _post(hub: LocalHub, path: str, body: bytes | dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Send a raw POST to the receiver (no huggingface_hub involved)."""
    url = urlsplit(hub.endpoint)
    assert url.hostname is not None
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        connection.request("POST", path, body=data, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = json.loads(response.read() or b"{}")
        return response.status, payload, dict(response.getheaders())
    finally:
        connection.close()


def _ndjson(*lines: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def _file_op(path: str, content: bytes) -> dict[str, Any]:
    return {"key": "file", "value": {"path": path, "content": base64.b64encode(content).decode(), "encoding": "base64"}}


# ---- no server needed -------------------------------------------------------------------------------------------


def test_env_points_the_client_at_the_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SEG_MARKER", "kept")
    monkeypatch.setenv("NO_PROXY", "example.org")
    local = LocalHub(endpoint="http://127.0.0.1:9", root=tmp_path)
    env = local.env()
    assert "HF_HUB_OFFLINE" not in env
    assert env["HF_ENDPOINT"] == "http://127.0.0.1:9"
    assert env["HF_HUB_CACHE"] == str(tmp_path / "cache")
    assert env["HF_HUB_DISABLE_TELEMETRY"] == "1"
    assert env["HF_TOKEN"] == "hf_test_token"
    assert env["SEG_MARKER"] == "kept"
    assert env["NO_PROXY"].split(",") == ["example.org", "127.0.0.1", "localhost"]
    assert local.env(cache=tmp_path / "elsewhere")["HF_HUB_CACHE"] == str(tmp_path / "elsewhere")


def test_repo_path_layout_and_validation(tmp_path: Path) -> None:
    local = LocalHub(endpoint="http://127.0.0.1:9", root=tmp_path)
    assert REPO_TYPES == ("model", "dataset")
    assert local.repo_path("org/name") == tmp_path / "mirrors" / "models" / "org" / "name"
    assert local.repo_path("org/my.set_2", "dataset") == tmp_path / "mirrors" / "datasets" / "org" / "my.set_2"
    for bad in ["../x", "org/..", "org/../x", "a/b/c", "/abs", "name", "org/na me", "org/-x", "org/a..b", ""]:
        with pytest.raises(ValueError, match="repo_id"):
            local.repo_path(bad)
    with pytest.raises(ValueError, match="repo_type"):
        local.repo_path("org/name", "space")


def test_missing_olah_raises_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv" / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(OlahNotFoundError, match=r"pip install olah==0\.5\.4") as caught, local_hub(tmp_path / "hub"):
        pass
    assert isinstance(caught.value, RuntimeError)
    assert not (tmp_path / "hub").exists()


@pytest.mark.parametrize("timeout", [0.0, -1.0, math.nan])
def test_startup_timeout_must_be_positive(tmp_path: Path, timeout: float) -> None:
    with pytest.raises(ValueError, match="startup_timeout"), local_hub(tmp_path, startup_timeout=timeout):
        pass


def _fake_olah(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "fake-olah"
    script.write_text(f"#!{sys.executable}\nimport sys, time\n{body}\n", encoding="utf-8")
    script.chmod(0o755)
    return script


def test_startup_failure_reports_the_olah_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_olah(tmp_path, "print('boom from the fake olah', flush=True)\nsys.exit(3)")
    monkeypatch.setattr("seg_zoo.testing._find_olah", lambda: fake)
    with (
        pytest.raises(RuntimeError, match=r"(?s)exited with code 3.*boom from the fake olah"),
        local_hub(tmp_path / "h"),
    ):
        pass


def test_startup_timeout_stops_olah(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_olah(tmp_path, "print('still starting', flush=True)\ntime.sleep(60)")
    monkeypatch.setattr("seg_zoo.testing._find_olah", lambda: fake)
    with (
        pytest.raises(RuntimeError, match=r"(?s)did not accept connections.*still starting"),
        local_hub(tmp_path / "h", startup_timeout=0.5),
    ):
        pass


# ---- against a running hub ----------------------------------------------------------------------------------------

CREATE = """
import json
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

api = HfApi()
first = api.create_repo("testorg/created")
again = api.create_repo("testorg/created", exist_ok=True)
try:
    api.create_repo("testorg/created")
    status = None
except HfHubHTTPError as error:
    status = error.response.status_code
print(json.dumps({"first": str(first), "again": str(again), "repo_id": first.repo_id, "status": status}))
"""


def test_create_repo_and_exist_ok(hub: LocalHub, tmp_path: Path) -> None:
    out = _run_client(hub, tmp_path, CREATE)
    assert out == {
        "first": f"{hub.endpoint}/testorg/created",
        "again": f"{hub.endpoint}/testorg/created",
        "repo_id": "testorg/created",
        "status": 409,
    }
    repo = hub.repo_path("testorg/created")
    assert _git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert _git(repo, "rev-list", "--count", "HEAD") == "1"
    assert _git(repo, "ls-tree", "-r", "HEAD") == ""


UPLOAD = """
import hashlib, json, os, sys
from huggingface_hub import HfApi, hf_hub_download, snapshot_download

folder, repo_type, repo_id = sys.argv[1], sys.argv[2], sys.argv[3]
api = HfApi()
url = api.create_repo(repo_id, repo_type=repo_type)
info = api.upload_folder(repo_id=repo_id, repo_type=repo_type, folder_path=folder, commit_message="add files")
digest = lambda path: hashlib.sha256(open(path, "rb").read()).hexdigest()
names = sorted(
    os.path.relpath(os.path.join(top, name), folder).replace(os.sep, "/")
    for top, _, files in os.walk(folder) for name in files
)
downloads = {name: digest(hf_hub_download(repo_id, name, repo_type=repo_type)) for name in names}
snapshot = snapshot_download(repo_id, repo_type=repo_type)
snapshot_files = {
    os.path.relpath(os.path.join(top, name), snapshot).replace(os.sep, "/"): digest(os.path.join(top, name))
    for top, _, files in os.walk(snapshot) for name in files
}
print(json.dumps({"url": str(url), "oid": info.oid, "downloads": downloads, "snapshot": snapshot_files}))
"""


def test_upload_folder_then_downloads_return_the_same_bytes(hub: LocalHub, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    (folder / "nested").mkdir(parents=True)
    files = {
        "model.safetensors": _safetensors([0.5 * i - 3.0 for i in range(48)]),
        "config.json": json.dumps({"arch": "tiny", "width": 8, "classes": ["cow", "boat"]}, indent=2).encode(),
        "README.md": b"---\nlicense: apache-2.0\nlibrary_name: seg\ntags:\n- segmentation\n---\n\n# Tiny model\n",
        "nested/notes.txt": b"n" * 300,
    }
    assert len(files["model.safetensors"]) >= 150  # olah fails on binary files of 121-149 bytes
    for name, data in files.items():
        (folder / name).write_bytes(data)
    expected = {name: _sha256(data) for name, data in files.items()}

    out = _run_client(hub, tmp_path, UPLOAD, str(folder), "model", "testorg/tiny")

    assert out["url"] == f"{hub.endpoint}/testorg/tiny"
    assert out["downloads"] == expected
    assert out["snapshot"] == expected
    repo = hub.repo_path("testorg/tiny")
    assert _git(repo, "rev-parse", "HEAD") == out["oid"]
    assert _git(repo, "log", "-1", "--format=%s") == "add files"
    assert sorted(_git(repo, "ls-tree", "-r", "--name-only", "HEAD").splitlines()) == sorted(files)
    shown = subprocess.run(["git", "-C", str(repo), "show", "HEAD:model.safetensors"], capture_output=True, check=True)
    assert shown.stdout == files["model.safetensors"]


def test_dataset_round_trip(hub: LocalHub, tmp_path: Path) -> None:
    folder = tmp_path / "dataset"
    (folder / "data").mkdir(parents=True)
    rows = "\n".join(f"{i},{i * i},{'cow' if i % 2 else 'boat'}" for i in range(40))
    files = {"data/train.csv": f"index,square,label\n{rows}\n".encode(), "README.md": b"---\nlicense: mit\n---\n# d\n"}
    for name, data in files.items():
        (folder / name).write_bytes(data)

    out = _run_client(hub, tmp_path, UPLOAD, str(folder), "dataset", "testorg/table")

    assert out["url"] == f"{hub.endpoint}/datasets/testorg/table"
    expected = {name: _sha256(data) for name, data in files.items()}
    assert out["downloads"] == expected
    assert out["snapshot"] == expected
    assert (hub.repo_path("testorg/table", "dataset") / "data" / "train.csv").read_bytes() == files["data/train.csv"]
    assert not hub.repo_path("testorg/table").exists()


TAGS = """
import json, sys
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RevisionNotFoundError

old_text, new_text = sys.argv[1], sys.argv[2]
repo = "testorg/tagged"
api = HfApi()
api.create_repo(repo)
old = api.upload_file(path_or_fileobj=old_text.encode(), path_in_repo="config.json", repo_id=repo).oid
api.create_tag(repo, tag="release", tag_message="first release")  # at main, before main moves on
new = api.upload_file(path_or_fileobj=new_text.encode(), path_in_repo="config.json", repo_id=repo).oid
api.create_tag(repo, tag="v1", revision=old)  # at an older commit than main
try:
    api.create_tag(repo, tag="v1")
    duplicate = None
except HfHubHTTPError as error:
    duplicate = error.response.status_code
api.create_tag(repo, tag="v1", exist_ok=True)
try:
    api.create_tag(repo, tag="v9", revision="no-such-branch")
    missing = None
except RevisionNotFoundError:
    missing = "RevisionNotFoundError"
read = lambda rev: open(hf_hub_download(repo, "config.json", revision=rev), encoding="utf-8").read()
tags = sorted([tag.name, tag.target_commit] for tag in api.list_repo_refs(repo).tags)
print(json.dumps({
    "old": old, "new": new, "duplicate": duplicate, "missing": missing, "tags": tags,
    "v1": read("v1"), "release": read("release"), "sha": read(old), "main": read("main"),
}))
"""


def test_create_tag_keeps_the_old_content_reachable(hub: LocalHub, tmp_path: Path) -> None:
    old_text = json.dumps({"version": 1, "pad": "a" * 200})
    new_text = json.dumps({"version": 2, "pad": "b" * 200})

    out = _run_client(hub, tmp_path, TAGS, old_text, new_text)

    assert out["old"] != out["new"]
    assert (out["v1"], out["release"], out["sha"]) == (old_text, old_text, old_text)
    assert out["main"] == new_text
    assert out["duplicate"] == 409
    assert out["missing"] == "RevisionNotFoundError"
    assert out["tags"] == [["release", out["old"]], ["v1", out["old"]]]
    repo = hub.repo_path("testorg/tagged")
    assert _git(repo, "rev-parse", "v1^{commit}") == out["old"]
    assert _git(repo, "cat-file", "-t", "release") == "tag"  # annotated: the message was kept
    assert "first release" in _git(repo, "cat-file", "-p", "release")
    assert _git(repo, "rev-parse", "main") == out["new"]


def test_receiver_refuses_path_traversal_and_other_branches(hub: LocalHub) -> None:
    for body in [
        {"organization": "testorg", "name": ".."},
        {"organization": "..", "name": "escape"},
        {"organization": "testorg/../../escape", "name": "x"},
        {"organization": "/tmp", "name": "escape"},
        {"name": "no-namespace"},
        {"organization": "testorg", "name": "space", "type": "space"},
    ]:
        status, payload, _ = _post(hub, "/api/repos/create", body)
        assert status == 400, (body, payload)
        assert payload["error"]

    status, payload, _ = _post(hub, "/api/repos/create", {"organization": "testorg", "name": "raw"})
    assert (status, payload["url"]) == (200, f"{hub.endpoint}/testorg/raw")
    repo = hub.repo_path("testorg/raw")
    header = {"key": "header", "value": {"summary": "raw commit", "description": ""}}

    for path in ["../../escape.txt", "/escape.txt", ".git/config", "a/../../escape.txt", "./escape.txt"]:
        status, payload, _ = _post(hub, "/api/models/testorg/raw/commit/main", _ndjson(header, _file_op(path, b"x")))
        assert status == 400, (path, payload)
        status, payload, _ = _post(hub, "/api/models/testorg/raw/preupload/main", {"files": [{"path": path}]})
        assert status == 400, (path, payload)
    for url in ["/api/models/../raw/commit/main", "/api/models/testorg/..%2F..%2Fescape/commit/main"]:
        status, payload, _ = _post(hub, url, _ndjson(header, _file_op("ok.txt", b"x")))
        assert status == 400, (url, payload)

    status, payload, _ = _post(hub, "/api/models/testorg/raw/commit/dev", _ndjson(header, _file_op("ok.txt", b"x")))
    assert status == 400
    assert "main" in payload["error"]
    status, _, headers = _post(hub, "/api/models/testorg/raw/tag/nope", {"tag": "v1"})
    assert (status, headers.get("X-Error-Code")) == (404, "RevisionNotFound")
    status, _, headers = _post(hub, "/api/models/testorg/missing/preupload/main", {"files": []})
    assert (status, headers.get("X-Error-Code")) == (404, "RepoNotFound")

    assert _git(repo, "rev-list", "--count", "HEAD") == "1"  # nothing was committed
    assert _git(repo, "status", "--porcelain") == ""
    assert not list(hub.root.parent.rglob("escape*"))

    status, payload, _ = _post(hub, "/api/models/testorg/raw/commit/main", _ndjson(header, _file_op("ok.txt", b"ok")))
    assert status == 200
    assert payload["commitOid"] == _git(repo, "rev-parse", "HEAD")
    assert (repo / "ok.txt").read_bytes() == b"ok"
    delete = {"key": "deletedFile", "value": {"path": "ok.txt"}}
    status, payload, _ = _post(hub, "/api/models/testorg/raw/commit/main", _ndjson(header, delete))
    assert status == 200
    assert not (repo / "ok.txt").exists()
    assert _git(repo, "ls-tree", "-r", "--name-only", "HEAD") == ""
    status, _, headers = _post(hub, "/api/models/testorg/raw/commit/main", _ndjson(header, delete))
    assert (status, headers.get("X-Error-Code")) == (404, "EntryNotFound")


def test_ports_are_closed_after_the_hub_stops(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        other = _start(stack, tmp_path / "hub")
        receiver_port = urlsplit(other.endpoint).port
        olah_port = tomllib.loads((other.root / "olah.toml").read_text(encoding="utf-8"))["basic"]["port"]
        assert isinstance(receiver_port, int)
        assert isinstance(olah_port, int)
        for port in (receiver_port, olah_port):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    for port in (receiver_port, olah_port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
