"""The build/export job: an App-owned thread worker (it outlives the build screen)
that runs ``core.pack`` and hands its events to the UI in batches.

The worker never touches a widget: every 100 ms it hands the events gathered so
far to ``BuildJob.deliver`` through ``call_from_thread``; the UI thread folds them
into ``BuildProgress`` (plain data) and the build screen renders that.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ezrunner.core import events as ev

if TYPE_CHECKING:
    from ezrunner.tui.app import EzRunnerApp

FLUSH_S = 0.1


@dataclass
class ItemProgress:
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


@dataclass
class BuildProgress:
    """Everything the build screen shows, folded from the events."""

    state: str = "idle"  # idle | running | done | failed | cancelled
    phase: str = ""
    phase_labels: dict[str, str] = field(default_factory=dict)
    totals: dict[str, ItemProgress] = field(default_factory=dict)  # per phase
    items: dict[str, dict[str, ItemProgress]] = field(default_factory=dict)  # phase -> item -> progress
    current_item: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # the label of a phase's aggregate progress
    step: tuple[int, int | None, str] | None = None
    finished: dict[str, bool] = field(default_factory=dict)
    notices: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None
    hint: str | None = None
    result: dict[str, Any] | None = None
    log_lines: int = 0

    def fold(self, event: ev.Event, now: float) -> list[str]:
        """Apply one event; returns log lines it carries (for the Log widget)."""
        phase = event.phase
        if isinstance(event, ev.PhaseStarted):
            self.phase = phase
            self.phase_labels[phase] = event.label or phase
            self.totals[phase] = ItemProgress(0, event.total, now, now)
        elif isinstance(event, ev.BytesProgress):
            per = self.items.setdefault(phase, {})
            phase_total = self.totals.get(phase)
            # progress of the whole phase: no item, or an item that is only a label
            # (its total is the phase's own total, e.g. "12.3 MB/s" or the bundle name)
            aggregate = not event.item or (
                phase_total is not None and phase_total.total is not None and event.total == phase_total.total
            )
            if aggregate and event.item:
                self.labels[phase] = event.item
            if not aggregate:
                item = per.setdefault(event.item, ItemProgress(started_at=now))
                item.done, item.updated_at = event.done, now
                if event.total is not None:
                    item.total = event.total
                self.current_item[phase] = event.item
                total = self.totals.setdefault(phase, ItemProgress(started_at=now))
                total.done = sum(i.done for i in per.values())
                total.updated_at = now
            else:
                total = self.totals.setdefault(phase, ItemProgress(started_at=now))
                total.done, total.updated_at = event.done, now
                if event.total is not None:
                    total.total = event.total
        elif isinstance(event, ev.StepProgress):
            self.step = (event.index, event.count, event.name)
        elif isinstance(event, ev.LogLines):
            self.log_lines += len(event.lines)
            return list(event.lines)
        elif isinstance(event, ev.Notice):
            self.notices.append((event.level, event.message))
            return [f"[{event.level}] {event.message}"]
        elif isinstance(event, ev.PhaseFinished):
            self.finished[phase] = event.ok
            if not event.ok:
                self.error = event.detail or f"{phase} failed"
            if event.data:
                merged = dict(self.result or {})
                merged.update(event.data)
                self.result = merged
        return []


class BuildJob:
    """Owns the worker and the progress; the screen attaches to it."""

    def __init__(self, app: EzRunnerApp, options: dict[str, Any]) -> None:
        self.app = app
        self.options = options
        self.progress = BuildProgress()
        self.log: list[str] = []
        self.listeners: list[Any] = []
        self.worker = None
        self._cancel = threading.Event()

    # ---- UI thread ------------------------------------------------------------------------------
    def start(self) -> None:
        self.progress.state = "running"
        self.worker = self.app.run_worker(
            self._run,
            thread=True,
            exclusive=True,
            exit_on_error=False,
            group="build",
            description="build and export",
        )

    def cancel(self) -> None:
        self._cancel.set()
        if self.worker is not None:
            self.worker.cancel()

    @property
    def running(self) -> bool:
        return self.progress.state == "running"

    def deliver(self, batch: list[ev.Event], final: dict[str, Any] | None = None) -> None:
        now = self._now()
        lines: list[str] = []
        for event in batch:
            lines.extend(self.progress.fold(event, now))
        if lines:
            self.log.extend(lines)
            del self.log[: max(len(self.log) - 10000, 0)]
        if final is not None:
            self.progress.state = final["state"]
            if final.get("error"):
                self.progress.error = final["error"]
                self.progress.hint = final.get("hint")
            if final.get("result"):
                merged = dict(self.progress.result or {})
                merged.update(final["result"])
                self.progress.result = merged
        for listener in list(self.listeners):
            listener(lines, final is not None)

    def _now(self) -> float:
        clock = self.app.clock
        return clock.time if clock is not None else time.monotonic()

    # ---- worker thread --------------------------------------------------------------------------
    def _run(self) -> None:
        from textual.worker import get_current_worker

        worker = get_current_worker()
        pending: list[ev.Event] = []
        lock = threading.Lock()
        last = [time.monotonic()]

        def cancelled() -> bool:
            return self._cancel.is_set() or worker.is_cancelled

        def flush(final: dict[str, Any] | None = None) -> None:
            with lock:
                batch, pending[:] = list(pending), []
                last[0] = time.monotonic()
            if batch or final is not None:
                self.app.call_from_thread(self.deliver, batch, final)

        def on_event(event: ev.Event) -> None:
            with lock:
                pending.append(event)
                due = time.monotonic() - last[0] >= FLUSH_S
            if due:
                flush()
            if cancelled():
                from ezrunner.tui.services import Cancelled

                raise Cancelled()

        from ezrunner.tui.app import error_text
        from ezrunner.tui.services import Cancelled, as_dict

        try:
            result = self.app.services.pack(on_event, cancelled, **self.options)
        except Cancelled:
            flush({"state": "cancelled", "error": "cancelled by the operator; temporaries removed"})
            return
        except Exception as exc:  # noqa: BLE001 - one line on the screen, the log stays
            message, hint = error_text(exc)
            flush({"state": "cancelled" if cancelled() else "failed", "error": message, "hint": hint})
            return
        if cancelled():
            flush({"state": "cancelled", "error": "cancelled by the operator; temporaries removed"})
            return
        data = as_dict(result)
        if isinstance(data, ev.PhaseFinished):
            data = data.data
        if not isinstance(data, dict):
            data = {}
        if self.progress.error and not data:
            flush({"state": "failed", "error": self.progress.error})
            return
        flush({"state": "done", "result": data})
