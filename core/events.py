"""Progress events: the one vocabulary that core functions report in.

Long operations (download, build, export, verify, load, start) are generators or
take an ``on_event`` callback, and yield/emit these frozen dataclasses. The CLI
renders them with rich; the TUI renders the same objects. Add a new event type
here only when none of these fits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

Phase = Literal["download", "build", "export", "verify", "load", "start", "ready", "logs", "plan", "probe", "search"]


@dataclass(frozen=True)
class Event:
    phase: str


@dataclass(frozen=True)
class PhaseStarted(Event):
    """A phase begins; ``total`` is its size in bytes (or steps) when known."""

    label: str = ""
    total: int | None = None


@dataclass(frozen=True)
class BytesProgress(Event):
    """``done`` of ``total`` bytes (``total`` None when unknown) for ``item``
    (a file name, a layer id or "" for the phase as a whole)."""

    item: str = ""
    done: int = 0
    total: int | None = None


@dataclass(frozen=True)
class StepProgress(Event):
    """Step ``index`` (1-based) of ``count`` began, e.g. a Dockerfile step."""

    index: int = 0
    count: int | None = None
    name: str = ""


@dataclass(frozen=True)
class LogLines(Event):
    """A batch of log lines (build output, container logs)."""

    lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class Notice(Event):
    """Something the user should read: level is info, warning or error."""

    level: Literal["info", "warning", "error"] = "info"
    message: str = ""


@dataclass(frozen=True)
class PhaseFinished(Event):
    ok: bool = True
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


EventCallback = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """The default callback: drop events."""


def drive(events: Iterable[Event], on_event: EventCallback, after: Callable[[], None] | None = None) -> Any:
    """Hand every event of a generator to ``on_event`` (then call ``after``, e.g. a
    cancel check); returns what the generator returns: the callback form of
    ``result = yield from step()`` for a caller that is not a generator."""
    it = iter(events)
    while True:
        try:
            event = next(it)
        except StopIteration as stop:
            return stop.value
        on_event(event)
        if after is not None:
            after()
