"""Fixtures and helpers for the run side: contract-conforming synthetic
bundles (no Docker needed) and, for Docker tests, a small labelled image saved as
a real bundle. Registered in conftest.py ``pytest_plugins``."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

# Unique per test session: several test runs may share one Docker engine (a
# developer's run beside CI's), so names, tags and networks never collide.
TOKEN = f"{os.getpid():x}{os.urandom(2).hex()}"


def uniq(name: str) -> str:
    return f"{name}-{TOKEN}"


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tf.addfile(info, io.BytesIO(data))


def write_sidecar_for(bundle: Path, parts: list[Path] | None = None) -> str:
    h = hashlib.sha256()
    for p in parts or [bundle]:
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    digest = h.hexdigest()
    (bundle.parent / (bundle.name + ".sha256")).write_text(f"{digest}  {bundle.name}\n")
    return digest


def model_layer_tar(payload: bytes, name: str = "tiny", extra: list[tarfile.TarInfo] | None = None) -> bytes:
    """A model layer as pack writes it: /models/NAME/ holding one weights file
    (plus ``extra`` members, e.g. hostile ones)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for folder in ("models", f"models/{name}"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o555
            tf.addfile(info)
        _add(tf, f"models/{name}/weights.bin", payload)
        for info in extra or []:
            tf.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    return buf.getvalue()


def synthetic_labels(name: str = "tiny", model: str = "demo/tiny") -> dict[str, str]:
    return mini_labels(name=name) | {"ezrunner.model": model}


def make_synthetic_bundle(dest: Path, *, layer_bytes: int = 300_000, manifest_overrides: dict | None = None,
                          first_member: str = "ezrunner-bundle.json", seed: int = 1,
                          labels: dict[str, str] | None = None, layer: bytes | None = None,
                          docker_manifest: list | None = None, extra_members: list[tuple[tarfile.TarInfo, bytes]] = ()) -> Path:
    """A tar that follows contract C (docker-archive layout, ezrunner-bundle.json
    first) with one model layer (/models/tiny/weights.bin of ``layer_bytes``
    random bytes); plus its sidecar. Its image has no base layers, so Docker
    could load it but not run it, which the structure checks do not need."""
    rnd = hashlib.sha256(str(seed).encode()).digest()
    payload = (rnd * (layer_bytes // len(rnd) + 1))[:layer_bytes]
    payload = bytes(b ^ (i * 7 & 0xFF) for i, b in enumerate(payload[:4096])) + payload[4096:]
    layer = model_layer_tar(payload) if layer is None else layer
    labels = synthetic_labels() if labels is None else labels
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": labels},
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}}).encode()
    config_hex = hashlib.sha256(config).hexdigest()
    manifest = {
        "format": "ezrunner-bundle/1", "model": "demo/tiny", "revision": None, "served_model_name": "tiny",
        "files": {}, "model_bytes": layer_bytes, "engine": "transformers", "device": "cpu", "plan": {},
        "image_id": "sha256:" + config_hex, "image_tag": "ezrunner/tiny:test", "ezrunner_version": "0",
        "created": "2026-01-01T00:00:00Z",
    }
    manifest.update(manifest_overrides or {})
    layer_dir = hashlib.sha256(b"layer" + layer[:64]).hexdigest()
    if docker_manifest is None:
        docker_manifest = [{"Config": f"{config_hex}.json", "RepoTags": [manifest["image_tag"]],
                            "Layers": [f"{layer_dir}/layer.tar"]}]
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tf:
        if first_member == "ezrunner-bundle.json":
            _add(tf, "ezrunner-bundle.json", json.dumps(manifest).encode())
        _add(tf, f"{layer_dir}/layer.tar", layer)
        for info, data in extra_members:
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
        _add(tf, f"{config_hex}.json", config)
        _add(tf, "manifest.json", json.dumps(docker_manifest).encode())
        if first_member != "ezrunner-bundle.json":
            _add(tf, "ezrunner-bundle.json", json.dumps(manifest).encode())
    write_sidecar_for(dest)
    return dest


def split_bundle(bundle: Path, part_size: int) -> list[Path]:
    """Split like `ezrunner pack --split-size`: BUNDLE.tar.part-001.. + the same sidecar; removes BUNDLE.tar."""
    parts = []
    with open(bundle, "rb") as fh:
        i = 1
        while True:
            data = fh.read(part_size)
            if not data:
                break
            p = bundle.with_name(f"{bundle.name}.part-{i:03d}")
            p.write_bytes(data)
            parts.append(p)
            i += 1
    os.unlink(bundle)
    return parts


