"""Pack from a hub id: the real huggingface_hub client against a local HTTP server
that replays hub responses (pointed at through HF_ENDPOINT only), serving the
tiny demo model plus a .bin duplicate that must not be downloaded."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from conftest import EZRUNNER, local_http_server
from ezrunner.core.bundle import format as B
from support_pack import pack_home, read_bundle_manifest, read_sidecar

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "ezr/tiny-llama"


class _Hub(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    log: list[tuple[str, str]] = []

    def log_message(self, *args):  # quiet
        pass

    def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None, head: bool = False) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, code: int, data, headers=None, head=False) -> None:
        self._send(code, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})}, head)

    def _entry(self, name: str) -> dict:
        data = self.files[name]
        sha = hashlib.sha256(data).hexdigest()
        lfs = name.endswith((".safetensors", ".bin"))
        return {"name": name, "size": len(data), "sha": sha, "lfs": lfs,
                "blob": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()}

    def _route(self, head: bool) -> None:
        u = urlparse(self.path)
        path = unquote(u.path)
        self.log.append((self.command, path))
        if path.startswith("/api/models/"):
            rest = path[len("/api/models/"):]
            repo = "/".join(rest.split("/")[:2])
            if repo == "ezr/gated":
                return self._json(401, {"error": "Access to model ezr/gated is restricted."},
                                  {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to model ezr/gated is restricted."}, head)
            if repo != REPO:
                return self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}, head)
            tail = rest.split("/")[2:]
            if not tail or tail[0] == "revision":
                siblings = []
                for name in sorted(self.files):
                    e = self._entry(name)
                    s = {"rfilename": name, "size": e["size"], "blobId": e["blob"]}
                    if e["lfs"]:
                        s["lfs"] = {"sha256": e["sha"], "size": e["size"], "pointerSize": 134}
                    siblings.append(s)
                return self._json(200, {"_id": "x", "id": REPO, "modelId": REPO, "sha": COMMIT, "private": False,
                                        "gated": False, "disabled": False, "tags": [], "siblings": siblings,
                                        "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z"}, head=head)
            if tail[0] == "tree":
                out = []
                for name in sorted(self.files):
                    e = self._entry(name)
                    item = {"type": "file", "oid": e["blob"], "size": e["size"], "path": name}
                    if e["lfs"]:
                        item["lfs"] = {"oid": e["sha"], "size": e["size"], "pointerSize": 134}
                    out.append(item)
                return self._json(200, out, head=head)
            return self._json(404, {"error": "not found"}, {"X-Error-Code": "EntryNotFound"}, head)
        parts = path.strip("/").split("/")
        if len(parts) >= 5 and parts[2] == "resolve":
            repo = "/".join(parts[:2])
            name = "/".join(parts[4:])
            if repo != REPO or name not in self.files:
                return self._json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"}, head)
            e = self._entry(name)
            etag = e["sha"] if e["lfs"] else e["blob"]
            headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"', "Content-Type": "application/octet-stream",
                       "Accept-Ranges": "bytes"}
            if e["lfs"]:
                headers["X-Linked-Etag"] = f'"{etag}"'
                headers["X-Linked-Size"] = str(e["size"])
            return self._send(200, self.files[name], headers, head)
        return self._json(404, {"error": f"no route for {path}"}, head=head)

    def do_GET(self):  # noqa: N802
        self._route(False)

    def do_HEAD(self):  # noqa: N802
        self._route(True)


@pytest.fixture
def fake_hub(tiny_model_dir):
    _Hub.files = {p.relative_to(tiny_model_dir).as_posix(): p.read_bytes() for p in tiny_model_dir.rglob("*") if p.is_file()}
    _Hub.files["pytorch_model.bin"] = b"\0" * 4096  # a duplicate that must be skipped
    _Hub.log = []
    with local_http_server(_Hub) as url:
        yield url


def _env(tmp_path: Path, endpoint: str, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_XET="1", EZRUNNER_HOME=str(home), **extra)
    return env


def _error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("ezrunner: error: ")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_pack_from_the_hub_pins_the_commit_and_skips_duplicates(packed_bundle, fake_hub, tmp_path, tmp_path_factory, base_image):
    out = tmp_path / "hub.tar"
    proc = subprocess.run([EZRUNNER, "pack", REPO, "-o", str(out), "--cpu-only", "--engine", "transformers",
                           "--base-image", base_image, "--revision", "main"],
                          capture_output=True, text=True, timeout=900, env=_env(tmp_path, fake_hub, pack_home(tmp_path_factory)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = read_bundle_manifest(out)
    assert m.model == REPO
    assert m.revision == COMMIT
    assert "pytorch_model.bin" not in m.files
    assert set(m.files) == set(packed_bundle.manifest.files)
    assert m.files == packed_bundle.manifest.files  # same bytes as the local folder
    assert not any(p.endswith("pytorch_model.bin") for _c, p in _Hub.log if "/resolve/" in p)
    # downloads were pinned to the commit, not to "main"
    assert all(f"/resolve/{COMMIT}/" in p for _c, p in _Hub.log if "/resolve/" in p)
    digest, _ = read_sidecar(B.sidecar_path(out))
    assert digest == hashlib.sha256(out.read_bytes()).hexdigest()


def test_missing_model_is_one_line(fake_hub, tmp_path, docker_engine):
    proc = subprocess.run([EZRUNNER, "pack", "ezr/nope", "-o", str(tmp_path / "b.tar"), "--cpu-only"],
                          capture_output=True, text=True, timeout=300, env=_env(tmp_path, fake_hub, tmp_path / "home"))
    assert proc.returncode == 1
    assert "not found on the hub" in _error_line(proc.stderr)
    assert not (tmp_path / "b.tar").exists()


def test_gated_model_without_token_is_one_line(fake_hub, tmp_path, docker_engine):
    proc = subprocess.run([EZRUNNER, "pack", "ezr/gated", "-o", str(tmp_path / "b.tar"), "--cpu-only"],
                          capture_output=True, text=True, timeout=300, env=_env(tmp_path, fake_hub, tmp_path / "home"))
    assert proc.returncode == 1
    line = _error_line(proc.stderr)
    assert "gated" in line and "no token" in line
    assert "HF_TOKEN" in proc.stderr


def test_unreachable_hub_is_one_line(tmp_path, docker_engine):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run([EZRUNNER, "pack", "ezr/tiny-llama", "-o", str(tmp_path / "b.tar"), "--cpu-only"],
                          capture_output=True, text=True, timeout=300,
                          env=_env(tmp_path, f"http://127.0.0.1:{port}", tmp_path / "home"))
    assert proc.returncode == 1
    line = _error_line(proc.stderr)
    assert "ezr/tiny-llama" in line
    assert not (tmp_path / "b.tar").exists()
