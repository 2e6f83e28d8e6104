"""Issue 14, server items 5 and 6: bounded connections, slowloris, idle floods, a rate-limited
log, and streams whose client never reads. No timed assertions: the waits below are
deadlines for something that must happen, never measurements (those are in
tests/benchmarks/abuse_bench.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
import time
from types import SimpleNamespace

import httpx
import pytest
from ezrunner.images.server.config import ServerConfig
from ezrunner.images.server.connections import ConnectionGuard, LogRateLimit
from ezrunner.images.server.engine import Delta
from ezrunner.images.server.serving import Admission
from support_server import (
    RecordingTokenizer,
    app_with_engine,
    fake_generation_engine,
    free_port,
    start_server,
)

LIMIT = 12
CHAT = "/v1/chat/completions"
M = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def guarded(tiny_model_dir, tmp_path_factory):
    """The tiny Llama with a small connection limit and a 1 s header timeout."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("logs") / "guarded-server.log"
    cmd = [sys.executable, "-m", "ezrunner.images.server", str(tiny_model_dir), "--port", str(port),
           "--served-model-name", "tiny-g", "--max-connections", str(LIMIT), "--header-timeout", "1"]
    server = start_server("guarded", cmd, log_path, port, env={"EZRUNNER_API_KEY": ""})
    yield server
    server.stop()


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=30)


def _closed_by_server(sock: socket.socket, deadline: float = 30.0) -> bool:
    """True once the server closes ``sock`` (EOF or reset) before ``deadline`` seconds pass."""
    sock.settimeout(deadline)
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return True


def _closed(server, reason: str) -> float:
    return server.metrics().get(f'ezrunner_connections_closed_by_server_total{{reason="{reason}"}}', 0.0)


def test_an_idle_flood_past_the_limit_never_locks_out_health(guarded):
    idle = [_connect(guarded.port) for _ in range(LIMIT * 4)]  # each new one closes the longest-idle one
    try:
        for _ in range(3):
            r = httpx.get(f"{guarded.base_url}/health", timeout=30)
            assert r.status_code == 200
        # each connection past the limit closed one: by eviction, or (on a loaded machine,
        # when the 1 s header timeout comes first) as idle
        assert _closed(guarded, "evicted") + _closed(guarded, "idle_timeout") >= LIMIT * 3 - 1
        assert guarded.metrics()["ezrunner_connections_open"] <= LIMIT
    finally:
        for s in idle:
            s.close()


def test_slowloris_is_closed_after_the_header_timeout(guarded):
    before = _closed(guarded, "idle_timeout")
    sock = _connect(guarded.port)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    closed = False
    for i in range(300):  # one header byte every 0.1 s: never a complete request
        try:
            sock.sendall(b"X-a: b\r\n"[i % 8:i % 8 + 1])
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        time.sleep(0.1)
    assert closed or _closed_by_server(sock, 5), "the slowloris connection was kept"
    sock.close()
    assert _closed(guarded, "idle_timeout") > before
    assert httpx.get(f"{guarded.base_url}/health", timeout=30).status_code == 200


def test_at_the_limit_with_every_connection_busy_new_ones_get_a_clear_503(guarded):
    headers = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: 100\r\nExpect: 100-continue\r\n\r\n")
    busy = []
    try:
        for _ in range(LIMIT):  # headers in, the app reading the body (100 Continue), the body never finished
            s = _connect(guarded.port)
            s.sendall(headers)
            assert s.recv(1024).startswith(b"HTTP/1.1 100"), "no 100 Continue"
            s.sendall(b"{")
            busy.append(s)
        probe = _connect(guarded.port)
        answer = b"".join(iter(lambda: probe.recv(65536), b""))
        probe.close()
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503"), answer
        assert b"retry-after: 1" in head.lower()
        error = json.loads(payload)["error"]
        assert error["code"] == "too_many_connections" and error["type"] == "service_unavailable"
    finally:
        for s in busy:
            s.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{guarded.base_url}/health", timeout=30).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        pytest.fail("/health did not come back once the busy connections closed")
    assert _closed(guarded, "refused") >= 1


# ------------------------------------------------------------------------------------------ in-process