@pytest.fixture
def synthetic_bundle(tmp_path) -> Path:
    return make_synthetic_bundle(tmp_path / "tiny.tar")


# --------------------------------------------------------------------------- docker side

MINI_SERVER = r'''
import http.server, json, os, sys, time
START = time.time()
DELAY = float(os.environ.get("MINI_READY_DELAY", "1.5"))
MODE = os.environ.get("MINI_MODE", "ok")
print("mini server starting", flush=True)
if MODE == "crash":
    print("loading weights from /models/mini/model.safetensors", flush=True)
    print("FileNotFoundError: [Errno 2] No such file or directory: '/models/mini/model.safetensors'", flush=True)
    sys.exit(3)
if MODE == "oom":
    print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", flush=True)
    sys.exit(1)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/ready":
            ok = time.time() - START > DELAY
            self.send_response(200 if ok else 503); self.end_headers(); self.wfile.write(b"ok" if ok else b"warming")
        else:
            self.send_response(404); self.end_headers()
    def log_message(self, fmt, *a):
        print("request " + fmt % a, flush=True)
print("listening on 0.0.0.0:8000", flush=True)
http.server.ThreadingHTTPServer(("0.0.0.0", 8000), H).serve_forever()
'''


def mini_labels(mode: str = "ok", name: str = "mini") -> dict[str, str]:
    return {
        "ezrunner.model": f"test/{name}", "ezrunner.revision": "", "ezrunner.served-model-name": name,
        "ezrunner.engine": "transformers", "ezrunner.device": "cpu", "ezrunner.needs-gpu": "false",
        "ezrunner.port": "8000", "ezrunner.ready-path": "/ready",
        "ezrunner.serve-args": json.dumps(["python3", "/opt/mini/server.py"]),
        "ezrunner.api-key-env": "EZRUNNER_API_KEY", "ezrunner.plan": "{}", "ezrunner.model-bytes": "1000",
        "ezrunner.version": "0",
    }


def build_mini_image(client, base_image: str, tag: str, *, mode: str = "ok", name: str = "mini",
                     labels: dict[str, str] | None = None) -> str:
    """A small labelled image whose CMD runs a tiny HTTP server answering /ready
    (mode ok), or crashes at start like a model with a missing weight file (crash)."""
    import tempfile

    with tempfile.TemporaryDirectory() as ctx:
        Path(ctx, "server.py").write_text(MINI_SERVER)
        Path(ctx, "weights.txt").write_text("not really weights\n")
        lab = labels or mini_labels(mode, name)
        label_lines = " \\\n  ".join(f"{k}={json.dumps(v)}" for k, v in lab.items())
        Path(ctx, "Dockerfile").write_text(
            f"FROM {base_image}\nCOPY server.py /opt/mini/server.py\nCOPY weights.txt /models/{name}/weights.txt\n"
            f"ENV MINI_MODE={mode}\n"
            f"USER 10001\nEXPOSE 8000\nLABEL {label_lines}\nLABEL ezrunner-test.session={TOKEN}\n"
            f"CMD [\"python3\", \"/opt/mini/server.py\"]\n"
        )
        image, _ = client.images.build(path=ctx, tag=tag, rm=True, forcerm=True)
    return image.id


def bundle_from_image(client, tag: str, dest: Path, *, served_model_name: str = "mini") -> Path:
    """docker save TAG, then rewrite it as pack writes bundles (contract C):
    ezrunner-bundle.json first, then only manifest.json, the config and the layer
    tars (docker save's VERSION, json and repositories members are dropped; a
    layer saved as a link becomes a file); plus the sidecar."""
    image = client.images.get(tag)
    raw = dest.with_suffix(".docker.tar")
    with open(raw, "wb") as fh:
        for chunk in image.save(named=tag):
            fh.write(chunk)
    manifest = {
        "format": "ezrunner-bundle/1", "model": f"test/{served_model_name}", "revision": None,
        "served_model_name": served_model_name, "files": {}, "model_bytes": 1000, "engine": "transformers",
        "device": "cpu", "plan": {}, "image_id": image.id, "image_tag": tag, "ezrunner_version": "0",
        "created": "2026-01-01T00:00:00Z",
    }
    with tarfile.open(raw, "r:") as src, tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as out:
        _add(out, "ezrunner-bundle.json", json.dumps(manifest).encode())
        entry = json.loads(src.extractfile("manifest.json").read())[0]
        keep = {"manifest.json", entry["Config"], *entry["Layers"]}
        for m in src.getmembers():
            if m.isdir() and any(k.startswith(m.name + "/") for k in keep):
                out.addfile(m)
            elif m.name in keep:
                _add(out, m.name, src.extractfile(m).read())
    raw.unlink()
    write_sidecar_for(dest)
    return dest


