"""``docker load`` a verified bundle from its file (or its parts, read as one
stream), with byte progress; skipped when the image is there already."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from ezrunner.core import docker_api
from ezrunner.core.bundle.format import BundleError
from ezrunner.core.bundle.reader import (
    PROGRESS_INTERVAL,
    BundleInfo,
    BundleSource,
    RunCancelled,
    iter_chunks,
)
from ezrunner.core.errors import EzError
from ezrunner.core.events import BytesProgress, Event, LogLines, Notice, PhaseFinished, PhaseStarted

Emit = Callable[[Event], None]

LOAD_CHUNK = 1024 * 1024


def _noop(_e: Event) -> None:
    pass


def load_bundle(client: Any, source: BundleSource, info: BundleInfo, on_event: Emit | None = None,
                *, cancelled: Callable[[], bool] | None = None) -> Any:
    """``docker load`` the bundle with progress (bytes fed to the engine, then the
    engine's own per-layer "Loading layer" progress), unless an image with the same
    id is present already: then the load is skipped and said so.

    When the bundle was verified (``info.sha256``), the bytes fed to Docker are
    hashed again as they go and the last piece is held back until the hash
    matches: a bundle swapped or changed after the check never finishes loading
    (Docker unpacks the whole upload before it loads anything)."""
    emit = on_event or _noop
    existing = docker_api.image_or_none(client, info.image_id)
    if existing is not None:
        _ensure_tag(existing, info.image_tag)
        emit(Notice("load", message=f"image {info.image_id[:19]}… ({info.image_tag}) is already loaded; skipping docker load"))
        emit(PhaseFinished("load", ok=True, detail="already loaded", data={"image_id": existing.id, "skipped": True}))
        return existing
    emit(PhaseStarted("load", label=f"docker load {source.describe()}", total=source.size))
    replaced = docker_api.image_or_none(client, info.image_tag)
    loaded = _docker_load(client, _body(source, emit, cancelled, info.sha256), emit)
    image = docker_api.image_or_none(client, info.image_id)
    if image is None:
        raise EzError(
            f"docker load finished but image {info.image_id[:19]}… is not there ({'; '.join(loaded) or 'no output'})",
            hint="the bundle's image config does not match its manifest; pack it again",
        )
    _ensure_tag(image, info.image_tag)
    if replaced is not None and replaced.id != image.id:
        emit(Notice("load", message=f"{info.image_tag} now names this image; the one it named before "
                    f"({replaced.id[:19]}…) is untagged: `ezrunner prune` removes it"))
    emit(PhaseFinished("load", ok=True, detail=f"loaded {info.image_tag}", data={"image_id": image.id, "skipped": False}))
    return image


def _body(source: BundleSource, emit: Emit, cancelled: Callable[[], bool] | None,
          expected_sha256: str | None) -> Iterator[bytes]:
    """The bundle's bytes for the engine; reports them and checks ``cancelled``
    every :data:`PROGRESS_INTERVAL` seconds. With ``expected_sha256`` the bytes
    are hashed as they go and the last piece is sent only when they match."""
    digest = hashlib.sha256() if expected_sha256 else None
    sent, last, held = 0, 0.0, None
    for chunk in iter_chunks(source, LOAD_CHUNK):
        data = bytes(chunk)
        if digest is not None:
            digest.update(data)
        sent += len(data)
        now = time.monotonic()
        if now - last >= PROGRESS_INTERVAL:
            last = now
            if cancelled is not None and cancelled():
                raise RunCancelled("cancelled while loading; Docker discards the partial upload")
            emit(BytesProgress("load", item=source.path.name, done=sent, total=source.size))
        if held is not None:
            yield held
        held = data
    if digest is not None and digest.hexdigest() != expected_sha256:
        raise BundleError(f"{source.describe()} changed after it was verified (sha256 {digest.hexdigest()[:16]}… "
                          f"while loading, {expected_sha256[:16]}… when checked); the load was stopped",
                          hint="something replaced or wrote the file during `run`; copy it again and rerun")
    emit(BytesProgress("load", item=source.path.name, done=sent, total=source.size))
    if held is not None:
        yield held


def _docker_load(client: Any, body: Iterator[bytes], emit: Emit) -> list[str]:
    """Feed ``body`` to the engine; returns its "Loaded image" lines."""
    from docker.errors import APIError, DockerException

    loaded: list[str] = []
    try:
        for msg in client.api.load_image(body, quiet=False):
            if isinstance(msg, dict):
                _on_message(msg, loaded, emit)
    except (BundleError, RunCancelled):
        raise
    except APIError as exc:
        raise EzError(f"docker load failed: {docker_api.api_message(exc)}") from None
    except DockerException as exc:
        raise EzError(f"docker load failed: {docker_api.first_line(str(exc))}") from None
    return loaded


def _on_message(msg: dict[str, Any], loaded: list[str], emit: Emit) -> None:
    if msg.get("errorDetail") or msg.get("error"):
        detail = (msg.get("errorDetail") or {}).get("message") or msg.get("error")
        raise EzError(f"docker load failed: {docker_api.first_line(str(detail))}",
                      hint="verify the bundle (run without --no-verify)")
    if msg.get("stream"):
        line = str(msg["stream"]).strip()
        if line:
            loaded.append(line)
            emit(LogLines("load", lines=(line,)))
    elif msg.get("progressDetail"):
        pd = msg["progressDetail"] or {}
        if "current" in pd:
            emit(BytesProgress("load", item=f"layer {msg.get('id', '')}", done=int(pd["current"]), total=pd.get("total")))


def _ensure_tag(image: Any, tag: str) -> None:
    if not tag or tag in (image.tags or []):
        return
    repo, _, t = tag.rpartition(":")
    if not repo or "/" in t:
        repo, t = tag, "latest"
    with contextlib.suppress(Exception):  # a missing tag does not stop the run
        image.tag(repo, t)
