"""The containers ezrunner started here: list them (``ps``), find one by name,
stop (and remove) it. The image stays: ``docker rmi`` removes it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ezrunner.core import docker_api
from ezrunner.core.errors import EzError
from ezrunner.core.run.container import (
    RUN_LABEL_MANAGED,
    RUNNING_STATES,
    RunLabels,
    bundle_labels_or_none,
    where,
)


@dataclass(frozen=True)
class PsRow:
    name: str
    model: str
    served_model_name: str
    engine: str
    device: str
    host: str
    port: str
    state: str
    uptime_s: float | None
    url: str
    image: str

    @property
    def uptime(self) -> str:
        return format_duration(self.uptime_s) if self.uptime_s is not None else "-"


def format_duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def _parse_time(text: str) -> datetime | None:
    if not text or text.startswith("0001-"):
        return None
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text)
    if not m:
        return None
    frac = (m.group(2) or ".0")[:7]
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    try:
        return datetime.fromisoformat(m.group(1) + frac + tz)
    except ValueError:
        return None


def _state(container: Any) -> tuple[str, str, float | None]:
    """(Docker's status, the state ``ps`` shows, the uptime in seconds)."""
    state = container.attrs.get("State") or {}
    status = state.get("Status") or container.status
    if status == "exited":
        return status, f"exited ({state.get('ExitCode')})", None
    if status != "running":
        return status, status, None
    # "healthy", "starting", "unhealthy" say more than "running" when the image has a HEALTHCHECK.
    health = (state.get("Health") or {}).get("Status")
    started = _parse_time(state.get("StartedAt", ""))
    uptime = max(0.0, (datetime.now(UTC) - started).total_seconds()) if started else None
    return status, health or status, uptime


def _row(container: Any) -> PsRow:
    run = RunLabels.of(container)
    labels = bundle_labels_or_none(container)
    status, shown, uptime = _state(container)
    image = container.image
    return PsRow(
        name=container.name,
        model=labels.model if labels else "",
        served_model_name=labels.served_model_name if labels else "",
        engine=labels.engine if labels else "",
        device=labels.device if labels else "",
        host=run.host,
        port=run.port,
        state=shown,
        uptime_s=uptime,
        url=where(container) if status == "running" else "",
        image=(image.tags[0] if image and image.tags else (container.attrs.get("Image") or "")[:19]),
    )


def ps(client: Any, *, all: bool = True) -> list[PsRow]:  # noqa: A002
    """The containers ezrunner started here (running and stopped), by name."""
    found = client.containers.list(all=all, filters={"label": f"{RUN_LABEL_MANAGED}=true"})
    return sorted((_row(c) for c in found), key=lambda r: r.name)


def get_managed(client: Any, name: str) -> Any:
    """The ezrunner container called ``name`` (or raise a one-line error)."""
    c = docker_api.container_or_none(client, name)
    if c is None or not RunLabels.of(c).managed:
        names = ", ".join(r.name for r in ps(client)) or "none"
        raise EzError(f"no ezrunner container named {name!r} (running here: {names})", hint="`ezrunner ps` lists them")
    return c


def stop(client: Any, name: str, *, remove: bool = False, timeout: int = 15) -> str:
    """Stop the ezrunner container ``name`` (and remove it with ``remove``).
    Returns a one-line summary. The image stays (``docker rmi`` removes it)."""
    from docker.errors import DockerException

    c = get_managed(client, name)
    try:
        c.reload()
        was = c.status
        if was in RUNNING_STATES:
            c.stop(timeout=timeout)
        if remove:
            c.remove(force=True)
            return f"stopped and removed {name}" if was in RUNNING_STATES else f"removed {name} (was {was})"
    except DockerException as exc:
        raise EzError(f"cannot stop {name}: {docker_api.api_message(exc)}") from None
    return f"stopped {name}" if was in RUNNING_STATES else f"{name} was not running ({was})"
