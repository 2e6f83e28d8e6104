"""The engine image: rendered, built (or reused) and exported once per engine.

The engine image (base + wheelhouse + server) is rendered from
``images/templates/<engine>-<device>.Dockerfile.j2`` and built with the low-level
``APIClient.build(decode=True)`` so that every step streams live. It is cached
under a tag derived from the hash of the Dockerfile, the base image id, the
wheelhouse and the server source: a second model on the same engine reuses it.
Its layers are exported once (``docker save``) into the ezrunner cache, from
where the bundle writer copies them byte for byte.

Each long step is a generator of :mod:`ezrunner.core.events` that RETURNS its
value: ``export = yield from export_engine(client, image_id, check=check)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

from ezrunner.core import docker_api, locations
from ezrunner.core import events as ev
from ezrunner.core.bundle import format as B
from ezrunner.core.engines import CONTAINER_PORT, CONTAINER_UID, EngineSpec
from ezrunner.core.errors import EzError, UsageError

ENGINE_REPO = "ezrunner-engine"
ENGINE_KEEP_S = 3600

_DOCKER_REF = re.compile(
    r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?/)?"  # registry host[:port]/ (optional)
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"  # path
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)
_IMAGE_ID = re.compile(r"^(sha256:)?[0-9a-f]{12,64}$")


def validate_image_ref(ref: str, flag: str = "--base-image") -> str:
    if not isinstance(ref, str) or not (_DOCKER_REF.match(ref) or _IMAGE_ID.match(ref)):
        raise UsageError(f"{flag}: not a valid image reference: {ref!r}", hint="e.g. python:3.11-slim-bookworm")
    return ref


def dq(value: Any) -> str:
    """Render a value as a Dockerfile double-quoted string: backslash, quote and ``$``
    escaped; control characters (newlines) refused."""
    text = str(value)
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise UsageError(f"refusing a value with control characters in a Dockerfile: {text!r}")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


# --------------------------------------------------------------------------- templates


def _template_env():
    import jinja2

    from ezrunner import images

    folder = Path(images.__file__).resolve().parent / "templates"
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["dq"] = dq
    # exec-form JSON; ensure_ascii keeps every value on one line with no raw control chars
    env.filters["tojson"] = lambda v: json.dumps(v, ensure_ascii=True)
    return env


def render_dockerfile(spec: EngineSpec, *, base_image: str) -> str:
    """Render the engine image's Dockerfile from the row's template."""
    validate_image_ref(base_image)
    ctx = {
        "base_image": base_image,
        "python_image": spec.extra_images[0] if spec.extra_images else "",
        "uid": CONTAINER_UID,
        "port": CONTAINER_PORT,
        "start_period": spec.start_period_s,
        "healthcheck": spec.healthcheck()[1:],  # the exec form after HEALTHCHECK ... CMD
        "engine_labels": B.engine_image_labels(spec, base_image),
    }
    return _template_env().get_template(spec.template).render(**ctx)


# --------------------------------------------------------------------------- engine image


def _server_dir() -> Path:
    from ezrunner import images

    return Path(images.__file__).resolve().parent / "server"


def _server_files() -> list[Path]:
    root = _server_dir()
    return sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".txt", ".json", ".j2"))


def engine_cache_key(dockerfile: str, base_image_id: str, wheelhouse_digest: str) -> str:
    h = hashlib.sha256()
    h.update(b"dockerfile\0" + dockerfile.encode() + b"\0")
    h.update(b"base\0" + base_image_id.encode() + b"\0")
    h.update(b"wheels\0" + wheelhouse_digest.encode() + b"\0")
    root = _server_dir()
    for p in _server_files():
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _build_context(dockerfile: str, wheelhouse_dir: Path | None, workdir: Path) -> Path:
    ctx = workdir / "context"
    ctx.mkdir(parents=True)
    (ctx / "Dockerfile").write_text(dockerfile, encoding="utf-8")
    srv = ctx / "ezrunner_server"
    srv.mkdir()
    root = _server_dir()
    for p in _server_files():
        if p.name == "requirements.txt":
            continue
        dest = srv / p.relative_to(root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dest)
    wheels = ctx / "wheels"
    wheels.mkdir()
    if wheelhouse_dir is not None:
        for f in wheelhouse_dir.iterdir():
            if f.name.startswith("."):
                continue
            try:
                os.link(f, wheels / f.name)
            except OSError:
                shutil.copy2(f, wheels / f.name)
    return ctx


_STEP_RE = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_BUILT_RE = re.compile(r"^Successfully built ([0-9a-f]+)$")


@dataclass
class _BuildLog:
    """What the build stream told so far: the image id and the last lines (for an error's hint)."""

    image_id: str | None = None
    last_lines: list[str] = field(default_factory=list)

    def events(self, chunk: dict[str, Any]) -> Iterator[ev.Event]:
        """The events of one decoded build chunk; an error chunk raises."""
        if "error" in chunk or "errorDetail" in chunk:
            detail = chunk.get("errorDetail", {}).get("message") or chunk.get("error") or "unknown error"
            tail = " | ".join(self.last_lines[-3:])
            raise EzError(f"the engine image build failed: {detail.strip()[:400]}",
                          hint=(f"last build output: {tail[:300]}" if tail else None))
        if "stream" in chunk:
            lines = tuple(t for t in chunk["stream"].splitlines() if t.strip())
            for line in lines:
                m = _STEP_RE.match(line.strip())
                if m:
                    yield ev.StepProgress("build", index=int(m.group(1)), count=int(m.group(2)), name=m.group(3)[:200])
                m2 = _BUILT_RE.match(line.strip())
                if m2 and self.image_id is None:
                    self.image_id = m2.group(1)
            if lines:
                self.last_lines = (self.last_lines + list(lines))[-10:]
                yield ev.LogLines("build", lines=lines)
        elif "aux" in chunk and isinstance(chunk["aux"], dict) and chunk["aux"].get("ID"):
            self.image_id = chunk["aux"]["ID"]
        elif "status" in chunk:
            yield ev.LogLines("build", lines=(str(chunk["status"]),))


def build_image(client, context: Path, tag: str, *, check: Callable[[], None]) -> Generator[ev.Event, None, str]:
    """Run the classic build with live events; returns the image id."""
    import docker

    log = _BuildLog()
    try:
        stream = client.api.build(path=str(context), tag=tag, rm=True, forcerm=True, decode=True, pull=False, nocache=False)
        for chunk in stream:
            check()
            yield from log.events(chunk)
    except docker.errors.DockerException as exc:
        raise docker_api.docker_error(exc) from None
    if log.image_id is None:
        raise EzError("the engine image build ended without an image id")
    return log.image_id


@dataclass
class EngineExport:
    """An engine image's layers exported once from ``docker save`` into the cache."""

    image_id: str
    folder: Path
    config: dict[str, Any]
    layers: list[tuple[Path, int, str]]  # (tar path, size, diff_id)

    @property
    def size(self) -> int:
        return sum(s for _p, s, _d in self.layers)


def engine_export_dir() -> Path:
    return locations.home() / "engine-layers"


def load_engine_export(image_id: str) -> EngineExport | None:
    folder = engine_export_dir() / image_id.split(":")[-1]
    meta = folder / "export.json"
    if not meta.is_file():
        return None
    try:
        data = json.loads(meta.read_text())
        layers = [(folder / p, s, d) for p, s, d in data["layers"]]
        if all(p.is_file() and p.stat().st_size == s for p, s, _ in layers):
            return EngineExport(image_id, folder, data["config"], layers)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def export_engine(client, image_id: str, *, check: Callable[[], None]) -> Generator[ev.Event, None, EngineExport]:
    """``docker save`` the engine image once, keeping its layer tars in the cache."""
    import docker

    cached = load_engine_export(image_id)
    if cached is not None:
        return cached
    root = engine_export_dir()
    root.mkdir(parents=True, exist_ok=True)
    hexid = image_id.split(":")[-1]
    tmp = Path(tempfile.mkdtemp(prefix=f".{hexid[:12]}.", dir=root))
    try:
        yield from _save_image(client, image_id, tmp, check=check)
        _write_export_index(tmp)
        dest = root / hexid
        if dest.exists():
            shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
        _drop_stale_exports(client, keep=hexid)
    except docker.errors.DockerException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise docker_api.docker_error(exc) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result = load_engine_export(image_id)
    if result is None:
        raise EzError("the exported engine layers could not be read back")
    return result


def _save_image(client, image_id: str, folder: Path, *, check: Callable[[], None]) -> Iterator[ev.Event]:
    """Unpack ``docker save`` of the image into ``folder``, reporting the bytes."""
    from ezrunner.core.bundle.writer import ChunkReader

    info = client.api.inspect_image(image_id)
    total = int(info.get("Size") or 0) or None
    yield ev.PhaseStarted("build", label="exporting the engine image layers (once per engine)", total=total)
    reader = ChunkReader(client.api.get_image(image_id, chunk_size=8 << 20))
    done = 0
    with tarfile.open(fileobj=reader, mode="r|") as tf:
        for member in tf:
            check()
            tf.extract(member, folder, filter="data")
            if member.isfile():
                done += member.size
                yield ev.BytesProgress("build", item="engine layers", done=done, total=total)


def _write_export_index(folder: Path) -> None:
    """``export.json`` of an unpacked ``docker save``: the image config and its
    layers as (relative tar path, size, diff id), in image order."""
    manifest = json.loads((folder / "manifest.json").read_text())[0]
    config = json.loads((folder / manifest["Config"]).read_text())
    diff_ids = config["rootfs"]["diff_ids"]
    if len(diff_ids) != len(manifest["Layers"]):
        raise EzError("docker save returned a manifest whose layers do not match the image config")
    layers = []
    for rel, diff in zip(manifest["Layers"], diff_ids, strict=True):
        p = (folder / rel).resolve()
        layers.append((p.relative_to(folder.resolve()).as_posix(), p.stat().st_size, diff))
    (folder / "export.json").write_text(json.dumps({"config": config, "layers": layers}))


def _prune_old_engines(client, repo: str, keep: str) -> None:
    """Remove older engine images of the same engine/device (older than an hour, so
    that a pack running beside this one keeps its image; images in use stay)."""
    from datetime import datetime

    now = datetime.now(UTC)
    with contextlib.suppress(Exception):
        for img in client.images.list(name=repo):
            if img.id == keep:
                continue
            created = str(img.attrs.get("Created", ""))[:19]
            try:
                age = (now - datetime.strptime(created, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)).total_seconds()
            except ValueError:
                continue
            if age > ENGINE_KEEP_S:
                with contextlib.suppress(Exception):
                    for t in img.tags:
                        client.images.remove(t)


def _drop_stale_exports(client, keep: str) -> None:
    """Remove exported layers of engine images the Docker engine no longer has."""
    root = engine_export_dir()
    for child in root.iterdir():
        if child.name == keep or child.name.startswith(".") or not re.fullmatch(r"[0-9a-f]{64}", child.name):
            continue
        with contextlib.suppress(Exception):
            if docker_api.image_or_none(client, "sha256:" + child.name) is None:
                shutil.rmtree(child, ignore_errors=True)


@dataclass(frozen=True)
class EngineImage:
    """The engine image a bundle is built on."""

    tag: str
    image_id: str
    reused: bool  # found in the Docker engine's cache, not built now


def ensure_engine_image(client, spec: EngineSpec, *, base_image: str,
                        check: Callable[[], None]) -> Generator[ev.Event, None, EngineImage]:
    """Build (or reuse) the engine image."""
    from ezrunner.core.wheelhouse import ensure_wheelhouse

    base = docker_api.require_image(client, base_image)
    python_image_id = "".join(docker_api.require_image(client, ref).id for ref in spec.extra_images)
    dockerfile = render_dockerfile(spec, base_image=base_image)
    wheelhouse = None
    if spec.uses_wheelhouse:
        for item in ensure_wheelhouse(device=spec.device):
            if isinstance(item, ev.Event):
                yield item
            else:
                wheelhouse = item
        check()
    key = engine_cache_key(dockerfile, base.id + python_image_id, wheelhouse.digest() if wheelhouse else "")
    tag = f"{ENGINE_REPO}/{spec.key}:{key}"
    existing = docker_api.image_or_none(client, tag)
    if existing is not None:
        yield ev.Notice("build", level="info", message=f"reusing the cached engine image {tag}")
        return EngineImage(tag, existing.id, True)
    yield ev.PhaseStarted("build", label=f"building the engine image {tag}")
    with tempfile.TemporaryDirectory(prefix="ezrunner-build-") as td:
        ctx = _build_context(dockerfile, wheelhouse.path if wheelhouse else None, Path(td))
        image_id = yield from build_image(client, ctx, tag, check=check)
    img = docker_api.image_or_none(client, tag)
    if img is None:
        raise EzError(f"the engine image build finished but {tag} is missing")
    # The wheel-install stage stays behind as an untagged image labelled
    # ezrunner.stage=wheels: it is the build cache that makes a rebuild (new server
    # code) skip the pip install. `docker image prune --filter label=ezrunner.stage=wheels`
    # removes it.
    _prune_old_engines(client, f"{ENGINE_REPO}/{spec.key}", keep=img.id)
    yield ev.PhaseFinished("build", detail=f"built {tag}", data={"image": tag, "id": img.id})
    return EngineImage(tag, img.id or image_id or "", False)
