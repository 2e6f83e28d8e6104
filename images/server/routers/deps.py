"""Dependencies shared by the routers: the server state, the API key, readiness, the request body."""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from typing import Any

from fastapi import Request
from starlette.requests import ClientDisconnect

from ..engine import EMBED, GENERATE
from ..errors import APIError, RequestT, parse
from ..protocol import OpenAIRequest
from ..state import ServerState

CLOSE = {"Connection": "close"}  # the rest of the body is not read: the connection cannot be reused


def server_state(request: Request) -> ServerState:
    return request.app.state.server


async def check_auth(request: Request) -> None:
    """The /v1 endpoints need the API key when one is set (Bearer, or X-Api-Key)."""
    key = server_state(request).config.api_key
    if not key:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    given = token.strip() if scheme.lower() == "bearer" else ""
    if not given:
        given = request.headers.get("x-api-key", "")
    if not given or not hmac.compare_digest(given.encode(), key.encode()):
        raise APIError(401, "Missing or wrong API key. Send it as 'Authorization: Bearer <key>'.",
                       code="invalid_api_key")


def ready_engine(state: ServerState):
    """The engine, or 503 while the model loads (or after it failed to)."""
    if state.load_error:
        raise APIError(503, f"The model failed to load: {state.load_error}", code="model_load_failed")
    if not state.ready or state.engine is None:
        raise APIError(503, f"The model is still loading ({state.phase}).", code="model_loading",
                       headers={"Retry-After": "2"})
    return state.engine


async def require_ready(request: Request):
    return ready_engine(server_state(request))


# a \uD800-\uDFFF escape: the decoded string may hold a lone surrogate (not valid Unicode)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def decode_json(raw: bytes) -> dict[str, Any]:
    """The JSON object in ``raw``; 400 for anything else: not JSON, nested too deeply for the
    parser (``RecursionError``), or a string holding a lone UTF-16 surrogate, which no
    tokenizer or UTF-8 encoder accepts (JSON allows ``"\\ud800"``; Unicode does not)."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise APIError(400, "The body is nested too deeply.", code="invalid_json") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"The body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "The body must be a JSON object.", code="invalid_json")
    if _SURROGATE_ESCAPE.search(raw):  # rare: check that the escapes paired up
        try:
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise APIError(400, "The body holds a lone UTF-16 surrogate (such as \\ud800) in a string; "
                           "strings must be valid Unicode.", code="invalid_json") from None
        except RecursionError:
            raise APIError(400, "The body is nested too deeply.", code="invalid_json") from None
    return body


async def read_body(request: Request) -> dict[str, Any]:
    """The JSON object of the body, read up to the size limit (also without Content-Length)
    and within the body timeout (a client trickling its body holds a connection)."""
    state = server_state(request)
    config = state.config
    limit = state.body_limit(request.url.path)
    chunks = []
    size = 0
    try:
        async with asyncio.timeout(config.body_timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise APIError(413, f"Request body exceeds the limit of {limit} bytes.",
                                   code="request_too_large", headers=CLOSE)
                chunks.append(chunk)
    except ClientDisconnect:
        raise APIError(499, "Client closed the request.", code="client_closed_request") from None
    except TimeoutError:
        raise APIError(408, f"The request body did not arrive within {config.body_timeout:g} s.",
                       code="request_timeout", headers=CLOSE) from None
    return decode_json(b"".join(chunks))


def check_model(body: dict[str, Any], served_name: str) -> None:
    model = parse(OpenAIRequest, body).model
    if model is not None and model != served_name:  # the OpenAI client always sends it; curl users may not
        raise APIError(404, f"The model '{model}' does not exist. This server serves '{served_name}'.",
                       param="model", code="model_not_found")


def check_capability(engine, needed: str, endpoint: str, served_name: str) -> None:
    if engine.capability == needed:
        return
    what = {GENERATE: "text generation", EMBED: "embeddings"}[needed]
    have = {GENERATE: "a text-generation model", EMBED: "an embedding model"}[engine.capability]
    raise APIError(400, f"{endpoint} needs {what}, but '{served_name}' is {have}.", param="model",
                   code="capability_not_supported")


async def read_request(request: Request, engine, model: type[RequestT], needed: str,
                       endpoint: str) -> RequestT:
    """The validated request: body, then the model name (404), the engine's capability, the fields."""
    body = await read_body(request)
    served_name = server_state(request).config.served_model_name
    check_model(body, served_name)
    check_capability(engine, needed, endpoint, served_name)
    return parse(model, body)