def remove_containers(client, *names: str) -> None:
    from docker.errors import NotFound

    for n in names:
        try:
            client.containers.get(n).remove(force=True)
        except NotFound:
            pass


def remove_image(client, ref: str) -> bool:
    """Remove an image; False when it is in use (by another test run's container
    or child image on a shared engine) and stays."""
    from docker.errors import APIError, ImageNotFound

    try:
        client.images.remove(ref, force=True)
    except ImageNotFound:
        return True
    except APIError as exc:
        if exc.status_code == 409:
            return False
        raise
    return True


# Bundle images are tagged under ezrunner/ (the reader refuses any other tag).
MINI_TAG = f"ezrunner/test-run-mini-{TOKEN}:1"
MINI_CRASH_TAG = f"ezrunner/test-run-mini-crash-{TOKEN}:1"


@pytest.fixture(scope="session")
def mini_bundle(docker_engine, base_image, tmp_path_factory) -> Path:
    """A real docker-loadable bundle of a tiny labelled image (about the size of the
    test base image). The image is removed after building, so tests load it."""
    build_mini_image(docker_engine, base_image, MINI_TAG)
    path = bundle_from_image(docker_engine, MINI_TAG, tmp_path_factory.mktemp("run-bundles") / "mini.tar")
    remove_image(docker_engine, MINI_TAG)
    yield path
    remove_image(docker_engine, MINI_TAG)


@pytest.fixture(scope="session")
def mini_crash_bundle(docker_engine, base_image, tmp_path_factory) -> Path:
    build_mini_image(docker_engine, base_image, MINI_CRASH_TAG, mode="crash", name="mini-crash")
    path = bundle_from_image(docker_engine, MINI_CRASH_TAG, tmp_path_factory.mktemp("run-bundles") / "mini-crash.tar",
                             served_model_name="mini-crash")
    remove_image(docker_engine, MINI_CRASH_TAG)
    yield path
    remove_image(docker_engine, MINI_CRASH_TAG)


# --------------------------------------------------------------------------- the real engine


def _bundle_path_of(value) -> Path:
    """``packed_bundle`` may be a path, a PackResult or its dict: the joined BUNDLE.tar path."""
    if isinstance(value, (str, os.PathLike)):
        return Path(value)
    if isinstance(value, dict):
        return Path(value["bundle"])
    for attr in ("bundle", "path"):
        if hasattr(value, attr):
            return _bundle_path_of(getattr(value, attr))
    raise TypeError(f"cannot find the bundle path in {value!r}")


@pytest.fixture(scope="session")
def engine_bundle(request, docker_engine, base_image, tiny_model_dir, tmp_path_factory) -> Path:
    """A real bundle (the embedded Transformers server, CPU, the tiny demo model):
    the pack side's session fixture ``packed_bundle`` when it exists, otherwise
    packed here once with ``ezrunner.core.pack.iter_pack``. Read-only for tests:
    copy before damaging it."""
    try:
        value = request.getfixturevalue("packed_bundle")
    except pytest.FixtureLookupError:
        value = None
    if value is not None:
        path = _bundle_path_of(value)
        if path.exists():
            return path
    from ezrunner.core.events import PhaseFinished
    from ezrunner.core.pack import PackOptions, iter_pack

    out = tmp_path_factory.mktemp("run-engine") / "tiny-llama.tar"
    last = None
    for event in iter_pack(PackOptions(str(tiny_model_dir), out, base_image=base_image, engine="transformers",
                                       device="cpu", yes=True, client=docker_engine)):
        if isinstance(event, PhaseFinished):
            last = event
    assert out.exists(), f"pack wrote no bundle ({last})"
    return out


def copy_range(src: Path, dst: Path, start: int = 0, length: int | None = None) -> Path:
    """Copy bytes [start, start+length) of src to dst in the kernel (copy_file_range)."""
    size = src.stat().st_size
    length = size - start if length is None else length
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        offset, left = start, length
        while left > 0:
            n = os.copy_file_range(fi.fileno(), fo.fileno(), left, offset)
            if n == 0:
                break
            offset += n
            left -= n
    return dst
