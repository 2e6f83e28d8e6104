"""Pure ASGI middleware around the application: request metrics and the body size limit."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from .errors import error_body
from .state import ServerState

ENDPOINTS = frozenset({
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models",
    "/health", "/ready", "/metrics",
})


def endpoint_label(path: str) -> str:
    if path in ENDPOINTS:
        return path
    return "/v1/models/{model}" if path.startswith("/v1/models/") else "other"


def _content_length(scope) -> int | None:
    length = None
    for k, v in scope.get("headers", []):
        if k == b"content-length":
            try:
                length = int(v)
            except ValueError:
                length = None
    return length


class MetricsAndLimits:
    """Counts every answer by endpoint and status, and refuses bodies over the size
    limit with 413 before they are read (the routers enforce it while reading too)."""

    def __init__(self, app, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            length, limit = _content_length(scope), self.state.body_limit(scope.get("path", ""))
            if length is not None and length > limit:
                resp = JSONResponse(error_body(f"Request body is {length} bytes; the limit is {limit} bytes.",
                                               "invalid_request_error", None, "request_too_large"), status_code=413,
                                    headers={"Connection": "close"})  # the body is not read
                await resp(scope, receive, send_wrapper)
                return
            await self.app(scope, receive, send_wrapper)
        finally:
            label = endpoint_label(scope.get("path", ""))
            self.state.metrics.requests.labels(endpoint=label, status=str(status["code"])).inc()
