"""``ezrunner run`` in one call: verify, load, start, wait until ready."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ezrunner.core import docker_api
from ezrunner.core.bundle.reader import BundleInfo, verify_bundle
from ezrunner.core.events import Event
from ezrunner.core.run.container import StartOptions, check_start, start
from ezrunner.core.run.load import load_bundle
from ezrunner.core.run.ready import Ready, wait_ready


@dataclass(frozen=True)
class RunOptions:
    """What ``run`` does around the start: the sha256 check (``verify=False``
    still checks the structure) and how long to wait for ready (None: scaled to
    the model's size, :func:`~ezrunner.core.run.ready.ready_timeout`)."""

    verify: bool = True
    ready_timeout_s: float | None = None


def run_bundle(
    path: str,
    options: StartOptions | None = None,
    run: RunOptions | None = None,
    *,
    client: Any = None,
    on_event: Callable[[Event], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Ready:
    """Verify, load, start and wait until ready. The cheap checks come first: the
    bundle's structure, then Docker reachable, the name and the port free, then the
    long checksum pass and the load. Raises EzError subclasses; emits events
    throughout. The container records the bundle's file name."""
    run = run or RunOptions()
    docker: list[Any] = [client]

    def cheap_checks(info: BundleInfo) -> None:
        docker[0] = docker[0] or docker_api.connect()
        assert info.labels is not None
        check_start(docker[0], info.labels, options)

    source, info = verify_bundle(path, on_event, check_hash=run.verify, cancelled=cancelled, before_hash=cheap_checks)
    image = load_bundle(docker[0], source, info, on_event, cancelled=cancelled)
    running = start(docker[0], image, replace(options or StartOptions(), bundle_name=source.path.name), on_event=on_event)
    return wait_ready(docker[0], running, timeout=run.ready_timeout_s, on_event=on_event, cancelled=cancelled)
