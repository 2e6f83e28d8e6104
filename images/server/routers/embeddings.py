"""POST /v1/embeddings."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from ..engine import EMBED
from ..protocol import EmbeddingRequest
from ..serving import embed
from .deps import check_auth, read_request, require_ready, server_state

router = APIRouter(dependencies=[Depends(check_auth)])
PATH = "/v1/embeddings"


@router.post(PATH)
async def create_embeddings(request: Request, engine=Depends(require_ready)) -> Response:
    body = await read_request(request, engine, EmbeddingRequest, EMBED, PATH)
    return await embed(request, server_state(request), engine, body)
