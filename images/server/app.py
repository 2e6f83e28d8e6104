"""The FastAPI application: OpenAI-compatible endpoints, health, readiness, metrics."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import struct
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import protocol
from .config import LoadError, ServerConfig
from .engine import (
    EMBED,
    GENERATE,
    EngineFailure,
    GenerationParams,
    load_engine,
)
from .errors import APIError, error_body, error_type_for
from .metrics import ServerMetrics

log = logging.getLogger("ezrunner_server")

_ENDPOINTS = {
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models",
    "/health", "/ready", "/metrics",
}


class Admission:
    """Bounded admission in front of the engine: ``slots`` requests run at once
    (the continuous-batching manager batches them), up to ``queue`` more wait,
    anything beyond is refused with 429."""

    def __init__(self, slots: int, queue: int, metrics: ServerMetrics) -> None:
        self.slots = max(1, slots)
        self.queue = max(0, queue)
        self.metrics = metrics
        self._sem = asyncio.Semaphore(self.slots)
        self.running = 0
        self.waiting = 0

    async def acquire(self) -> None:
        if self._sem.locked() and self.waiting >= self.queue:
            self.metrics.rejected.inc()
            raise APIError(
                429,
                f"The server is at capacity ({self.running} requests running, {self.waiting} waiting). "
                "Retry shortly.",
                code="server_busy",
                headers={"Retry-After": "1"},
            )
        self.waiting += 1
        self.metrics.waiting.set(self.waiting)
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1
            self.metrics.waiting.set(self.waiting)
        self.running += 1
        self.metrics.running.set(self.running)

    def release(self) -> None:
        self.running -= 1
        self.metrics.running.set(self.running)
        self._sem.release()


class ServerState:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = ServerMetrics()
        self.engine = None
        self.ready = False
        self.load_error: str | None = None
        self.phase = "starting"
        self.created = int(time.time())
        self.admission: Admission | None = None
        self.on_load_failure: Callable[[str], None] | None = None
        self._thread: threading.Thread | None = None

    def start_loading(self) -> None:
        self._thread = threading.Thread(target=self._load, name="ezrunner-load", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        def progress(msg: str) -> None:
            self.phase = msg
            log.info("%s", msg)

        try:
            log.info("loading %s as %r", self.config.model_dir, self.config.served_model_name)
            t0 = time.perf_counter()
            self.engine = load_engine(self.config, self.metrics, progress)
            self.ready = True
            self.phase = "ready"
            self.metrics.ready.set(1)
            log.info("ready in %.1f s (serving %r)", time.perf_counter() - t0, self.config.served_model_name)
        except LoadError as exc:
            self._failed(str(exc))
        except Exception as exc:  # noqa: BLE001 - reported, then the process exits
            log.exception("loading the model failed")
            self._failed(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")

    def _failed(self, message: str) -> None:
        self.load_error = message
        self.phase = "failed"
        log.error("cannot serve the model: %s", message)
        if self.on_load_failure is not None:
            self.on_load_failure(message)

    def shutdown(self) -> None:
        if self.engine is not None:
            self.engine.stop()


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def _api_error_response(exc: APIError) -> JSONResponse:
    return _json(exc.status, exc.body(), exc.headers)


class _MetricsAndLimits:
    """Pure ASGI middleware: counts every answer by endpoint and status, and refuses
    bodies over the size limit with 413 before they are read."""

    def __init__(self, app, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        endpoint = path if path in _ENDPOINTS else ("/v1/models/{model}" if path.startswith("/v1/models/") else "other")
        status_holder = {"code": 500}
        limit = self.state.config.max_body_bytes

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status_holder["code"] = message["status"]
            await send(message)

        try:
            length = None
            for k, v in scope.get("headers", []):
                if k == b"content-length":
                    try:
                        length = int(v)
                    except ValueError:
                        length = None
            if length is not None and length > limit:
                resp = _json(413, error_body(
                    f"Request body is {length} bytes; the limit is {limit} bytes.",
                    "invalid_request_error", None, "request_too_large"))
                await resp(scope, receive, send_wrapper)
                return
            await self.app(scope, receive, send_wrapper)
        finally:
            self.state.metrics.requests.labels(endpoint=endpoint, status=str(status_holder["code"])).inc()


def create_app(config: ServerConfig, *, load: bool = True) -> FastAPI:
    state = ServerState(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.admission = Admission(config.max_concurrency, config.max_queue, state.metrics)
        if load:
            state.start_loading()
        try:
            yield
        finally:
            await asyncio.to_thread(state.shutdown)

    app = FastAPI(title="ezrunner server", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.server = state

    # ------------------------------------------------------------------ errors
    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError):
        return _api_error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException):
        code = "not_found" if exc.status_code == 404 else ("method_not_allowed" if exc.status_code == 405 else None)
        return _json(exc.status_code, error_body(str(exc.detail), error_type_for(exc.status_code), None, code),
                     getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        rid = getattr(request.state, "request_id", None) or _new_id("req")
        log.error("request %s failed: %s: %s", rid, type(exc).__name__, exc, exc_info=exc)
        return _json(500, error_body(f"Internal server error (request id {rid}).", "server_error", None,
                                     "internal_error"), {"X-Request-Id": rid})

    # ------------------------------------------------------------------ helpers
    import hmac

    def check_auth(request: Request) -> None:
        key = config.api_key
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

    def require_ready():
        if state.load_error:
            raise APIError(503, f"The model failed to load: {state.load_error}", code="model_load_failed")
        if not state.ready or state.engine is None:
            raise APIError(503, f"The model is still loading ({state.phase}).", code="model_loading",
                           headers={"Retry-After": "2"})
        return state.engine

    async def read_body(request: Request) -> dict:
        limit = config.max_body_bytes
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise APIError(413, f"Request body exceeds the limit of {limit} bytes.", code="request_too_large")
            chunks.append(chunk)
        raw = b"".join(chunks)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise APIError(400, f"The body is not valid JSON: {exc}", code="invalid_json") from None
        if not isinstance(body, dict):
            raise APIError(400, "The body must be a JSON object.", code="invalid_json")
        return body

    def tokenize_chat(engine, messages: list[dict[str, str]]) -> tuple[list[int], str]:
        tok = engine.tokenizer
        if not getattr(tok, "chat_template", None):
            raise APIError(400, "This model has no chat template; use /v1/completions.",
                           code="chat_template_missing")
        try:
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # noqa: BLE001 - jinja errors from the model's template
            raise APIError(400, f"The chat template rejected these messages: {exc}", param="messages",
                           code="invalid_messages") from None
        return list(tok(text, add_special_tokens=False)["input_ids"]), text

    def plan_generation(engine, prompt_ids: list[int], sp: protocol.SamplingParams) -> GenerationParams:
        n_prompt = len(prompt_ids)
        limit = engine.max_model_len
        if n_prompt == 0:
            raise APIError(400, "The prompt is empty.", param="prompt", code="empty_prompt")
        if sp.max_tokens is None:
            if n_prompt >= limit:
                raise APIError(400, f"This model's maximum context length is {limit} tokens. However, your "
                               f"prompt has {n_prompt} tokens, leaving no room for the completion.",
                               param="messages", code="context_length_exceeded")
            max_new = limit - n_prompt
        else:
            max_new = sp.max_tokens
            if n_prompt + max_new > limit:
                raise APIError(400, f"This model's maximum context length is {limit} tokens. However, you "
                               f"requested {n_prompt + max_new} tokens ({n_prompt} in the prompt, {max_new} for "
                               "the completion). Please reduce the prompt or max_tokens.",
                               param="max_tokens", code="context_length_exceeded")
        temperature = engine.default_temperature if sp.temperature is None else sp.temperature
        top_p = engine.default_top_p if sp.top_p is None else sp.top_p
        if (sp.presence_penalty or sp.frequency_penalty) and not engine.supports_request_sampling:
            name = "presence_penalty" if sp.presence_penalty else "frequency_penalty"
            raise APIError(400, f"'{name}' is not supported here: transformers' own sampler runs on this device "
                           "and has no per-request penalties (only 0 is accepted)", param=name,
                           code="unsupported_parameter")
        return GenerationParams(max_new_tokens=max_new, temperature=temperature, top_p=top_p, stop=sp.stop,
                                ignore_eos=sp.ignore_eos, seed=sp.seed, presence_penalty=sp.presence_penalty,
                                frequency_penalty=sp.frequency_penalty)

    def capability_error(engine, needed: str, endpoint: str) -> APIError:
        what = {GENERATE: "text generation", EMBED: "embeddings"}[needed]
        have = {GENERATE: "a text-generation model", EMBED: "an embedding model"}[engine.capability]
        return APIError(400, f"{endpoint} needs {what}, but '{config.served_model_name}' is {have}.",
                        param="model", code="capability_not_supported")

    async def run_generation(request: Request, *, chat: bool):
        endpoint = "/v1/chat/completions" if chat else "/v1/completions"
        check_auth(request)
        engine = require_ready()
        body = await read_body(request)
        protocol.check_model(body, config.served_model_name)
        if engine.capability != GENERATE:
            raise capability_error(engine, GENERATE, endpoint)
        if chat:
            messages = protocol.parse_messages(body)
            sp = protocol.parse_sampling(body, chat=True)
            prompt_ids, prompt_text = tokenize_chat(engine, messages)
        else:
            prompt_text = protocol.parse_prompt(body)
            sp = protocol.parse_sampling(body, chat=False)
            prompt_ids = list(engine.tokenizer(prompt_text, add_special_tokens=True)["input_ids"])
        params = plan_generation(engine, prompt_ids, sp)
        rid = _new_id("chatcmpl" if chat else "cmpl")
        request.state.request_id = rid
        metrics = state.metrics
        admission = state.admission
        t0 = time.perf_counter()
        await admission.acquire()
        released = False

        def release():
            nonlocal released
            if not released:
                released = True
                admission.release()

        try:
            gen = engine.submit(rid, prompt_ids, params, prompt_text=prompt_text, stream=sp.stream)
        except EngineFailure as exc:
            release()
            log.error("request %s failed in the engine: %s", rid, exc)
            raise APIError(500, f"The engine failed on this request (request id {rid}).", code="engine_error",
                           headers={"X-Request-Id": rid}) from None
        metrics.prompt_tokens.inc(len(prompt_ids))
        deltas = gen.deltas()
        n_prompt = len(prompt_ids)
        created = int(time.time())
        name = config.served_model_name

        def usage(n_completion: int) -> dict:
            return {"prompt_tokens": n_prompt, "completion_tokens": n_completion,
                    "total_tokens": n_prompt + n_completion}

        def finish_metrics(n_completion: int) -> None:
            metrics.completion_tokens.inc(n_completion)
            if gen.first_token_at is not None:
                metrics.ttft.observe(gen.first_token_at - t0)
            metrics.e2e.labels(endpoint=endpoint).observe(time.perf_counter() - t0)

        async def next_delta():
            try:
                return await deltas.__anext__()
            except EngineFailure as exc:
                log.error("request %s failed in the engine: %s", rid, exc)
                raise APIError(500, f"The engine failed on this request (request id {rid}).",
                               code="engine_error", headers={"X-Request-Id": rid}) from None

        if not sp.stream:
            parts: list[str] = []

            async def collect():
                last = None
                while last is None or not last.finished:
                    last = await next_delta()
                    parts.append(last.text)
                return last

            collector = asyncio.ensure_future(collect())
            watcher = asyncio.ensure_future(_client_gone(request))
            try:
                await asyncio.wait({collector, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if not collector.done():  # the client went away: stop generating for it
                    collector.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await collector
                    log.info("request %s: client disconnected before the answer", rid)
                    return _json(499, error_body("Client closed the request.", "invalid_request_error", None,
                                                 "client_closed_request"))
                last = collector.result()
            finally:
                watcher.cancel()
                release()
                await deltas.aclose()
            text = "".join(parts)
            finish_metrics(last.completion_tokens)
            if chat:
                choice = {"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                          "logprobs": None, "finish_reason": last.finish_reason}
                obj = "chat.completion"
            else:
                choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": last.finish_reason}
                obj = "text_completion"
            return _json(200, {"id": rid, "object": obj, "created": created, "model": name,
                               "choices": [choice], "usage": usage(last.completion_tokens),
                               "system_fingerprint": None}, {"X-Request-Id": rid})

        try:  # wait for the first token, so that an engine failure is still a plain 500
            first = await next_delta()
        except BaseException:
            release()
            await deltas.aclose()
            raise

        obj = "chat.completion.chunk" if chat else "text_completion"

        def chunk(delta, finish_reason=None) -> str:
            if chat:
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            else:
                choice = {"index": 0, "text": delta, "logprobs": None, "finish_reason": finish_reason}
            payload: dict[str, Any] = {"id": rid, "object": obj, "created": created, "model": name,
                                       "system_fingerprint": None, "choices": [choice]}
            if sp.include_usage:
                payload["usage"] = None
            return f"data: {json.dumps(payload)}\n\n"

        closed = False

        def close_stream() -> None:
            # Idempotent. Runs when the SSE generator ends, and again when the response object
            # is released: a client gone before the first body chunk never starts the generator.
            nonlocal closed
            if closed:
                return
            closed = True
            release()
            gen.abandon()
            finish_metrics(gen.completion_tokens)

        async def sse() -> AsyncIterator[str]:
            n_completion = first.completion_tokens
            try:
                if chat:
                    yield chunk({"role": "assistant", "content": first.text})
                elif first.text:
                    yield chunk(first.text)
                last = first
                while not last.finished:
                    try:
                        last = await deltas.__anext__()
                    except EngineFailure as exc:
                        log.error("request %s failed in the engine: %s", rid, exc)
                        err = error_body(f"The engine failed on this request (request id {rid}).",
                                         "server_error", None, "engine_error")
                        yield f"data: {json.dumps(err)}\n\n"
                        yield "data: [DONE]\n\n"
                        return
                    n_completion = last.completion_tokens
                    if last.text:
                        yield chunk({"content": last.text} if chat else last.text)
                yield chunk({} if chat else "", last.finish_reason)
                if sp.include_usage:
                    payload = {"id": rid, "object": obj, "created": created, "model": name,
                               "system_fingerprint": None, "choices": [], "usage": usage(n_completion)}
                    yield f"data: {json.dumps(payload)}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                await deltas.aclose()
                close_stream()

        response = StreamingResponse(sse(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Request-Id": rid})
        weakref.finalize(response, close_stream)
        return response

    # ------------------------------------------------------------------ routes
    @app.get("/health")
    async def health():
        return {"status": "ok", "phase": state.phase}

    @app.get("/ready")
    async def ready():
        if state.ready and state.engine is not None and state.engine.is_alive():
            return {"status": "ready", "model": config.served_model_name}
        if state.ready:
            raise APIError(503, "The generation loop has stopped.", code="engine_dead")
        require_ready()

    @app.get("/metrics")
    async def metrics_endpoint():
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    def model_card() -> dict:
        card: dict[str, Any] = {"id": config.served_model_name, "object": "model", "created": state.created,
                                "owned_by": "ezrunner"}
        if state.engine is not None:
            card["capability"] = state.engine.capability
            card["max_model_len"] = state.engine.max_model_len
            card["device"] = state.engine.device
            card["dtype"] = str(state.engine.model.dtype).removeprefix("torch.")
        return card

    @app.get("/v1/models")
    async def list_models(request: Request):
        check_auth(request)
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model:path}")
    async def get_model(model: str, request: Request):
        check_auth(request)
        if model != config.served_model_name:
            raise APIError(404, f"The model '{model}' does not exist.", param="model", code="model_not_found")
        return model_card()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await run_generation(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await run_generation(request, chat=False)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        check_auth(request)
        engine = require_ready()
        body = await read_body(request)
        protocol.check_model(body, config.served_model_name)
        if engine.capability != EMBED:
            raise capability_error(engine, EMBED, "/v1/embeddings")
        texts = protocol.parse_embedding_input(body)
        b64 = body.get("encoding_format") == "base64"
        rid = _new_id("embd")
        request.state.request_id = rid
        t0 = time.perf_counter()
        await state.admission.acquire()
        try:
            vectors, n_tokens = await asyncio.to_thread(engine.embed, texts)
        except Exception as exc:  # noqa: BLE001
            log.error("request %s failed in the engine: %s: %s", rid, type(exc).__name__, exc, exc_info=exc)
            raise APIError(500, f"The engine failed on this request (request id {rid}).", code="engine_error",
                           headers={"X-Request-Id": rid}) from None
        finally:
            state.admission.release()
        state.metrics.prompt_tokens.inc(n_tokens)
        state.metrics.e2e.labels(endpoint="/v1/embeddings").observe(time.perf_counter() - t0)
        data = []
        for i, vec in enumerate(vectors):
            emb: Any = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode() if b64 else vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        return _json(200, {"object": "list", "data": data, "model": config.served_model_name,
                           "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}},
                     {"X-Request-Id": rid})

    wrapped = _MetricsAndLimits(app, state)
    # keep the FastAPI object reachable for tests and the CLI
    wrapped.fastapi = app  # type: ignore[attr-defined]
    wrapped.state = state
    return wrapped  # type: ignore[return-value]