class _FakeProtocol:
    def __init__(self, loop) -> None:
        self.loop = loop
        self.cycle = None
        self.transport = SimpleNamespace(aborted=False, closing=False, written=b"")
        self.transport.abort = lambda: setattr(self.transport, "aborted", True)
        self.transport.is_closing = lambda: self.transport.closing
        self.transport.write = lambda data: setattr(self.transport, "written", self.transport.written + data)
        self.transport.close = lambda: setattr(self.transport, "closing", True)


async def test_the_guard_evicts_idle_times_out_idle_and_aborts_slow_closes():
    now = [0.0]
    guard = ConnectionGuard(ServerConfig(model_dir="", served_model_name="", max_connections=3, header_timeout=10),
                            clock=lambda: now[0])
    loop = asyncio.get_running_loop()
    a, b, c, d = (_FakeProtocol(loop) for _ in range(4))
    for p in (a, b, c):
        assert guard.opened(p, p.transport)
    a.cycle = SimpleNamespace(response_complete=False)  # a: a request in progress, never evicted
    assert guard.opened(d, d.transport) and b.transport.aborted and not a.transport.aborted  # b: the longest idle
    guard.closed(b)
    now[0] = 5.0
    guard.rested(c)  # c answered a request at t=5: idle from then on
    now[0] = 12.0
    guard.sweep()
    assert d.transport.aborted and not c.transport.aborted and not a.transport.aborted
    guard.closed(d)
    a.transport.closing = True  # done with a; its client does not read the rest
    guard.sweep()
    now[0] = 18.0
    guard.sweep()
    assert a.transport.aborted and c.transport.aborted  # c: idle since t=5
    assert not guard.open
    # every connection busy: a new one is refused with 503
    busy = [_FakeProtocol(loop) for _ in range(3)]
    for p in busy:
        assert guard.opened(p, p.transport)
        p.cycle = SimpleNamespace(response_complete=False)
    f = _FakeProtocol(loop)
    assert not guard.opened(f, f.transport)
    assert f.transport.written.startswith(b"HTTP/1.1 503") and f.transport.closing
    guard.stop()


def test_the_log_rate_limit_drops_and_then_counts():
    now = [0.0]
    limiter = LogRateLimit(rate=2, burst=3, clock=lambda: now[0])
    records = [logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, "line %d", (i,), None)
               for i in range(10)]
    passed = [limiter.filter(r) for r in records]
    assert passed == [True] * 3 + [False] * 7
    now[0] = 1.0  # two more lines' worth
    last = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, "line %d", (10,), None)
    assert limiter.filter(last)
    assert last.getMessage() == "line 10 [7 log lines dropped before this one: over 2 lines/s]"


# ------------------------------------------------------------------------------------------ non-readers


class _EndlessRequest:
    """A generation that never ends by itself (a client asking for a very long answer)."""

    def __init__(self) -> None:
        self.completion_tokens = 0
        self.first_token_at = None
        self.abandoned = False

    async def deltas(self):
        try:
            while True:
                self.completion_tokens += 1
                yield Delta("token ", False, None, self.completion_tokens)
                await asyncio.sleep(0)
        finally:
            self.abandon()

    def abandon(self) -> None:
        self.abandoned = True


async def test_a_stream_whose_client_reads_nothing_is_cancelled_and_frees_its_slot():
    request = _EndlessRequest()
    engine = fake_generation_engine(RecordingTokenizer())
    engine.submit = lambda *_a, **_k: request
    app = app_with_engine(engine, stream_write_timeout=0.2)
    state = app.state
    state.admission = Admission(1, 0, state.metrics)
    body = json.dumps({"messages": M, "max_tokens": 10, "stream": True}).encode()
    inbox = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict] = []

    async def receive():
        if inbox:
            return inbox.pop()
        await asyncio.Event().wait()  # the client never disconnects either

    async def send(message):
        sent.append(message)
        if message["type"] == "http.response.body" and len(sent) > 3:
            await asyncio.Event().wait()  # its buffers are full: this write never completes

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": CHAT, "raw_path": CHAT.encode(), "query_string": b"",
             "root_path": "", "headers": [(b"content-type", b"application/json"),
                                          (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "state": {}}
    await asyncio.wait_for(app(scope, receive, send), 60)  # returns: the stream was given up
    assert sent[0]["status"] == 200
    assert not any(m.get("more_body") is False for m in sent)  # never completed
    assert request.abandoned and state.admission.running == 0
    assert state.metrics.stalled._value.get() == 1
