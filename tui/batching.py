"""Time-based batching of lines produced in a worker thread (50-250 ms)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable


class LineBatcher:
    """Collect lines in a worker thread and hand them on in batches: at most one
    ``flush`` call every ``interval`` seconds (plus a final one). ``flush`` is the
    only thing that crosses to the UI thread, e.g.
    ``lambda batch: app.call_from_thread(log.append_lines, batch)``."""

    def __init__(self, flush: Callable[[list[str]], None], interval: float = 0.1) -> None:
        if not 0.05 <= interval <= 0.25:
            raise ValueError("interval must be between 0.05 and 0.25 s")
        self._flush = flush
        self.interval = interval
        self._pending: list[str] = []
        self._last = time.monotonic()
        self._lock = threading.Lock()
        self.flushes = 0

    def add(self, lines: Iterable[str]) -> None:
        with self._lock:
            self._pending.extend(lines)
            due = time.monotonic() - self._last >= self.interval
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
            self._last = time.monotonic()
        if batch:
            self.flushes += 1
            self._flush(batch)
