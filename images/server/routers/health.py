"""GET /health, /ready and /metrics: open to probes (no API key)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..errors import APIError
from .deps import ready_engine, server_state

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> dict[str, str]:
    """200 while the process lives."""
    return {"status": "ok", "phase": server_state(request).phase}


@router.get("/ready")
async def ready(request: Request) -> dict[str, str]:
    """200 once the model is loaded and the generation loop runs; 503 (OpenAI error shape) before,
    and from the first SIGTERM on (drain)."""
    state = server_state(request)
    if state.draining:
        raise APIError(503, "The server is shutting down.", code="draining")
    engine = ready_engine(state)
    if not engine.is_alive():
        raise APIError(503, "The generation loop has stopped.", code="engine_dead")
    return {"status": "ready", "model": state.config.served_model_name}


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(server_state(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)
