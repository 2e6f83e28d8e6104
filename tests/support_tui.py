"""Fixtures for the TUI tests: the real embedded server on 127.0.0.1, and a
deliberately broken OpenAI-compatible server that fails in the middle of a stream."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedServer:
    def __init__(self, base_url: str, api_key: str, model: str, proc: subprocess.Popen) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.model = model
        self.proc = proc


@pytest.fixture(scope="session")
def embedded_server(tiny_model_dir, tmp_path_factory):
    """``python -m ezrunner.images.server`` serving the tiny model on 127.0.0.1 with
    an API key; stopped at the end of the session."""
    if importlib.util.find_spec("ezrunner.images.server.__main__") is None:
        pytest.skip("the embedded server (issue 4) is not in this checkout yet")
    port = free_port()
    key = "tui-test-key"
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = dict(os.environ, EZRUNNER_API_KEY=key)
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "ezrunner.images.server", str(tiny_model_dir),
                "--host", "127.0.0.1", "--port", str(port), "--served-model-name", "tiny",
                "--device", "cpu",
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"embedded server exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"embedded server not ready after 180 s: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield EmbeddedServer(f"http://127.0.0.1:{port}/v1", key, "tiny", proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Broken)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
