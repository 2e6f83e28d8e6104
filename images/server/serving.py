"""The serving side of the endpoints: admission in front of the engine, prompt building,
generation parameters, whole answers, SSE streams (ending in ``data: [DONE]``) and embeddings."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import struct
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel

from . import protocol as P
from .engine import Delta, EngineFailure, GenerationParams
from .errors import APIError, engine_error, error_body
from .metrics import ServerMetrics

if TYPE_CHECKING:
    from .engine import EmbeddingEngine, GenerationEngine, GenerationRequest
    from .state import ServerState

log = logging.getLogger("ezrunner_server")

DONE = "data: [DONE]\n\n"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def sse_event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"


# ------------------------------------------------------------------------------------------ admission


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

    @asynccontextmanager
    async def slot(self):
        await self.acquire()
        try:
            yield
        finally:
            self.release()


# ------------------------------------------------------------------------------------------ the two APIs


class ChatAPI:
    """/v1/chat/completions: prompt from the chat template, answers as messages and deltas."""

    path = "/v1/chat/completions"
    id_prefix = "chatcmpl"
    chunk_object = "chat.completion.chunk"

    prompt_param = "messages"
    add_special_tokens = False  # the template has them

    @staticmethod
    def render(engine: GenerationEngine, body: P.ChatCompletionRequest) -> str:
        tok = engine.tokenizer
        if not getattr(tok, "chat_template", None):
            raise APIError(400, "This model has no chat template; use /v1/completions.",
                           code="chat_template_missing")
        messages = [m.for_template() for m in body.messages]
        try:
            return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # noqa: BLE001 - jinja errors from the model's template
            raise APIError(400, f"The chat template rejected these messages: {exc}", param="messages",
                           code="invalid_messages") from None

    @staticmethod
    def response(head: dict[str, Any], text: str, finish_reason: str | None, usage: P.UsageInfo) -> BaseModel:
        choice = P.ChatCompletionChoice(message=P.AssistantMessage(content=text), finish_reason=finish_reason)
        return P.ChatCompletionResponse(**head, choices=[choice], usage=usage)

    @staticmethod
    def first_choice(text: str) -> P.ChatChunkChoice:
        return P.ChatChunkChoice(delta=P.DeltaMessage(role="assistant", content=text))

    @staticmethod
    def choice(text: str | None, finish_reason: str | None = None) -> P.ChatChunkChoice:
        return P.ChatChunkChoice(delta=P.DeltaMessage(content=text), finish_reason=finish_reason)


class CompletionAPI:
    """/v1/completions: the prompt as given, answers as text."""

    path = "/v1/completions"
    id_prefix = "cmpl"
    chunk_object = "text_completion"

    prompt_param = "prompt"
    add_special_tokens = True

    @staticmethod
    def render(_engine: GenerationEngine, body: P.CompletionRequest) -> str:
        return body.prompt

    @staticmethod
    def response(head: dict[str, Any], text: str, finish_reason: str | None, usage: P.UsageInfo) -> BaseModel:
        choice = P.CompletionChoice(text=text, finish_reason=finish_reason)
        return P.CompletionResponse(**head, choices=[choice], usage=usage)

    @staticmethod
    def first_choice(text: str) -> P.CompletionChoice | None:
        return P.CompletionChoice(text=text) if text else None

    @staticmethod
    def choice(text: str | None, finish_reason: str | None = None) -> P.CompletionChoice:
        return P.CompletionChoice(text=text or "", finish_reason=finish_reason)


API = ChatAPI | CompletionAPI


def build_prompt(engine: GenerationEngine, api: API, body: P.SamplingRequest) -> tuple[list[int], str]:
    """(token ids, text) of the prompt. Blocking (template and tokenizer): runs in a worker
    thread. A text longer than the context times the longest token of the vocabulary cannot
    fit in the context, whatever the tokenizer makes of it: refused before tokenizing (a
    3.9 MB prompt would take seconds of CPU and a million-entry list only to be refused)."""
    text = api.render(engine, body)
    limit, longest = engine.max_model_len, engine.max_token_chars
    if len(text) > limit * longest:
        raise APIError(400, f"This model's maximum context length is {limit} tokens. However, your prompt has "
                       f"{len(text)} characters, more than {limit} tokens can hold (no token of this model is "
                       f"longer than {longest} characters).", param=api.prompt_param,
                       code="context_length_exceeded")
    ids = engine.tokenizer(text, add_special_tokens=api.add_special_tokens)["input_ids"]
    return list(ids), text


# ------------------------------------------------------------------------------------------ parameters


def _max_new_tokens(limit: int, n_prompt: int, requested: int | None) -> int:
    if requested is None:
        if n_prompt >= limit:
            raise APIError(400, f"This model's maximum context length is {limit} tokens. However, your "
                           f"prompt has {n_prompt} tokens, leaving no room for the completion.",
                           param="messages", code="context_length_exceeded")
        return limit - n_prompt
    if n_prompt + requested > limit:
        raise APIError(400, f"This model's maximum context length is {limit} tokens. However, you "
                       f"requested {n_prompt + requested} tokens ({n_prompt} in the prompt, {requested} for "
                       "the completion). Please reduce the prompt or max_tokens.",
                       param="max_tokens", code="context_length_exceeded")
    return requested


def generation_params(engine: GenerationEngine, n_prompt: int, body: P.SamplingRequest) -> GenerationParams:
    if n_prompt == 0:
        raise APIError(400, "The prompt is empty.", param="prompt", code="empty_prompt")
    max_new = _max_new_tokens(engine.max_model_len, n_prompt, body.token_limit)
    if (body.presence_penalty or body.frequency_penalty) and not engine.supports_request_sampling:
        name = "presence_penalty" if body.presence_penalty else "frequency_penalty"
        raise APIError(400, f"'{name}' is not supported here: transformers' own sampler runs on this device "
                       "and has no per-request penalties (only 0 is accepted)", param=name,
                       code="unsupported_parameter")
    return GenerationParams(
        max_new_tokens=max_new,
        temperature=engine.default_temperature if body.temperature is None else body.temperature,
        top_p=engine.default_top_p if body.top_p is None else body.top_p,
        stop=body.stop, ignore_eos=bool(body.ignore_eos), seed=body.seed,
        presence_penalty=body.presence_penalty, frequency_penalty=body.frequency_penalty,
    )


# ------------------------------------------------------------------------------------------ one generation


@dataclass
class Generation:
    """One admitted request inside the engine: its slot, its deltas and its metrics."""

    api: API
    rid: str
    model: str
    n_prompt: int
    include_usage: bool
    metrics: ServerMetrics
    admission: Admission
    request: GenerationRequest
    t0: float
    created: int
    _released: bool = False
    _closed: bool = False

    def __post_init__(self) -> None:
        self.deltas = self.request.deltas()

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.admission.release()

    def finish_metrics(self, n_completion: int) -> None:
        self.metrics.completion_tokens.inc(n_completion)
        if self.request.first_token_at is not None:
            self.metrics.ttft.observe(self.request.first_token_at - self.t0)
        self.metrics.e2e.labels(endpoint=self.api.path).observe(time.perf_counter() - self.t0)

    def close_stream(self) -> None:
        """Idempotent. Runs when the SSE generator ends, and again when the response object
        is released: a client gone before the first body chunk never starts the generator."""
        if self._closed:
            return
        self._closed = True
        self.release()
        self.request.abandon()
        self.finish_metrics(self.request.completion_tokens)

    async def next_delta(self) -> Delta:
        try:
            return await self.deltas.__anext__()
        except EngineFailure as exc:
            log.error("request %s failed in the engine: %s", self.rid, exc)
            raise engine_error(self.rid) from None

    def head(self) -> dict[str, Any]:
        return {"id": self.rid, "created": self.created, "model": self.model}

    def usage(self, n_completion: int) -> P.UsageInfo:
        return P.UsageInfo.of(self.n_prompt, n_completion)

    def event(self, choices: list, usage: P.UsageInfo | None = None) -> str:
        chunk = P.StreamChunk(**self.head(), object=self.api.chunk_object, choices=choices, usage=usage)
        return sse_event(chunk.model_dump(exclude=None if self.include_usage else {"usage"}))


async def _admit(state: ServerState, engine: GenerationEngine, api: API, rid: str,
                 prompt: tuple[list[int], str], params: GenerationParams, body: P.SamplingRequest) -> Generation:
    prompt_ids, prompt_text = prompt
    t0 = time.perf_counter()
    await state.admission.acquire()
    try:
        request = engine.submit(rid, prompt_ids, params, prompt_text=prompt_text, stream=bool(body.stream))
    except EngineFailure as exc:
        state.admission.release()
        log.error("request %s failed in the engine: %s", rid, exc)
        raise engine_error(rid) from None
    state.metrics.prompt_tokens.inc(len(prompt_ids))
    return Generation(api, rid, state.config.served_model_name, len(prompt_ids), body.include_usage,
                      state.metrics, state.admission, request, t0, int(time.time()))


async def generate(request: Request, state: ServerState, engine: GenerationEngine, api: API,
                   body: P.SamplingRequest) -> Response:
    """Serve one chat or completions request (already validated)."""
    prompt = await asyncio.to_thread(build_prompt, engine, api, body)
    params = generation_params(engine, len(prompt[0]), body)
    rid = new_id(api.id_prefix)
    request.state.request_id = rid
    job = await _admit(state, engine, api, rid, prompt, params, body)
    if body.stream:
        return await _stream(job, state.config.stream_write_timeout)
    return await _collect(request, job)


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _collect(request: Request, job: Generation) -> Response:
    """The whole answer at once; generation stops if the client goes away first (499)."""
    parts: list[str] = []

    async def collect() -> Delta:
        last = None
        while last is None or not last.finished:
            last = await job.next_delta()
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
            log.info("request %s: client disconnected before the answer", job.rid)
            return JSONResponse(error_body("Client closed the request.", "invalid_request_error", None,
                                           "client_closed_request"), status_code=499)
        last = collector.result()
    finally:
        watcher.cancel()
        job.release()
        await job.deltas.aclose()
    job.finish_metrics(last.completion_tokens)
    answer = job.api.response(job.head(), "".join(parts), last.finish_reason, job.usage(last.completion_tokens))
    return JSONResponse(answer.model_dump(), headers={"X-Request-Id": job.rid})


class _Stalled(Exception):
    """A write to the client did not complete within the stream write timeout."""


class SSEResponse(StreamingResponse):
    """The event stream of one generation. Every write must complete within
    ``write_timeout``: a client that reads nothing for that long (its buffers full) has its
    stream cancelled, which frees the slot and stops the generation; the connection is
    closed (and aborted by the connection guard if the client still does not read)."""

    def __init__(self, job: Generation, first: Delta, write_timeout: float) -> None:
        super().__init__(_sse(job, first), media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Request-Id": job.rid})
        self.job = job
        self.write_timeout = write_timeout

    async def stream_response(self, send) -> None:
        async def bounded_send(message) -> None:
            try:
                async with asyncio.timeout(self.write_timeout):
                    await send(message)
            except TimeoutError:
                raise _Stalled from None

        try:
            await super().stream_response(bounded_send)
        except _Stalled:
            self.job.metrics.stalled.inc()
            log.warning("request %s: the client read nothing for %g s; stream cancelled", self.job.rid,
                        self.write_timeout)
        finally:
            with anyio.CancelScope(shield=True):  # also when the client went away (cancelled)
                await self.body_iterator.aclose()  # runs _sse's finally: slot freed, generation stopped


async def _stream(job: Generation, write_timeout: float) -> Response:
    try:  # wait for the first token, so that an engine failure is still a plain 500
        first = await job.next_delta()
    except BaseException:
        job.release()
        await job.deltas.aclose()
        raise
    response = SSEResponse(job, first, write_timeout)
    weakref.finalize(response, job.close_stream)
    return response


async def _sse(job: Generation, first: Delta) -> AsyncIterator[str]:
    try:
        if (choice := job.api.first_choice(first.text)) is not None:
            yield job.event([choice])
        last = first
        while not last.finished:
            try:
                last = await job.next_delta()
            except APIError as exc:  # after the first event: the error travels in the stream
                yield sse_event(exc.body())
                yield DONE
                return
            if last.text:
                yield job.event([job.api.choice(last.text)])
        yield job.event([job.api.choice(None, last.finish_reason)])
        if job.include_usage:
            yield job.event([], job.usage(last.completion_tokens))
        yield DONE
    finally:
        await job.deltas.aclose()
        job.close_stream()


# ------------------------------------------------------------------------------------------ embeddings


def _encode(vector: list[float], base64_floats: bool) -> list[float] | str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if base64_floats else vector


async def embed(request: Request, state: ServerState, engine: EmbeddingEngine, body: P.EmbeddingRequest) -> Response:
    """Serve one /v1/embeddings request (already validated)."""
    rid = new_id("embd")
    request.state.request_id = rid
    t0 = time.perf_counter()
    async with state.admission.slot():
        try:
            vectors, n_tokens = await asyncio.to_thread(engine.embed, body.input)
        except Exception as exc:  # noqa: BLE001
            log.error("request %s failed in the engine: %s: %s", rid, type(exc).__name__, exc, exc_info=exc)
            raise engine_error(rid) from None
    state.metrics.prompt_tokens.inc(n_tokens)
    state.metrics.e2e.labels(endpoint="/v1/embeddings").observe(time.perf_counter() - t0)
    b64 = body.encoding_format == "base64"
    answer = P.EmbeddingResponse(
        data=[P.EmbeddingData.model_construct(index=i, embedding=_encode(v, b64)) for i, v in enumerate(vectors)],
        model=state.config.served_model_name,
        usage=P.EmbeddingUsage(prompt_tokens=n_tokens, total_tokens=n_tokens),
    )
    return JSONResponse(answer.model_dump(), headers={"X-Request-Id": rid})
