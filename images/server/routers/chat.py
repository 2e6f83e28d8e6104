"""POST /v1/chat/completions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from ..engine import GENERATE
from ..protocol import ChatCompletionRequest
from ..serving import ChatAPI, generate
from .deps import check_auth, read_request, require_ready, server_state

router = APIRouter(dependencies=[Depends(check_auth)])


@router.post(ChatAPI.path)
async def create_chat_completion(request: Request, engine=Depends(require_ready)) -> Response:
    body = await read_request(request, engine, ChatCompletionRequest, GENERATE, ChatAPI.path)
    return await generate(request, server_state(request), engine, ChatAPI, body)
