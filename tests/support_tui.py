"""Fixtures for the TUI tests. The chat tests use the real embedded server of
support_server (``gen_server``, one per session); here is only a deliberately
broken OpenAI-compatible server that fails in the middle of a stream, which the
real server cannot be made to do."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


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
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Broken)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
