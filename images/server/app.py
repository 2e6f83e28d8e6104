"""The FastAPI application: OpenAI-compatible endpoints, health, readiness, metrics.

The routes live in ``routers/`` (one APIRouter per endpoint family), the request and
response models in ``protocol``, the work behind the endpoints in ``serving``.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .config import ServerConfig
from .errors import APIError, error_body, error_type_for
from .middleware import MetricsAndLimits
from .routers import chat, completions, embeddings, health, models
from .serving import new_id
from .state import ServerState

log = logging.getLogger("ezrunner_server")

ROUTERS = (health.router, models.router, chat.router, completions.router, embeddings.router)


async def _api_error(_request: Request, exc: APIError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    return JSONResponse(error_body(str(exc.detail), error_type_for(exc.status_code), None, code),
                        status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    rid = getattr(request.state, "request_id", None) or new_id("req")
    log.error("request %s failed: %s: %s", rid, type(exc).__name__, exc, exc_info=exc)
    return JSONResponse(error_body(f"Internal server error (request id {rid}).", "server_error", None,
                                   "internal_error"), status_code=500, headers={"X-Request-Id": rid})


def create_app(config: ServerConfig, *, load: bool = True) -> MetricsAndLimits:
    """The ASGI application; ``app.state`` is the :class:`ServerState` (the CLI watches it).
    ``load=False`` leaves the model unloaded (tests put an engine in ``state`` themselves)."""
    state = ServerState(config, load=load)
    app = FastAPI(title="ezrunner server", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=state.lifespan)
    app.state.server = state
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    for router in ROUTERS:
        app.include_router(router)
    return MetricsAndLimits(app, state)
