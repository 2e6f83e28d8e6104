"""One helper for "run this blocking work on a thread, hand its items to the caller".

Several core steps wrap a blocking library call (a hub download, a Docker log
stream, the bundle writer, a hub search with a deadline) so that the caller's
thread stays free to report progress, poll a cancel flag, or give up after a
deadline. They all use :class:`ThreadRelay`:

* the work runs as ``work(put, stop)`` on a daemon thread; it hands items to the
  caller with ``put(item)`` and should end soon after ``stop`` is set;
* the caller takes items with :meth:`ThreadRelay.get` (with a timeout) or
  :meth:`ThreadRelay.items` (a generator that polls ``on_idle`` while waiting);
* :meth:`ThreadRelay.result` returns the work's return value, or re-raises its
  exception on the caller's thread;
* leaving the ``with`` block (an exception, a closed generator) sets ``stop``
  and waits for the thread, so nothing is left running on a temporary that the
  caller is about to remove.

:func:`relay` is the generator form (``result = yield from relay(work)``) and
:func:`call_with_deadline` the one-value form with a time limit.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

Put = Callable[[Any], None]
Work = Callable[[Put, threading.Event], T]

_DONE = object()


class Empty(Exception):  # noqa: N818 - mirrors queue.Empty
    """No item arrived within the timeout (the work is still running)."""


class ThreadRelay(Generic[T]):
    """``work(put, stop)`` on a daemon thread; its items reach the caller in order."""

    def __init__(self, work: Work[T], *, name: str, maxsize: int = 0, join_timeout: float | None = None) -> None:
        self._work = work
        # Unbounded underneath: the end marker must never block. ``maxsize`` bounds
        # the work's items through a semaphore instead.
        self._queue: queue.Queue = queue.Queue()
        self._slots = threading.Semaphore(maxsize) if maxsize > 0 else None
        self.stop = threading.Event()
        self._box: dict[str, Any] = {}
        self._finished = False
        self._join_timeout = join_timeout
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # ---- the work's side
    def _put(self, item: Any) -> None:
        while not self.stop.is_set():
            if self._slots is None or self._slots.acquire(timeout=0.2):
                self._queue.put(item)
                return
        # stopped: nobody will take the item

    def _run(self) -> None:
        try:
            self._box["result"] = self._work(self._put, self.stop)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            self._box["error"] = exc
        finally:
            self._queue.put(_DONE)

    # ---- the caller's side
    def start(self) -> ThreadRelay[T]:
        self._thread.start()
        return self

    def __enter__(self) -> ThreadRelay[T]:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def finished(self) -> bool:
        """True once the work has returned or raised and every item was taken."""
        return self._finished

    def get(self, timeout: float | None = None) -> Any:
        """The next item; raises :class:`Empty` after ``timeout`` seconds and
        :class:`StopIteration` once the work is done and drained."""
        if self._finished:
            raise StopIteration
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise Empty from None
        if item is _DONE:
            self._finished = True
            self._thread.join()
            raise StopIteration
        if self._slots is not None:
            self._slots.release()
        return item

    def items(self, *, poll: float = 0.2, on_idle: Callable[[], None] | None = None) -> Iterator[Any]:
        """Every item as it arrives; ``on_idle`` runs after each item and every
        ``poll`` seconds without one (a cancel check may raise there)."""
        while True:
            try:
                item = self.get(timeout=poll)
            except Empty:
                if on_idle is not None:
                    on_idle()
                continue
            except StopIteration:
                return
            yield item
            if on_idle is not None:
                on_idle()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the work to end (dropping items); False on timeout."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def result(self) -> T:
        """The work's return value; re-raises the exception it ended with."""
        if "error" in self._box:
            raise self._box["error"]
        return self._box.get("result")  # type: ignore[return-value]

    def close(self) -> None:
        """Ask the work to stop and wait for it (up to ``join_timeout``)."""
        self.stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(self._join_timeout)


def relay(work: Work[T], *, name: str, poll: float = 0.2,
          on_idle: Callable[[], None] | None = None) -> Generator[Any, None, T]:
    """``result = yield from relay(work)``: yield the work's items live, then
    return its result (or raise its exception). Closing the generator stops it."""
    with ThreadRelay(work, name=name) as r:
        yield from r.items(poll=poll, on_idle=on_idle)
        return r.result()


class DeadlineExceeded(TimeoutError):
    """:func:`call_with_deadline` gave up waiting."""


def call_with_deadline(fn: Callable[[], T], timeout: float, *, name: str) -> T:
    """``fn()`` on a daemon thread; its value, its exception, or
    :class:`DeadlineExceeded` after ``timeout`` seconds (the thread is left to end
    on its own: a blocking SDK call cannot be interrupted)."""
    r: ThreadRelay[T] = ThreadRelay(lambda _put, _stop: fn(), name=name).start()
    if not r.wait(timeout):
        raise DeadlineExceeded(f"{name} did not answer within {timeout:g}s")
    return r.result()
