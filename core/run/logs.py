"""A container's log lines: :class:`LineAssembler` turns byte chunks into lines,
:func:`follow_logs` streams them in batches (the Docker stream is read on a
:class:`~ezrunner.core.relay.ThreadRelay`), :func:`log_tail` reads the last few."""

from __future__ import annotations

import codecs
import contextlib
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

from ezrunner.core.relay import Empty, ThreadRelay

# How long the first line of a batch is waited for before the stop flag is looked at.
_IDLE_POLL = 0.25


class LineAssembler:
    """Reassemble text lines from byte chunks that are not line-aligned (and may
    split a UTF-8 character). ``\\n``, ``\\r\\n`` and a lone ``\\r`` (progress bars)
    end a line."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending = ""

    def feed(self, chunk: bytes) -> list[str]:
        text = self._pending + self._decoder.decode(chunk)
        if not text:
            return []
        # Keep a trailing "\r" pending: it may be the first half of "\r\n".
        hold_cr = text.endswith("\r")
        if hold_cr:
            text = text[:-1]
        parts = re.split(r"\r\n|\n|\r", text)
        self._pending = parts.pop() + ("\r" if hold_cr else "")
        return parts

    def flush(self) -> list[str]:
        text = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        text = text.rstrip("\r")
        return [text] if text else []


def log_tail(container: Any, n: int) -> list[str]:
    """The container's last ``n`` log lines (none when Docker cannot say)."""
    try:
        raw = container.logs(tail=n, stdout=True, stderr=True)
    except Exception:  # noqa: BLE001
        return []
    asm = LineAssembler()
    lines = asm.feed(raw) + asm.flush()
    return lines[-n:]


def follow_logs(
    container: Any,
    *,
    follow: bool = True,
    tail: int | str = "all",
    interval: float = 0.1,
    max_lines: int = 1000,
    stop_event: threading.Event | None = None,
) -> Iterator[tuple[str, ...]]:
    """Yield batches of whole log lines: everything that arrived within
    ``interval`` seconds (at most ``max_lines`` per batch), so a UI can append a
    batch at a time. Reads ``container.logs(stream=True, follow=follow)`` on a
    thread; closing the generator (or setting ``stop_event``) ends it. A stream
    that breaks ends the batches like its end does."""
    stream = container.logs(stream=True, follow=follow, tail=tail, stdout=True, stderr=True)

    def pump(put, stop: threading.Event) -> None:
        for chunk in stream:
            put(chunk)
            if stop.is_set():
                break

    relay: ThreadRelay[None] = ThreadRelay(pump, name="ezrunner-logs", maxsize=1024, join_timeout=1.0).start()
    asm = LineAssembler()
    stopped = stop_event.is_set if stop_event is not None else (lambda: False)
    try:
        while not relay.finished:
            try:
                batch = _gather(relay, asm, relay.get(timeout=_IDLE_POLL), interval, max_lines)
            except Empty:
                if stopped():
                    return
                continue
            except StopIteration:
                batch = asm.flush()
            for start in range(0, len(batch), max_lines):
                yield tuple(batch[start:start + max_lines])
            if stopped():
                return
    finally:
        relay.stop.set()
        with contextlib.suppress(Exception):
            stream.close()  # unblocks the pump's read
        relay.close()


def _gather(relay: ThreadRelay, asm: LineAssembler, first: bytes, interval: float, max_lines: int) -> list[str]:
    """``first`` and the chunks that follow within ``interval`` seconds, as lines
    (stops early at ``max_lines``; flushes the last partial line at the end)."""
    batch = asm.feed(first)
    deadline = time.monotonic() + interval
    while len(batch) < max_lines:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            batch.extend(asm.feed(relay.get(timeout=remaining)))
        except Empty:
            break
        except StopIteration:
            batch.extend(asm.flush())
            break
    return batch
