"""Fixtures for the TUI tests. The chat tests use the real embedded server of
support_server (``gen_server``, one per session); here is only a deliberately
broken OpenAI-compatible server that fails in the middle of a stream, which the
real server cannot be made to do."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

import pytest
from conftest import local_http_server


def chat_url(server) -> str:
    """The OpenAI base URL of a ``support_server.RunningServer``."""
    return f"{server.base_url}/v1"


class _Broken(BaseHTTPRequestHandler):
    """Streams two content chunks, then an OpenAI error object, then closes."""

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # /v1/models
        body = json.dumps({"object": "list", "data": [{"id": "broken", "object": "model", "created": 0, "owned_by": "t"}]})
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        self.rfile.read(length)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        for text in ("Hello", " there"):
            chunk = {
                "id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "broken",
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
            }
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        err = {"error": {"message": "engine failure: CUDA out of memory", "type": "server_error", "param": None, "code": "engine_error"}}
        self.wfile.write(f"data: {json.dumps(err)}\n\n".encode())
        self.wfile.flush()


@pytest.fixture
def broken_stream_server():
    with local_http_server(_Broken, "/v1") as url:
        yield url


# ---------------------------------------------------------------------------- NVML
class _Mem:
    def __init__(self, total: int, used: int) -> None:
        self.total = total
        self.used = used
        self.free = total - used


class _Util:
    def __init__(self, gpu: int, memory: int) -> None:
        self.gpu = gpu
        self.memory = memory


class FakeNvmlError(Exception):
    pass


class FakeNvml:
    """The few pynvml calls ezrunner makes, for a machine with ``gpus`` =
    [(name, total_bytes, (major, minor))]; ``missing=True`` behaves like a host
    without the NVIDIA driver (nvmlInit fails). Injected at EzRunnerApp(nvml=...)."""

    def __init__(self, gpus=(), *, missing: bool = False, utilization: int = 37) -> None:
        self.gpus = list(gpus)
        self.missing = missing
        self.utilization = utilization
        self.inits = 0

    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        if self.missing:
            raise FakeNvmlError("NVML Shared Library Not Found")
        self.inits += 1

    def nvmlShutdown(self) -> None:  # noqa: N802
        pass

    def nvmlSystemGetDriverVersion(self) -> str:  # noqa: N802
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion(self) -> int:  # noqa: N802
        return 12040

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        return index

    def nvmlDeviceGetName(self, handle: int) -> str:  # noqa: N802
        return self.gpus[handle][0]

    def nvmlDeviceGetUUID(self, handle: int) -> str:  # noqa: N802
        return f"GPU-0000000{handle}-aaaa-bbbb-cccc-000000000000"

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> _Mem:  # noqa: N802
        return _Mem(self.gpus[handle][1], 2 * 1024**3)

    def nvmlDeviceGetCudaComputeCapability(self, handle: int) -> tuple[int, int]:  # noqa: N802
        return self.gpus[handle][2]

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> _Util:  # noqa: N802
        return _Util(self.utilization, 10)


A100_80G = ("NVIDIA A100-SXM4-80GB", 81920 * 1024**2, (8, 0))


# -------------------------------------------------------------------------- pilots
NO_HUB = {"hf": "http://127.0.0.1:9", "modelscope": "http://127.0.0.1:9", "timeout": 3}


async def type_into(pilot, app, selector: str, text: str) -> None:
    """Fill an Input: typed key by key when short, set at once when long (paths)."""
    from textual.widgets import Input

    box = app.screen.query_one(selector, Input)
    box.focus()
    box.value = ""
    if len(text) > 8:  # typing is one key event per character
        box.value = text
        await pilot.pause()
    elif text:
        await pilot.press(*text)


async def until(pilot, condition, timeout: float = 20.0, what: str = "condition"):
    """Let the app run until ``condition()`` holds (workers post their results
    asynchronously); fails with ``what`` after ``timeout`` seconds."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        await pilot.pause()
        try:
            if condition():
                return
        except Exception:  # noqa: BLE001 - the screen may not be there yet
            pass
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}; screen={pilot.app.screen!r}")
        await pilot.pause(0.05)


def screen_text(app) -> str:
    """The visible screen as plain text."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())  # noqa: SLF001


# ------------------------------------------------------------------ recorded hub
@pytest.fixture(scope="module")
def replay_hub():
    """The hub seam pointed at a replay of recorded hub API responses
    (tests/fixtures/hub, served by test_discovery's handler)."""
    from test_discovery import _Replay

    with local_http_server(_Replay) as url:
        yield {"hf": url, "modelscope": url, "timeout": 10}


@pytest.fixture
def private_caches(monkeypatch, tmp_path):
    """Empty hub caches, no token, not offline: only the replay server answers."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
