"""The build/export job: an App-owned thread worker (it outlives the build screen)
that runs ``core.pack`` and hands its events to the UI in batches.

The worker never touches a widget: every 100 ms it hands the events gathered so
far to ``BuildJob.deliver`` through ``call_from_thread``; the UI thread folds them
into ``BuildProgress`` (``core.progress.ProgressState``) and the build screen renders that.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ezrunner.core import events as ev
from ezrunner.core.progress import ProgressState

if TYPE_CHECKING:
    from ezrunner.tui.app import EzRunnerApp

FLUSH_S = 0.1


@dataclass
class BuildProgress(ProgressState):
    """The fold of the pack's events (``core.progress``) plus the job's own end:
    its state, the error's hint and the pack result."""

    state: str = "idle"  # idle | running | done | failed | cancelled
    hint: str | None = None
    result: dict[str, Any] | None = None


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
                self.progress.result = final["result"]
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
        data = as_dict(result) if result is not None else {}
        if self.progress.error and not data:
            flush({"state": "failed", "error": self.progress.error})
            return
        flush({"state": "done", "result": data})
