"""The base of every ezrunner screen."""

from __future__ import annotations

from typing import TypeVar

from textual.screen import Screen
from textual.worker import Worker

ResultType = TypeVar("ResultType")


class EzScreen(Screen[ResultType]):
    """Forwards its workers' state changes to the App's one handler
    (``Worker.StateChanged`` does not bubble), so a worker that dies with an
    unexpected error shows the error modal wherever it ran."""

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        self.app.handle_worker_state(event)  # type: ignore[attr-defined]
