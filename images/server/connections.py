"""Bounded connections under uvicorn: a cap on open connections, a header timeout, and a
grace period for connections whose client stopped reading.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive``, but a fresh
connection that sends nothing, or trickles its headers a byte at a time (slowloris), is
kept for ever, and every one holds a file descriptor. :class:`ConnectionGuard` keeps the
open connections in the order they last became idle and, once a second:

- closes a connection that has been idle (no request in progress: just opened, or
  between two requests) for longer than ``header_timeout``;
- aborts a connection that has been closing for longer than ``CLOSING_GRACE`` (the
  server is done with it, but its client does not read what is left in the buffer).

At ``max_connections``, a new connection closes the longest-idle one; when every open
connection has a request in progress, the new one is answered 503 and closed. ``/health``
keeps answering: idle floods and slowloris only ever hold idle connections.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from typing import Any

from .config import ServerConfig
from .errors import error_body
from .metrics import ServerMetrics

log = logging.getLogger("ezrunner_server")

CLOSING_GRACE = 5.0  # seconds a closing connection may take to flush what is left
SWEEP_INTERVAL = 1.0
FD_RESERVE = 256  # file descriptors kept for the model, the tokenizer and the log


def _busy_response(limit: int) -> bytes:
    body = json.dumps(error_body(f"The server has {limit} connections open, all with a request in progress. "
                                 "Retry shortly.", "service_unavailable", None, "too_many_connections")).encode()
    head = (f"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "retry-after: 1\r\nconnection: close\r\n\r\n")
    return head.encode("ascii") + body


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft limit on open files towards the hard one; returns how many connections
    fit (``wanted``, or fewer when the hard limit leaves less)."""
    try:
        import resource
    except ImportError:  # not on Linux or macOS: nothing to raise
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - FD_RESERVE))


def is_idle(protocol: Any) -> bool:
    """No request in progress on this connection (uvicorn's h11 and httptools protocols both
    keep the current request in ``cycle``)."""
    cycle = getattr(protocol, "cycle", None)
    return cycle is None or cycle.response_complete


class ConnectionGuard:
    def __init__(self, config: ServerConfig, metrics: ServerMetrics | None = None, *,
                 limit: int | None = None, clock=time.monotonic) -> None:
        self.limit = limit or config.max_connections
        self.header_timeout = config.header_timeout
        self.metrics = metrics
        self.clock = clock
        self.open: OrderedDict[Any, float] = OrderedDict()  # protocol -> when it last became idle
        self.closing: dict[Any, float] = {}
        self._busy = _busy_response(self.limit)
        self._timer: asyncio.TimerHandle | None = None

    # -- called by the protocol
    def opened(self, protocol: Any, transport: asyncio.Transport) -> bool:
        """Register a new connection; False (after answering 503) when it is refused."""
        if len(self.open) >= self.limit and not self._evict_idle():
            transport.write(self._busy)
            transport.close()
            self._count("refused")
            log.warning("connection limit (%d) reached with every connection busy: refused one", self.limit)
            return False
        self.open[protocol] = self.clock()
        self._gauge()
        if self._timer is None:
            self._schedule(protocol.loop)
        return True

    def rested(self, protocol: Any) -> None:
        """A response is complete: the connection is idle again from now."""
        if protocol in self.open:
            self.open[protocol] = self.clock()
            self.open.move_to_end(protocol)

    def closed(self, protocol: Any) -> None:
        self.open.pop(protocol, None)
        self.closing.pop(protocol, None)
        self._gauge()

    # -- housekeeping
    def _evict_idle(self) -> bool:
        for protocol in self.open:
            if is_idle(protocol):
                self._drop(protocol, "evicted")
                return True
        return False

    def _drop(self, protocol: Any, reason: str) -> None:
        self.open.pop(protocol, None)
        self.closing.pop(protocol, None)
        transport = getattr(protocol, "transport", None)
        if transport is not None:
            transport.abort()
        self._count(reason)
        self._gauge()

    def sweep(self) -> None:
        """Close what idled too long, abort what closes too slowly (once a second)."""
        now = self.clock()
        for protocol, since in list(self.open.items()):
            transport = getattr(protocol, "transport", None)
            if transport is not None and transport.is_closing():
                started = self.closing.setdefault(protocol, now)
                if now - started > CLOSING_GRACE:
                    self._drop(protocol, "stalled_close")
            elif now - since > self.header_timeout and is_idle(protocol):
                self._drop(protocol, "idle_timeout")

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        def tick() -> None:
            try:
                self.sweep()
            finally:
                self._timer = loop.call_later(SWEEP_INTERVAL, tick)

        self._timer = loop.call_later(SWEEP_INTERVAL, tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _count(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.connections_closed.labels(reason=reason).inc()

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.connections_open.set(len(self.open))


def guarded_protocol(guard: ConnectionGuard) -> type:
    """uvicorn's HTTP protocol class (httptools when installed, else h11), reporting to ``guard``."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class GuardedHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            guard.opened(self, transport)

        def connection_lost(self, exc) -> None:
            guard.closed(self)
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            guard.rested(self)

    return GuardedHTTPProtocol


class LogRateLimit(logging.Filter):
    """Lets ``rate`` records a second through (bursts up to ``burst``); under abuse the rest
    are dropped and counted, and the next record that passes says how many were."""

    def __init__(self, rate: float = 20.0, burst: float = 200.0, clock=time.monotonic) -> None:
        super().__init__()
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens = burst
        self.last = clock()
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            self.dropped += 1
            return False
        self.tokens -= 1
        if self.dropped:
            record.msg = f"{record.getMessage()} [{self.dropped} log lines dropped before this one: over " \
                         f"{self.rate:g} lines/s]"
            record.args = ()
            self.dropped = 0
        return True


LOGGERS = ("uvicorn.access", "uvicorn.error", "ezrunner_server")


def limit_log_rate(rate: float = 20.0, burst: float = 200.0) -> LogRateLimit:
    """One shared budget for the access log, uvicorn's own warnings and the server's log."""
    limiter = LogRateLimit(rate, burst)
    for name in LOGGERS:
        logging.getLogger(name).addFilter(limiter)
    return limiter
