"""GET /v1/models and /v1/models/{model}."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ..errors import APIError
from ..protocol import ModelCard, ModelList
from ..state import ServerState
from .deps import check_auth, server_state

router = APIRouter(dependencies=[Depends(check_auth)])


def model_card(state: ServerState) -> ModelCard:
    card = ModelCard(id=state.config.served_model_name, created=state.created)
    engine = state.engine
    if engine is not None:
        card.capability = engine.capability
        card.max_model_len = engine.max_model_len
        card.device = engine.device
        card.dtype = str(engine.model.dtype).removeprefix("torch.")
    return card


@router.get("/v1/models")
async def list_models(request: Request) -> JSONResponse:
    return JSONResponse(ModelList(data=[model_card(server_state(request))]).model_dump(exclude_none=True))


@router.get("/v1/models/{model:path}")
async def get_model(model: str, request: Request) -> JSONResponse:
    state = server_state(request)
    if model != state.config.served_model_name:
        raise APIError(404, f"The model '{model}' does not exist.", param="model", code="model_not_found")
    return JSONResponse(model_card(state).model_dump(exclude_none=True))
