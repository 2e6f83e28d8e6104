"""POST /v1/completions (the legacy text API)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from ..engine import GENERATE
from ..protocol import CompletionRequest
from ..serving import CompletionAPI, generate
from .deps import check_auth, read_request, require_ready, server_state

router = APIRouter(dependencies=[Depends(check_auth)])


@router.post(CompletionAPI.path)
async def create_completion(request: Request, engine=Depends(require_ready)) -> Response:
    body = await read_request(request, engine, CompletionRequest, GENERATE, CompletionAPI.path)
    return await generate(request, server_state(request), engine, CompletionAPI, body)
