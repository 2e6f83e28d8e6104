"""The one fold of progress events: ``core/events.py`` events -> what a display shows.

Every display (the CLI's rich renderer, the TUI's build and run screens) folds the
same event objects through :class:`ProgressState` and draws from the state: bytes
done/total per phase and per item with rate and ETA, the latest step, labels,
notices, which phases finished and how. UI-free: no rich, no textual.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ezrunner.core import events as ev


@dataclass
class Meter:
    """Bytes (or steps) ``done`` of ``total``, with the times to derive rate and ETA."""

    done: int = 0
    total: int | None = None
    started_at: float | None = None
    updated_at: float | None = None

    def rate(self) -> float | None:
        if self.started_at is None or self.updated_at is None:
            return None
        span = self.updated_at - self.started_at
        return self.done / span if span > 0 and self.done else None

    def eta(self) -> float | None:
        rate = self.rate()
        if rate is None or self.total is None:
            return None
        return max(self.total - self.done, 0) / rate


class Step(NamedTuple):
    """The latest ``StepProgress`` of a phase (a Dockerfile step; for "ready": elapsed
    seconds of the timeout and the latest log line)."""

    index: int
    count: int | None
    name: str


@dataclass
class ProgressState:
    """Everything the displays show, folded from the events of any phase."""

    phase: str = ""  # the phase started last
    phase_labels: dict[str, str] = field(default_factory=dict)
    totals: dict[str, Meter] = field(default_factory=dict)  # the phase as a whole
    items: dict[str, dict[str, Meter]] = field(default_factory=dict)  # phase -> item -> progress
    current_item: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # the item text of a phase's own progress
    steps: dict[str, Step] = field(default_factory=dict)
    finished: dict[str, bool] = field(default_factory=dict)  # phase -> ok
    details: dict[str, str] = field(default_factory=dict)  # phase -> PhaseFinished.detail
    data: dict[str, dict[str, Any]] = field(default_factory=dict)  # phase -> PhaseFinished.data, as is
    notices: list[tuple[str, str]] = field(default_factory=list)  # (level, message)
    error: str | None = None
    log_lines: int = 0
    # phases that report their own total (docker load: the stream; its layers are items)
    whole: set[str] = field(default_factory=set)

    def fold(self, event: ev.Event, now: float) -> list[str]:
        """Apply one event at time ``now``; returns the log lines it carries."""
        if isinstance(event, ev.PhaseStarted):
            self._started(event, now)
        elif isinstance(event, ev.BytesProgress):
            self._bytes(event, now)
        elif isinstance(event, ev.StepProgress):
            self.steps[event.phase] = Step(event.index, event.count, event.name)
        elif isinstance(event, ev.LogLines):
            self.log_lines += len(event.lines)
            return list(event.lines)
        elif isinstance(event, ev.Notice):
            self.notices.append((event.level, event.message))
            return [f"[{event.level}] {event.message}"]
        elif isinstance(event, ev.PhaseFinished):
            self._finished(event)
        return []

    def item(self, phase: str, name: str) -> Meter | None:
        """The progress of one item (a file, a layer) of a phase; None when the
        events for that name were the phase's own progress."""
        return self.items.get(phase, {}).get(name)

    def _started(self, event: ev.PhaseStarted, now: float) -> None:
        self.phase = event.phase
        self.phase_labels[event.phase] = event.label or event.phase
        self.totals[event.phase] = Meter(0, event.total, now, now)

    def _is_aggregate(self, event: ev.BytesProgress) -> bool:
        """Progress of the whole phase: no item, or an item that is only a label
        (its total is the phase's own total, e.g. "12.3 MB/s" or the bundle name)."""
        phase_total = self.totals.get(event.phase)
        return not event.item or (
            phase_total is not None and phase_total.total is not None and event.total == phase_total.total
        )

    def _bytes(self, event: ev.BytesProgress, now: float) -> None:
        phase = event.phase
        per = self.items.setdefault(phase, {})
        total = self.totals.setdefault(phase, Meter(started_at=now))
        if self._is_aggregate(event):
            self.whole.add(phase)
            if event.item:
                self.labels[phase] = event.item
            total.done, total.updated_at = event.done, now
            if event.total is not None:
                total.total = event.total
            return
        item = per.setdefault(event.item, Meter(started_at=now))
        item.done, item.updated_at = event.done, now
        if event.total is not None:
            item.total = event.total
        self.current_item[phase] = event.item
        if phase not in self.whole:  # else the items are part of what the phase reports itself
            total.done = sum(i.done for i in per.values())
            total.updated_at = now

    def _finished(self, event: ev.PhaseFinished) -> None:
        self.finished[event.phase] = event.ok
        self.details[event.phase] = event.detail
        if event.data:
            self.data[event.phase] = dict(event.data)
        if not event.ok:
            self.error = event.detail or f"{event.phase} failed"
