"""The chat screen's data model, apart from its widgets: the turns of a
conversation, the reply statistics, the request, and the streamed call to an
OpenAI-compatible server (``openai`` is imported on first use, in a thread).

Nothing here touches a widget: the screen passes ``on_delta`` and ``on_model``
callbacks and renders the turns.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

CHAT_FORMAT = "ezrunner-chat/1"


@dataclass
class ReplyStats:
    ttft_s: float | None = None
    tokens_per_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    error: str | None = None

    def line(self) -> str:
        parts = []
        if self.ttft_s is not None:
            parts.append(f"TTFT {self.ttft_s * 1000:.0f} ms")
        if self.tokens_per_s is not None:
            parts.append(f"{self.tokens_per_s:.1f} tok/s")
        if self.prompt_tokens is not None or self.completion_tokens is not None:
            parts.append(f"{self.prompt_tokens or 0} prompt + {self.completion_tokens or 0} completion tokens")
        if self.finish_reason:
            parts.append(f"finish: {self.finish_reason}")
        return " · ".join(parts)


@dataclass
class Turn:
    """One entry of the conversation. ``key`` names it on screen (the widgets
    showing it have the id ``key``, and ``key-stats`` for a reply's line)."""

    role: str  # user | assistant | error
    content: str
    stats: ReplyStats | None = None
    key: str = ""


@dataclass(frozen=True)
class ChatSettings:
    """System prompt, temperature and max tokens (the settings panel)."""

    system: str = ""
    temperature: float = 0.7
    max_tokens: int = 256

    @classmethod
    def parse(cls, system: str, temperature: str, max_tokens: str) -> ChatSettings:
        """The panel's text; an invalid number raises ValueError naming the field."""
        raw_t = temperature.strip() or "0.7"
        raw_m = max_tokens.strip() or "256"
        try:
            t = float(raw_t)
        except ValueError:
            raise ValueError(f"temperature: {raw_t!r} is not a number") from None
        if not 0.0 <= t <= 2.0:
            raise ValueError("temperature: must be between 0 and 2")
        m = int(raw_m)
        if m < 1:
            raise ValueError("max tokens: must be at least 1")
        return cls(system.strip(), t, m)


@dataclass(frozen=True)
class ChatRequest:
    """One streamed chat completion: where, with which key and model (empty: the
    server's first), the messages and the settings."""

    url: str
    key: str
    model: str
    messages: list[dict[str, str]]
    settings: ChatSettings


def request_messages(turns: list[Turn], system: str) -> list[dict[str, str]]:
    """The messages to send: the system prompt, then the user and assistant turns;
    an exchange that failed stays on screen but is not sent again."""
    messages = [{"role": "system", "content": system}] if system else []
    for index, turn in enumerate(turns):
        following = turns[index + 1] if index + 1 < len(turns) else None
        if turn.role == "user" and following is not None and following.role == "error":
            continue
        if turn.role in ("user", "assistant"):
            messages.append({"role": turn.role, "content": turn.content})
    return messages


def transcript(url: str, model: str, settings: ChatSettings | None, turns: list[Turn]) -> dict[str, Any]:
    """The conversation as the JSON a save writes."""
    return {
        "format": CHAT_FORMAT,
        "base_url": url,
        "model": model,
        "settings": asdict(settings) if settings is not None else {},
        "messages": [
            {"role": t.role, "content": t.content, **({"stats": asdict(t.stats)} if t.stats else {})} for t in turns
        ],
    }


def describe_api_error(error: BaseException, base_url: str) -> str:
    """The OpenAI error message of a failed request, as one line."""
    status = getattr(error, "status_code", None)
    body = getattr(error, "body", None)
    message = None
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        message = inner.get("message")
        code = inner.get("code")
        if message and code:
            message = f"{message} ({code})"
    if not message:
        message = getattr(error, "message", None) or str(error) or type(error).__name__
    name = type(error).__name__
    if name in ("APIConnectionError", "APITimeoutError"):
        return f"cannot reach {base_url}: {message}"
    if status:
        return f"server error {status}: {message}"
    return f"server error: {message}"


# ---- the call -------------------------------------------------------------------------------------
OnDelta = Callable[[str], Awaitable[None]]


async def run_chat(request: ChatRequest, stats: ReplyStats, on_delta: OnDelta, on_model: Callable[[str], None]) -> None:
    """Stream one reply: the model (the server's first when the request names
    none, reported to ``on_model``), then each content delta to ``on_delta``;
    ``stats`` is filled as the chunks arrive. Errors propagate."""
    openai = await asyncio.to_thread(importlib.import_module, "openai")
    client = openai.AsyncOpenAI(base_url=request.url, api_key=request.key or "none", max_retries=0, timeout=120.0)
    try:
        if not request.model:
            listing = await client.models.list()
            if not listing.data:
                raise RuntimeError("the server lists no model")
            request = replace(request, model=listing.data[0].id)
            on_model(request.model)
        await stream_completion(client, request, stats, on_delta)
    finally:
        await client.close()


async def stream_completion(client: Any, request: ChatRequest, stats: ReplyStats, on_delta: OnDelta) -> None:
    """One ``chat.completions.create(stream=True)`` on ``client``: usage, finish
    reason, time to first token and tokens/s go to ``stats``."""
    started = time.perf_counter()
    first: float | None = None
    chunks = 0
    response = await client.chat.completions.create(
        model=request.model,
        messages=request.messages,
        temperature=request.settings.temperature,
        max_tokens=request.settings.max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in response:
        if chunk.usage is not None:
            stats.prompt_tokens = chunk.usage.prompt_tokens
            stats.completion_tokens = chunk.usage.completion_tokens
        for choice in chunk.choices or []:
            if choice.finish_reason:
                stats.finish_reason = choice.finish_reason
            delta = choice.delta.content if choice.delta else None
            if delta:
                if first is None:
                    first = time.perf_counter()
                    stats.ttft_s = first - started
                chunks += 1
                await on_delta(delta)
    _finish(stats, chunks, first, time.perf_counter())


def _finish(stats: ReplyStats, chunks: int, first: float | None, end: float) -> None:
    """Tokens/s over the stream after the first token (chunks stand in for tokens
    when the server reports no usage)."""
    if stats.completion_tokens is None and chunks:
        stats.completion_tokens = chunks
    if first is not None and stats.completion_tokens:
        span = end - first
        if span > 0:
            stats.tokens_per_s = max(stats.completion_tokens - 1, 1) / span
