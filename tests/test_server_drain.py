"""The embedded server drains on SIGTERM: /ready turns 503 at once, a stream in flight
ends with [DONE], then the process exits by itself (issue 17)."""

from __future__ import annotations

import signal
import sys
import threading
import time

import httpx
import pytest
from support_server import free_port, sse_events, start_server

MSG = [{"role": "user", "content": "Tell me about the bundle."}]


@pytest.fixture
def drain_server(tiny_model_dir, tmp_path):
    port = free_port()
    cmd = [sys.executable, "-m", "ezrunner.images.server", str(tiny_model_dir), "--port", str(port),
           "--served-model-name", "tiny-drain", "--max-concurrency", "2"]
    server = start_server("drain", cmd, tmp_path / "drain.log", port,
                          env={"EZRUNNER_API_KEY": "", "EZRUNNER_DRAIN_TIMEOUT": "60"})
    yield server
    server.stop()


def _stream(url: str, body: dict, out: dict, first: threading.Event) -> None:
    lines: list[str] = []
    with httpx.stream("POST", url, json=body, timeout=120) as r:
        out["status"] = r.status_code
        for line in r.iter_lines():
            lines.append(line)
            if line.startswith("data: "):
                first.set()
    out["events"] = sse_events(lines)


def test_sigterm_drains_the_stream_in_flight_and_ready_turns_503(drain_server):
    body = {"model": "tiny-drain", "messages": MSG, "max_tokens": 400, "stream": True, "ignore_eos": True}
    out: dict = {}
    first = threading.Event()
    t = threading.Thread(target=_stream, args=(f"{drain_server.base_url}/v1/chat/completions", body, out, first),
                         daemon=True)
    t.start()
    assert first.wait(60), "the stream never started"
    drain_server.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)  # the signal is handled between event-loop ticks
    ready = httpx.get(f"{drain_server.base_url}/ready", timeout=10)
    assert ready.status_code == 503, ready.text
    assert ready.json()["error"]["code"] == "draining"
    assert drain_server.process.poll() is None, "the server must not exit while a stream runs"
    t.join(timeout=90)
    assert out.get("status") == 200
    events = out["events"]
    assert events[-1] == "[DONE]"
    finish = [e for e in events[:-1] if e["choices"] and e["choices"][0].get("finish_reason")]
    assert finish and finish[-1]["choices"][0]["finish_reason"] == "length"
    assert drain_server.process.wait(timeout=30) == 0
    log = drain_server.log()
    assert "SIGTERM: draining" in log and "drained; shutting down" in log


def test_sigterm_when_idle_exits_at_once(drain_server):
    t0 = time.monotonic()
    drain_server.process.send_signal(signal.SIGTERM)
    assert drain_server.process.wait(timeout=20) == 0
    assert time.monotonic() - t0 < 10


def test_drain_timeout_from_the_environment():
    from ezrunner.images.server.drain import DEFAULT_DRAIN_S, drain_timeout

    assert drain_timeout({"EZRUNNER_DRAIN_TIMEOUT": "45"}) == 45.0
    assert drain_timeout({"EZRUNNER_DRAIN_TIMEOUT": "soon"}) == DEFAULT_DRAIN_S
    assert drain_timeout({"EZRUNNER_DRAIN_TIMEOUT": "-3"}) == 0.0
    assert drain_timeout({}) == DEFAULT_DRAIN_S
