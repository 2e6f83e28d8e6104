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
    proc = subprocess.run([EZRUNNER, "pack", REPO, "-o", str(out), "--cpu-only", "--ram", "16", "--engine", "transformers",
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
    proc = subprocess.run([EZRUNNER, "pack", "ezr/nope", "-o", str(tmp_path / "b.tar"), "--cpu-only", "--ram", "16"],
                          capture_output=True, text=True, timeout=300, env=_env(tmp_path, fake_hub, tmp_path / "home"))
    assert proc.returncode == 1
    assert "not found on the hub" in _error_line(proc.stderr)
    assert not (tmp_path / "b.tar").exists()


def test_gated_model_without_token_is_one_line(fake_hub, tmp_path, docker_engine):
    proc = subprocess.run([EZRUNNER, "pack", "ezr/gated", "-o", str(tmp_path / "b.tar"), "--cpu-only", "--ram", "16"],
                          capture_output=True, text=True, timeout=300, env=_env(tmp_path, fake_hub, tmp_path / "home"))
    assert proc.returncode == 1
    line = _error_line(proc.stderr)
    assert "gated" in line and "no token" in line
    assert "HF_TOKEN" in proc.stderr


def test_unreachable_hub_is_one_line(tmp_path, docker_engine):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run([EZRUNNER, "pack", "ezr/tiny-llama", "-o", str(tmp_path / "b.tar"), "--cpu-only", "--ram", "16"],
                          capture_output=True, text=True, timeout=300,
                          env=_env(tmp_path, f"http://127.0.0.1:{port}", tmp_path / "home"))
    assert proc.returncode == 1
    line = _error_line(proc.stderr)
    assert "ezr/tiny-llama" in line
    assert not (tmp_path / "b.tar").exists()


# ---------------------------------------------------------------- ModelScope
# The ModelScope download API as modelscope_hub (>= 1.38's client, what
# modelscope.snapshot_download wraps) calls it: the file listing
# GET /api/v1/models/{owner}/{name}/repo/files?Revision=&Recursive=True, answered
# {"Code": 200, "Success": true, "Data": {"Files": [{"Path", "Name", "Type", "Size",
# "Sha256", "Revision"}]}} (modelscope_hub/_legacy_api.py unwraps Data.Files;
# _download.py reads Path/Type/Size/Sha256 and verifies the sha256), then one
# GET /api/v1/models/{owner}/{name}/repo?Revision=&FilePath= per file, the raw bytes.
# Anything else (its acceleration probe /api/v1/repos/internalAccelerationInfo)
# answers 404, as the library tolerates. See tests/fixtures/hub/README.md.
MS_REVISION = "c0ffee0000000000000000000000000000000000"


class _MsHub(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    log: list[str] = []

    def log_message(self, *args):  # quiet
        pass

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        from urllib.parse import parse_qs

        u = urlparse(self.path)
        query = parse_qs(u.query)
        parts = [unquote(p) for p in u.path.strip("/").split("/")]
        self.log.append(self.path)
        if parts[:3] == ["api", "v1", "models"] and "/".join(parts[3:5]) == REPO:
            if parts[5:] == ["repo", "files"]:
                listing = [{"Name": n.rsplit("/", 1)[-1], "Path": n, "Type": "blob", "Size": len(b),
                            "Sha256": hashlib.sha256(b).hexdigest(), "Revision": MS_REVISION}
                           for n, b in sorted(self.files.items())]
                return self._send(200, json.dumps({"Code": 200, "Success": True, "Data": {"Files": listing}}).encode())
            name = query.get("FilePath", [""])[0]
            if parts[5:] == ["repo"] and name in self.files:
                return self._send(200, self.files[name], "application/octet-stream")
        self._send(404, json.dumps({"Code": 10010205001, "Message": "model not found", "Success": False}).encode())

    do_HEAD = do_GET


@pytest.fixture
def ms_hub(tiny_model_dir):
    _MsHub.files = {p.relative_to(tiny_model_dir).as_posix(): p.read_bytes() for p in tiny_model_dir.rglob("*") if p.is_file()}
    _MsHub.files["pytorch_model.bin"] = b"\0" * 4096  # a duplicate that must be skipped
    _MsHub.log = []
    with local_http_server(_MsHub) as url:
        yield url


@pytest.fixture
def private_homes(monkeypatch, tmp_path):
    monkeypatch.setenv("EZRUNNER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def _download_phase(model, tmp_path, **kwargs):
    """Run iter_pack up to the end of its download phase (no Docker needed)."""
    from ezrunner.core import events as ev
    from ezrunner.core.pack import PackOptions, iter_pack

    gen = iter_pack(PackOptions(model, tmp_path / "b.tar", client=object(), **kwargs))
    try:
        for event in gen:
            if isinstance(event, ev.PhaseFinished) and event.phase == "download":
                return Path(event.detail)
    finally:
        gen.close()
    raise AssertionError("no download phase")


def test_modelscope_pick_is_downloaded_from_modelscope(ms_hub, private_homes, tiny_model_dir, monkeypatch):
    # The TUI hands a ModelScope pick to pack as "modelscope:OWNER/NAME"; it used to
    # fail with "not a valid model id" (issue 12).
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", ms_hub)
    folder = _download_phase(f"modelscope:{REPO}", private_homes)
    assert (folder / "model.safetensors").read_bytes() == (tiny_model_dir / "model.safetensors").read_bytes()
    assert not (folder / "pytorch_model.bin").exists()
    assert any(p.startswith(f"/api/v1/models/{REPO}/repo/files") for p in _MsHub.log)
    assert not any("FilePath=pytorch_model.bin" in p for p in _MsHub.log)


def _fetch(ref, cfg):
    """``hubs.fetch`` run to its end: (events, FetchedModel)."""
    from ezrunner.core import hubs

    events = []
    gen = hubs.fetch(ref, cfg, check=lambda: None)
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return events, stop.value


def test_fetch_a_modelscope_ref_through_the_hub_config(ms_hub, private_homes, tiny_model_dir, monkeypatch):
    # The endpoint comes from the HubConfig (the TUI's hub seam), not the environment.
    from ezrunner.core import events as ev
    from ezrunner.core.hubs import HubConfig, ModelRef

    monkeypatch.setenv("MODELSCOPE_ENDPOINT", "http://127.0.0.1:9")
    events, fetched = _fetch(ModelRef("modelscope", REPO), HubConfig(ms_endpoint=ms_hub))
    assert fetched.ref == ModelRef("modelscope", REPO) and fetched.label_id == REPO
    assert fetched.folder.is_relative_to(private_homes / "home" / "models" / "modelscope")
    assert (fetched.folder / "config.json").read_bytes() == (tiny_model_dir / "config.json").read_bytes()
    assert isinstance(events[0], ev.PhaseStarted) and "ModelScope" in events[0].label
    assert any(isinstance(e, ev.BytesProgress) and e.item == "done" for e in events)


def test_fetch_a_missing_modelscope_model_is_one_line(ms_hub, private_homes):
    from ezrunner.core.errors import EzError
    from ezrunner.core.hubs import HubConfig, ModelRef

    with pytest.raises(EzError) as e:
        _fetch(ModelRef("modelscope", "ezr/nope"), HubConfig(ms_endpoint=ms_hub))
    assert "ezr/nope" in e.value.message and "ModelScope" in e.value.message and "\n" not in e.value.message


class _FlakyHub(_Hub):
    """Breaks the first download of model.safetensors halfway through."""

    broken: set[str] = set()

    def _send(self, code, body=b"", headers=None, head=False):
        name = unquote(urlparse(self.path).path).rsplit("/", 1)[-1]
        if head or name != "model.safetensors" or name in self.broken:
            return super()._send(code, body, headers, head)
        self.broken.add(name)
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True


def test_hf_download_recovers_from_a_broken_transfer(tiny_model_dir, private_homes, monkeypatch):
    # The connection drops halfway through the weights; the client asks again (with a
    # Range header once it has bytes to keep: here the whole file fits in one of its
    # 10 MB chunks, so it starts over) and the file ends complete, pinned to the commit.
    from ezrunner.core.hubs import HubConfig, ModelRef

    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    _FlakyHub.files = {p.relative_to(tiny_model_dir).as_posix(): p.read_bytes() for p in tiny_model_dir.rglob("*") if p.is_file()}
    _FlakyHub.log, _FlakyHub.broken = [], set()
    with local_http_server(_FlakyHub) as url:
        _events, fetched = _fetch(ModelRef("hf", REPO), HubConfig(hf_endpoint=url))
    assert fetched.ref == ModelRef("hf", REPO, COMMIT)
    assert (fetched.folder / "model.safetensors").read_bytes() == (tiny_model_dir / "model.safetensors").read_bytes()
    gets = [p for c, p in _FlakyHub.log if c == "GET" and p.endswith("/model.safetensors")]
    assert len(gets) == 2 and all(f"/resolve/{COMMIT}/" in p for p in gets)
