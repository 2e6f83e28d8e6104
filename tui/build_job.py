"""The build/export job: an App-owned thread worker (it outlives the build screen)
that runs ``core.pack`` and hands its events to the UI in batches.

The worker never touches a widget: every 100 ms it hands the events gathered so
far to ``BuildJob.deliver`` through ``call_from_thread``; the UI thread folds them
into ``BuildProgress`` (``core.progress.ProgressState``) and the build screen renders that.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ezrunner.core import events as ev
from ezrunner.core.progress import ProgressState

if TYPE_CHECKING:
    from ezrunner.core.pack import PackOptions, PackResult
    from ezrunner.tui.app import EzRunnerApp

FLUSH_S = 0.1
CANCELLED = "cancelled by the operator; temporaries removed"


@dataclass(frozen=True)
class JobEnd:
    """How the job ended: ``state`` done | failed | cancelled, with the error's
    line and hint, or the pack result."""

    state: str
    error: str | None = None
    hint: str | None = None
    result: PackResult | None = None


@dataclass
class BuildProgress(ProgressState):
    """The fold of the pack's events (``core.progress``) plus the job's own end:
    its state, the error's hint and the pack result."""

    state: str = "idle"  # idle | running | done | failed | cancelled
    hint: str | None = None
    result: PackResult | None = None


class BuildJob:
    """Owns the worker and the progress; the screen attaches to it."""

    def __init__(self, app: EzRunnerApp, options: PackOptions) -> None:
        self.app = app
        self.options = options
        self.progress = BuildProgress()
        self.log: list[str] = []
        self.listeners: list[Callable[[list[str], bool], None]] = []
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

    def deliver(self, batch: list[ev.Event], final: JobEnd | None = None) -> None:
        now = self._now()
        lines: list[str] = []
        for event in batch:
            lines.extend(self.progress.fold(event, now))
        if lines:
            self.log.extend(lines)
            del self.log[: max(len(self.log) - 10000, 0)]
        if final is not None:
            self.progress.state = final.state
            if final.error:
                self.progress.error = final.error
                self.progress.hint = final.hint
            if final.result is not None:
                self.progress.result = final.result
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

        def flush(final: JobEnd | None = None) -> None:
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

        flush(self._pack(on_event, cancelled))

    def _pack(self, on_event: Callable[[ev.Event], None], cancelled: Callable[[], bool]) -> JobEnd:
        """Run the pack (worker thread); how it ended."""
        from ezrunner.tui.app import error_text
        from ezrunner.tui.services import Cancelled

        try:
            result = self.app.services.pack(self.options, on_event, cancelled)
        except Cancelled:
            return JobEnd("cancelled", CANCELLED)
        except Exception as exc:  # noqa: BLE001 - one line on the screen, the log stays
            message, hint = error_text(exc)
            return JobEnd("cancelled" if cancelled() else "failed", message, hint)
        if cancelled():
            return JobEnd("cancelled", CANCELLED)
        return JobEnd("done", result=result)
