"""``ezrunner pack``: model + engine image -> one offline docker-archive bundle.

Steps (each reports :mod:`ezrunner.core.events`):

1. **download** - a hub id is fetched (safetensors only when present) into the
   ezrunner cache; a local folder is used as is.
2. **plan** - the plan (``ezrunner.core.plan``) decides engine and device unless the
   caller passes one; a plan that does not fit stops here without ``yes=True``.
3. **build** - the engine image (base + wheelhouse + server), rendered from
   ``images/templates/<engine>-<device>.Dockerfile.j2`` and built with the low-level
   ``APIClient.build(decode=True)`` so that every step streams live. It is cached
   under a tag derived from the hash of the Dockerfile, the base image id, the
   wheelhouse and the server source: a second model on the same engine reuses it.
   Its layers are exported once (``docker save``) into the ezrunner cache.
4. **export** - the bundle is written in one pass (:mod:`ezrunner.core.dockerarchive`):
   engine layers copied byte for byte, the model layer generated straight into the
   bundle, the image config and ``manifest.json`` written by hand. Temporary names,
   renamed when complete; the sidecar last.

Public entry points: :func:`pack` (callback style, returns :class:`PackResult`) and
:func:`iter_pack` (a generator of events whose last item is the
``PhaseFinished("export", data=result.to_dict())``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

from ezrunner.core import docker_api, hubs, locations
from ezrunner.core import events as ev
from ezrunner.core.bundle import format as B
from ezrunner.core.engines import (
    CONTAINER_PORT,
    CONTAINER_UID,
    DEVICES,
    ENGINES,
    EngineSpec,
    ServeRequest,
    default_device,
    get_spec,
    model_dir_in_image,
)
from ezrunner.core.errors import EzError, UsageError
from ezrunner.core.fsutil import atomic_write_text
from ezrunner.core.units import human_bytes

from ezrunner._version import __version__

# --------------------------------------------------------------------------- defaults

ENGINE_REPO = "ezrunner-engine"
MIN_FREE_MARGIN = 64 << 20

# --------------------------------------------------------------------------- validation

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


def served_name_for(model: str) -> str:
    """The served model name (and image repo) for a model id or folder:
    its last path component, lowercased, limited to ``[a-z0-9._-]``."""
    base = model.rstrip("/").rsplit("/", 1)[-1].lower()
    base = re.sub(r"[^a-z0-9._-]+", "-", base).strip("._-")
    base = re.sub(r"[._-]{2,}", "-", base)
    return (base or "model")[:64]


def dq(value: Any) -> str:
    """Render a value as a Dockerfile double-quoted string: backslash, quote and ``$``
    escaped; control characters (newlines) refused."""
    text = str(value)
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise UsageError(f"refusing a value with control characters in a Dockerfile: {text!r}")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


# --------------------------------------------------------------------------- results


@dataclass
class PackResult:
    bundle: str  # path of the joined bundle name (BUNDLE.tar; with parts it does not exist)
    parts: list[str]
    sidecar: str
    sha256: str
    size: int
    image_tag: str
    image_id: str
    engine_image: str
    engine_reused: bool
    manifest: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PackCancelled(EzError):
    def __init__(self) -> None:
        super().__init__("pack cancelled; temporaries removed", exit_code=130)


# --------------------------------------------------------------------------- docker


docker_client = docker_api.connect
docker_error = docker_api.docker_error


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


def build_image(client, context: Path, tag: str, *, check: Callable[[], None]) -> Iterator[ev.Event | str]:
    """Run the classic build with live events; yields events, then the image id."""
    import docker

    api = client.api
    image_id = None
    last_lines: list[str] = []
    try:
        stream = api.build(path=str(context), tag=tag, rm=True, forcerm=True, decode=True, pull=False, nocache=False)
        for chunk in stream:
            check()
            if "error" in chunk or "errorDetail" in chunk:
                detail = chunk.get("errorDetail", {}).get("message") or chunk.get("error") or "unknown error"
                tail = " | ".join(last_lines[-3:])
                raise EzError(f"the engine image build failed: {detail.strip()[:400]}",
                              hint=(f"last build output: {tail[:300]}" if tail else None))
            if "stream" in chunk:
                text = chunk["stream"]
                lines = tuple(t for t in text.splitlines() if t.strip())
                for line in lines:
                    m = _STEP_RE.match(line.strip())
                    if m:
                        yield ev.StepProgress("build", index=int(m.group(1)), count=int(m.group(2)), name=m.group(3)[:200])
                    m2 = re.match(r"^Successfully built ([0-9a-f]+)$", line.strip())
                    if m2 and image_id is None:
                        image_id = m2.group(1)
                if lines:
                    last_lines = (last_lines + list(lines))[-10:]
                    yield ev.LogLines("build", lines=lines)
            elif "aux" in chunk and isinstance(chunk["aux"], dict) and chunk["aux"].get("ID"):
                image_id = chunk["aux"]["ID"]
            elif "status" in chunk:
                yield ev.LogLines("build", lines=(str(chunk["status"]),))
    except docker.errors.DockerException as exc:
        raise docker_error(exc) from None
    if image_id is None:
        raise EzError("the engine image build ended without an image id")
    yield image_id


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


def export_engine(client, image_id: str, *, check: Callable[[], None]) -> Iterator[ev.Event | EngineExport]:
    """``docker save`` the engine image once, keeping its layer tars in the cache."""
    import docker
    from ezrunner.core.bundle.writer import ChunkReader

    cached = load_engine_export(image_id)
    if cached is not None:
        yield cached
        return
    root = engine_export_dir()
    root.mkdir(parents=True, exist_ok=True)
    hexid = image_id.split(":")[-1]
    tmp = Path(tempfile.mkdtemp(prefix=f".{hexid[:12]}.", dir=root))
    try:
        info = client.api.inspect_image(image_id)
        total = int(info.get("Size") or 0)
        yield ev.PhaseStarted("build", label="exporting the engine image layers (once per engine)", total=total or None)
        reader = ChunkReader(client.api.get_image(image_id, chunk_size=8 << 20))
        done = 0
        with tarfile.open(fileobj=reader, mode="r|") as tf:
            for member in tf:
                check()
                tf.extract(member, tmp, filter="data")
                if member.isfile():
                    done += member.size
                    yield ev.BytesProgress("build", item="engine layers", done=done, total=total or None)
        manifest = json.loads((tmp / "manifest.json").read_text())[0]
        config = json.loads((tmp / manifest["Config"]).read_text())
        diff_ids = config["rootfs"]["diff_ids"]
        if len(diff_ids) != len(manifest["Layers"]):
            raise EzError("docker save returned a manifest whose layers do not match the image config")
        layers = []
        for rel, diff in zip(manifest["Layers"], diff_ids, strict=True):
            p = (tmp / rel).resolve()
            layers.append((p.relative_to(tmp.resolve()).as_posix(), p.stat().st_size, diff))
        (tmp / "export.json").write_text(json.dumps({"config": config, "layers": layers}))
        dest = root / hexid
        if dest.exists():
            shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
        _drop_stale_exports(client, keep=hexid)
    except docker.errors.DockerException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise docker_error(exc) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result = load_engine_export(image_id)
    if result is None:
        raise EzError("the exported engine layers could not be read back")
    yield result


ENGINE_KEEP_S = 3600


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


def ensure_engine_image(
    client,
    spec: EngineSpec,
    *,
    base_image: str,
    check: Callable[[], None],
) -> Iterator[ev.Event | tuple[str, str, bool]]:
    """Build (or reuse) the engine image; yields events, then (tag, image id, reused)."""
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
        yield (tag, existing.id, True)
        return
    yield ev.PhaseStarted("build", label=f"building the engine image {tag}")
    with tempfile.TemporaryDirectory(prefix="ezrunner-build-") as td:
        ctx = _build_context(dockerfile, wheelhouse.path if wheelhouse else None, Path(td))
        image_id = None
        for item in build_image(client, ctx, tag, check=check):
            if isinstance(item, str):
                image_id = item
            else:
                yield item
    img = docker_api.image_or_none(client, tag)
    if img is None:
        raise EzError(f"the engine image build finished but {tag} is missing")
    # The wheel-install stage stays behind as an untagged image labelled
    # ezrunner.stage=wheels: it is the build cache that makes a rebuild (new server
    # code) skip the pip install. `docker image prune --filter label=ezrunner.stage=wheels`
    # removes it.
    _prune_old_engines(client, f"{ENGINE_REPO}/{spec.key}", keep=img.id)
    yield ev.PhaseFinished("build", detail=f"built {tag}", data={"image": tag, "id": img.id})
    yield (tag, img.id or image_id or "", False)


# --------------------------------------------------------------------------- plan


def _plan_for(model_dir: Path, *, plan: dict | None, profile: Any, engine: str | None,
              max_model_len: int | None, dtype: str | None, details: Any) -> dict[str, Any]:
    if plan is not None:
        return dict(plan.to_dict() if hasattr(plan, "to_dict") else plan)
    try:
        from ezrunner.core import plan as plan_mod
    except ImportError:
        return {}
    import inspect

    kwargs: dict[str, Any] = {}
    params = inspect.signature(plan_mod.make_plan).parameters
    for name, value in (("engine", engine), ("max_model_len", max_model_len), ("dtype", dtype)):
        if value is not None and name in params:
            kwargs[name] = value
    src = details if details is not None else str(model_dir)
    if profile is None:
        from ezrunner.core import hardware

        profile = hardware.probe()
    result = plan_mod.make_plan(src, profile, **kwargs)
    return dict(result.to_dict() if hasattr(result, "to_dict") else result)


# --------------------------------------------------------------------------- temporaries


def _tmp_name(target: Path, pid: int | None = None) -> str:
    return f".{target.name}.ezpack-{pid or os.getpid()}.tmp"


def _clean_stale(target: Path) -> None:
    """Remove temporaries of earlier packs of the same bundle whose process is gone."""
    pat = re.compile(r"^\." + re.escape(target.name) + r"(?:\.part-\d{3})?\.ezpack-(\d+)\.tmp$")
    if not target.parent.is_dir():
        return
    for child in target.parent.iterdir():
        m = pat.match(child.name)
        if not m:
            continue
        pid = int(m.group(1))
        alive = True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            alive = False
        except PermissionError:
            alive = True
        if not alive or pid == os.getpid():
            with contextlib.suppress(OSError):
                child.unlink()


def _remove_old_outputs(target: Path) -> None:
    for p in [target, B.sidecar_path(target), *_existing_parts(target)]:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _existing_parts(target: Path) -> list[Path]:
    pat = re.compile(re.escape(target.name + B.PART_INFIX) + r"\d{3}$")
    if not target.parent.is_dir():
        return []
    return sorted(c for c in target.parent.iterdir() if pat.match(c.name))


# --------------------------------------------------------------------------- the pack


def iter_pack(
    model: str | hubs.ModelRef,
    output: str | os.PathLike[str],
    *,
    plan: dict | None = None,
    profile: Any = None,
    engine: str | None = None,
    device: str | None = None,
    base_image: str | None = None,
    revision: str | None = None,
    split_size: int | str | None = None,
    max_model_len: int | None = None,
    dtype: str | None = None,
    yes: bool = False,
    token: str | None = None,
    details: Any = None,
    client: Any = None,
    cancelled: Callable[[], bool] | None = None,
    hub: hubs.HubConfig | None = None,
) -> Iterator[ev.Event]:
    """The pack as a generator of events. The last event is
    ``PhaseFinished("export", data=PackResult.to_dict())``. Closing the generator
    early (or an exception) removes every temporary; no file named like a finished
    bundle is ever left incomplete."""
    t0 = time.monotonic()
    seconds: dict[str, float] = {}

    def check() -> None:
        if cancelled is not None and cancelled():
            raise PackCancelled()

    # ---- arguments
    if engine in (None, "", "auto"):
        engine = None
    elif engine not in ENGINES:
        raise UsageError(f"--engine: unknown engine {engine!r}", hint=f"auto, {', '.join(ENGINES)}")
    if device is not None and device not in DEVICES:
        raise UsageError(f"device: unknown device {device!r}")
    if base_image is not None:
        validate_image_ref(base_image)
    part_size = B.parse_size(split_size) if isinstance(split_size, str) else split_size
    if part_size is not None and part_size < (1 << 20):
        raise UsageError("--split-size: parts must be at least 1M")
    if max_model_len is not None and (not isinstance(max_model_len, int) or max_model_len < 1):
        raise UsageError("--max-model-len: must be a positive whole number")
    target = Path(output).expanduser()
    if target.name in ("", ".", "..") or target.is_dir():
        raise UsageError(f"-o: {output} is a folder; give a file name such as model.tar")
    target = target.parent.resolve() / target.name
    if not target.parent.is_dir():
        raise UsageError(f"-o: folder {target.parent} does not exist")

    # ---- model (validated before anything is reported or written)
    ref = hubs.parse_model_ref(model, revision=revision)
    if client is None:  # fail fast, before a long download
        client = docker_client()
    yield ev.PhaseStarted("download", label=f"model {model}")
    fetched = yield from hubs.fetch(ref, hub or hubs.HubConfig(token=token), check=check)
    folder, model_id, resolved_rev = fetched.folder, fetched.label_id, fetched.ref.revision
    yield ev.PhaseFinished("download", detail=str(folder))
    seconds["download"] = time.monotonic() - t0

    # ---- plan
    yield ev.PhaseStarted("plan", label="planning engine and memory")
    plan_dict = _plan_for(folder, plan=plan, profile=profile, engine=engine, max_model_len=max_model_len, dtype=dtype, details=details)
    if plan_dict.get("fits") is False and not yes:
        reasons = "; ".join(str(r) for r in plan_dict.get("reasons") or [])[:300]
        raise EzError(f"the plan says this model does not fit the target{': ' + reasons if reasons else ''}",
                      hint="pack anyway with --yes, or pick a smaller model / other target")
    engine = engine or plan_dict.get("engine") or "transformers"
    spec = get_spec(engine, device or plan_dict.get("device") or default_device(engine))
    base_image = base_image or spec.default_base_image
    served = served_name_for(model_id)
    yield ev.PhaseFinished("plan", detail=f"{spec.engine} on {spec.device}", data={"plan": plan_dict})

    # ---- engine image
    tb = time.monotonic()
    yield ev.PhaseStarted("build", label=f"engine image: {spec.engine} on {spec.device}, base {base_image}")
    tag = image_id = None
    reused = False
    for item in ensure_engine_image(client, spec, base_image=base_image, check=check):
        if isinstance(item, ev.Event):
            yield item
        else:
            tag, image_id, reused = item
    export = None
    for item in export_engine(client, image_id, check=check):
        if isinstance(item, ev.Event):
            yield item
        else:
            export = item
    assert export is not None
    yield ev.PhaseFinished("build", detail=f"engine image {tag}", data={"image": tag, "id": image_id, "reused": reused})
    seconds["build"] = time.monotonic() - tb

    # ---- export: the bundle
    yield from _write_bundle(
        target=target, part_size=part_size, folder=folder, model_id=model_id, revision=resolved_rev,
        served=served, spec=spec, plan_dict=plan_dict, max_model_len=max_model_len,
        export=export, engine_tag=tag, engine_reused=reused, check=check, seconds=seconds, t0=t0,
    )


def _write_bundle(**kwargs: Any) -> Iterator[ev.Event]:
    """Run the export on a worker thread and yield its events live. Closing the
    generator, Ctrl-C or a cancel stops the worker, which removes its temporaries,
    before the exception goes on."""
    import threading
    from queue import Empty, Queue

    outer_check: Callable[[], None] = kwargs.pop("check")
    stop = threading.Event()
    q: Queue = Queue()
    box: dict[str, Any] = {}

    def wcheck() -> None:
        if stop.is_set():
            raise PackCancelled()

    def run() -> None:
        try:
            box["result"] = _write_bundle_work(q.put, check=wcheck, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc
        finally:
            q.put(None)

    worker = threading.Thread(target=run, name="ezrunner-export", daemon=True)
    worker.start()
    try:
        while True:
            try:
                item = q.get(timeout=0.2)
            except Empty:
                outer_check()
                continue
            if item is None:
                break
            yield item
            outer_check()
    except BaseException:
        stop.set()
        worker.join()
        raise
    worker.join()
    if "error" in box:
        raise box["error"]
    result: PackResult = box["result"]
    yield ev.PhaseFinished("export", detail=f"{Path(result.bundle).name}: {human_bytes(result.size)} in {result.seconds.get('total', 0):.1f} s",
                           data=result.to_dict())


def _write_bundle_work(emit: ev.EventCallback, *, target: Path, part_size: int | None, folder: Path, model_id: str, revision: str | None,
                  served: str, spec: EngineSpec, plan_dict: dict, max_model_len: int | None,
                  export: EngineExport, engine_tag: str, engine_reused: bool, check: Callable[[], None],
                  seconds: dict[str, float], t0: float) -> PackResult:
    from ezrunner.core.bundle.writer import (
        DiskFull,
        SplitWriter,
        plan_model_layer,
    )

    te = time.monotonic()
    _clean_stale(target)
    model_dir = model_dir_in_image(served)

    # free space, against the estimate (engine layers + model + headers)
    from ezrunner.core.bundle.writer import iter_model_files

    model_files = iter_model_files(folder)
    model_est = sum(p.stat().st_size for _r, p in model_files) + 1024 * (len(model_files) + 8)
    estimate = export.size + model_est + (1 << 20)
    free = shutil.disk_usage(target.parent).free
    if free < estimate + MIN_FREE_MARGIN:
        raise EzError(
            f"not enough free space in {target.parent}: the bundle needs about {human_bytes(estimate)}, {human_bytes(free)} free",
            hint="free some space or write the bundle (-o) elsewhere",
        )

    # The model is hashed (per-file sha256 + the layer diff id, pass 1) on its own
    # thread WHILE the writer already writes the engine layers behind a placeholder
    # first member of the same length; the writer waits for pass 1 only at the model
    # layer. Then a hasher thread replays the same byte stream (with the real first
    # member) for the sidecar sha256 while the writer goes on; the placeholder is
    # patched in place at the end.
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from ezrunner.core.bundle.writer import Tail, bundle_stream, tar_header

    abort = threading.Event()

    def lcheck() -> None:
        check()
        if abort.is_set():
            raise PackCancelled()

    created = B.now_iso()
    mtime = int(time.time())
    serve_args = spec.serve_argv(ServeRequest(served, plan_dict, max_model_len))
    model_bytes = sum(p.stat().st_size for _r, p in model_files)
    zero = "0" * 64

    def bundle_manifest(files: dict[str, str], config_digest: str, image_tag: str) -> B.BundleManifest:
        return B.BundleManifest(
            model=model_id, revision=revision, served_model_name=served, files=files,
            model_bytes=model_bytes, engine=spec.engine, device=spec.device, plan=plan_dict,
            image_id=config_digest, image_tag=image_tag, ezrunner_version=__version__, created=created,
        )

    placeholder = bundle_manifest({rel: zero for rel, _p in model_files}, "sha256:" + zero,
                                  B.image_tag(served, spec, "sha256:" + zero)).to_json_bytes()

    layer_names: list[str] = []
    seen: dict[str, str] = {}
    for _p, _s, diff in export.layers:
        layer_names.append(seen.setdefault(diff, B.layer_member(diff)))
    engine_items: list[tuple[str, Path, int]] = []
    written_names: set[str] = set()
    for (path, size, _diff), name in zip(export.layers, layer_names, strict=True):
        if name not in written_names:
            written_names.add(name)
            engine_items.append((name, path, size))

    state: dict[str, Any] = {}
    tail_lock = threading.Lock()

    def tail() -> Tail:
        with tail_lock:
            if "tail" in state:
                return state["tail"]
            layer = pass1.result()
            if set(layer.files) != {rel for rel, _p in model_files} or layer.model_bytes != model_bytes:
                raise OSError("the model folder changed while packing")
            manifest = bundle_manifest(layer.files, "", "")
            image = B.ImageSpec(spec, B.BundleLabels.for_bundle(manifest, spec, serve_args), layer.diff_id,
                                f"ezrunner pack: model {model_id} -> {model_dir}")
            cfg_raw, config_digest = B.image_config_bytes(B.image_config(export.config, image))
            image_tag = B.image_tag(served, spec, layer.diff_id)
            layer_name = B.layer_member(layer.diff_id)
            config_name = B.config_member(config_digest)
            manifest = bundle_manifest(layer.files, config_digest, image_tag)
            real = manifest.to_json_bytes()
            if len(real) != len(placeholder):
                raise AssertionError("the bundle manifest changed length between placeholder and final")
            state.update(manifest=manifest, real=real, config_digest=config_digest, image_tag=image_tag)
            state["tail"] = Tail(layer, layer_name, config_name, cfg_raw,
                                 B.docker_manifest_bytes(config_name, image_tag, [*layer_names, layer_name]))
            return state["tail"]

    split = part_size is not None

    def path_for(i: int) -> Path:
        if split:
            part = B.part_path(target, i)
            return part.with_name(_tmp_name(part))
        if i != 1:
            raise AssertionError("unsplit bundle opened a second part")
        return target.with_name(_tmp_name(target))

    total = export.size + model_est + 64 * 1024
    out = SplitWriter(path_for, part_size, hashing=False)
    prog_last = [0.0]
    emit(ev.PhaseStarted("export", label=f"writing {target.name}", total=total))
    hashed: dict[str, Any] = {}

    def hash_stream() -> None:
        h = hashlib.sha256()
        n = 0
        try:
            tail()
            for piece in bundle_stream(state["real"], engine_items, tail, mtime=mtime, check=lcheck):
                h.update(piece)
                n += len(piece)
            hashed.update(digest=h.hexdigest(), size=n)
        except BaseException as exc:  # noqa: BLE001 - reported by the writer
            hashed["error"] = exc

    pool = ThreadPoolExecutor(max_workers=1)
    pass1 = pool.submit(plan_model_layer, folder, model_dir, check=lcheck)
    hasher = threading.Thread(target=hash_stream, name="ezrunner-sha256", daemon=True)
    ok = False
    try:
        hasher.start()
        for piece in bundle_stream(placeholder, engine_items, tail, mtime=mtime, check=lcheck):
            out.write(piece)
            now = time.monotonic()
            if now - prog_last[0] > 0.1:
                prog_last[0] = now
                emit(ev.BytesProgress("export", item="bundle", done=out.written, total=total))
        out.patch(len(tar_header(B.BUNDLE_MANIFEST_NAME, len(placeholder), mtime=mtime)), state["real"])
        hasher.join()
        if "error" in hashed:
            raise hashed["error"]
        if hashed["size"] != out.written:
            raise AssertionError(f"hashed {hashed['size']} bytes but wrote {out.written}")
        out.close()
        digest = hashed["digest"]
        size = out.written
        # complete: replace older outputs, rename temporaries, sidecar last
        _remove_old_outputs(target)
        finals: list[Path] = []
        if split:
            for i, tmp in enumerate(out.paths, start=1):
                final = B.part_path(target, i)
                os.replace(tmp, final)
                finals.append(final)
        else:
            os.replace(out.paths[0], target)
            finals.append(target)
        sidecar = B.sidecar_path(target)
        atomic_write_text(sidecar, B.format_sidecar(digest, target.name))
        _fsync_dir(target.parent)
        ok = True
    except DiskFull:
        raise EzError(f"the disk is full while writing {target.name} in {target.parent}; nothing was left behind",
                      hint="free some space or write the bundle (-o) elsewhere") from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise EzError(f"the disk is full while writing {target.name}; nothing was left behind",
                          hint="free some space or write the bundle (-o) elsewhere") from None
        raise EzError(f"could not write the bundle: {exc}") from None
    finally:
        if not ok:
            abort.set()
            with contextlib.suppress(BaseException):
                pass1.exception()
            if hasher.is_alive():
                hasher.join()
            out.abort()
        pool.shutdown(wait=True)
    seconds["export"] = time.monotonic() - te
    seconds["total"] = time.monotonic() - t0
    manifest = state["manifest"]
    return PackResult(
        bundle=str(target), parts=[str(p) for p in finals] if split else [], sidecar=str(sidecar), sha256=digest,
        size=size, image_tag=state["image_tag"], image_id=state["config_digest"], engine_image=engine_tag,
        engine_reused=engine_reused, manifest=manifest.to_dict(), seconds={k: round(v, 3) for k, v in seconds.items()},
    )


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def pack(model: str, output: str | os.PathLike[str], *, on_event: ev.EventCallback | None = None,
         cancelled: Callable[[], bool] | None = None, **kwargs: Any) -> PackResult:
    """Callback style: every event goes to ``on_event``; returns the :class:`PackResult`."""
    cb = on_event or ev.ignore
    gen = iter_pack(model, output, cancelled=cancelled, **kwargs)
    final: ev.Event | None = None
    try:
        for event in gen:
            cb(event)
            final = event
            if cancelled is not None and cancelled():
                raise PackCancelled()
    finally:
        gen.close()
    assert isinstance(final, ev.PhaseFinished) and final.phase == "export"
    d = final.data
    return PackResult(**d)
