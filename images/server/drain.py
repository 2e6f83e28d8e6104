"""Graceful drain on SIGTERM (what Kubernetes sends before it removes a pod).

On the first SIGTERM the server keeps listening: ``/ready`` answers 503 at once (so
the pod leaves the Service's endpoints), and the requests already admitted run on,
streams to their ``data: [DONE]``. The server exits when none is left, or when the
drain timeout (``EZRUNNER_DRAIN_TIMEOUT`` seconds) has passed. A second SIGTERM, or
SIGINT, stops it at once as before.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from types import FrameType

import uvicorn

from .state import ServerState

log = logging.getLogger("ezrunner_server")

DRAIN_ENV = "EZRUNNER_DRAIN_TIMEOUT"
DEFAULT_DRAIN_S = 10.0  # within `docker stop`'s and `ezrunner stop`'s grace


def drain_timeout(environ: dict[str, str] | os._Environ[str] = os.environ) -> float:
    """The drain timeout in seconds from the environment (a bad value: the default)."""
    try:
        value = float(environ.get(DRAIN_ENV, DEFAULT_DRAIN_S))
    except ValueError:
        return DEFAULT_DRAIN_S
    return max(0.0, value)


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose first SIGTERM drains (see the module doc)."""

    def __init__(self, config: uvicorn.Config, state: ServerState, timeout_s: float) -> None:
        super().__init__(config)
        self.state = state
        self.timeout_s = timeout_s
        self.deadline: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self.deadline is None and not self.should_exit:
            self.deadline = time.monotonic() + self.timeout_s
            self.state.draining = True
            log.info("SIGTERM: draining (ready -> 503; up to %.0f s for %d request(s) in flight)",
                     self.timeout_s, self.in_flight())
            return
        super().handle_exit(sig, frame)

    def in_flight(self) -> int:
        admission = self.state.admission
        return 0 if admission is None else admission.running + admission.waiting

    async def on_tick(self, counter: int) -> bool:
        if self.deadline is not None and not self.should_exit:
            left = self.in_flight()
            if left == 0 or time.monotonic() >= self.deadline:
                log.info("drained; shutting down" if left == 0 else "drain timeout: %d request(s) cut", left)
                self.should_exit = True
        return await super().on_tick(counter)
