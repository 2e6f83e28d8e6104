"""Chat with any OpenAI-compatible server (a started bundle, ``ezrunner serve``, or
any base URL): streamed Markdown replies with TTFT, tokens/s and token counts."""

from __future__ import annotations

import asyncio
import importlib
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ezrunner.tui.screens.base import EzScreen
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Footer, Header, Input, Label, Markdown, Static, TextArea

DEFAULT_URL = "http://127.0.0.1:8000/v1"


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
    role: str  # user | assistant | error
    content: str
    stats: ReplyStats | None = None
    widget_ids: list[str] = field(default_factory=list)


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


class ChatScreen(EzScreen[None]):
    """Opened from the run screen on a ready bundle, or pointed at a base URL."""

    BINDINGS = [
        Binding("escape", "back", "Back", id="chat.back"),
        Binding("ctrl+r", "regenerate", "Regenerate", id="chat.regenerate"),
        Binding("ctrl+l", "clear", "Clear", id="chat.clear"),
        Binding("ctrl+s", "save", "Save", id="chat.save"),
        Binding("ctrl+t", "toggle_settings", "Settings", id="chat.settings"),
    ]

    def __init__(self, base_url: str = "", api_key: str = "", model: str = "") -> None:
        super().__init__()
        self.base_url = base_url or DEFAULT_URL
        self.api_key = api_key
        self.model = model
        self.turns: list[Turn] = []
        self.streaming = False
        self._counter = 0

    # ---- layout -----------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="chat-connection"):
            yield Input(self.base_url, placeholder="base URL", id="chat-url")
            yield Input(self.api_key, placeholder="API key (optional)", password=True, id="chat-key")
            yield Input(self.model, placeholder="model (auto)", id="chat-model")
        with Horizontal(id="chat-body"):
            with VerticalScroll(id="chat-log"):
                yield Static(
                    "Type a message and press Enter. Ctrl+T: settings (system prompt, temperature, max tokens). Esc stops a reply.",
                    classes="chat-hint",
                    id="chat-empty",
                )
            with Vertical(id="chat-settings"):
                yield Label("System prompt")
                yield TextArea("", id="chat-system", soft_wrap=True, show_line_numbers=False)
                yield Label("Temperature")
                yield Input("0.7", id="chat-temperature", restrict=r"[0-9.]*")
                yield Label("Max tokens")
                yield Input("256", id="chat-max-tokens", restrict=r"[0-9]*")
        yield Input(placeholder="Message (Enter to send)", id="chat-input")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#chat-input", Input).focus()
        self.query_one("#chat-log").anchor()
        if self.app.size.width < 100:
            self.query_one("#chat-settings").display = False

    # ---- settings -------------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """System prompt, temperature and max tokens; invalid numbers raise ValueError
        naming the field."""
        system = self.query_one("#chat-system", TextArea).text.strip()
        raw_t = self.query_one("#chat-temperature", Input).value.strip() or "0.7"
        raw_m = self.query_one("#chat-max-tokens", Input).value.strip() or "256"
        try:
            temperature = float(raw_t)
        except ValueError:
            raise ValueError(f"temperature: {raw_t!r} is not a number") from None
        if not 0.0 <= temperature <= 2.0:
            raise ValueError("temperature: must be between 0 and 2")
        max_tokens = int(raw_m)
        if max_tokens < 1:
            raise ValueError("max tokens: must be at least 1")
        return {"system": system, "temperature": temperature, "max_tokens": max_tokens}

    def _connection(self) -> tuple[str, str, str]:
        url = self.query_one("#chat-url", Input).value.strip() or DEFAULT_URL
        key = self.query_one("#chat-key", Input).value.strip()
        model = self.query_one("#chat-model", Input).value.strip()
        return url, key, model

    def action_toggle_settings(self) -> None:
        panel = self.query_one("#chat-settings")
        panel.display = not panel.display
        if panel.display:
            self.query_one("#chat-system", TextArea).focus()
        else:
            self.query_one("#chat-input", Input).focus()

    # ---- conversation widgets ---------------------------------------------------------------------
    def _new_id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}-{self._counter}"

    async def _add(self, widget) -> None:
        log = self.query_one("#chat-log", VerticalScroll)
        empty = self.query("#chat-empty")
        if empty:
            await empty.remove()
        await log.mount(widget)
        log.scroll_end(animate=False)

    async def _add_user(self, text: str) -> None:
        wid = self._new_id("user")
        self.turns.append(Turn("user", text, widget_ids=[wid]))
        await self._add(Static(text, id=wid, classes="msg-user", markup=False))

    async def _add_error(self, text: str) -> None:
        wid = self._new_id("error")
        self.turns.append(Turn("error", text, widget_ids=[wid]))
        await self._add(Static(f"error: {text}", id=wid, classes="msg-error", markup=False))

    # ---- actions ----------------------------------------------------------------------------------
    @on(Input.Submitted, "#chat-input")
    async def _send(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        if not text or self.streaming:
            return
        event.input.value = ""
        await self._add_user(text)
        self._start_reply()

    def _start_reply(self) -> None:
        try:
            settings = self.settings()
        except ValueError as exc:
            self.notify(str(exc), severity="error")
            return
        url, key, model = self._connection()
        messages = []
        if settings["system"]:
            messages.append({"role": "system", "content": settings["system"]})
        for index, turn in enumerate(self.turns):
            following = self.turns[index + 1] if index + 1 < len(self.turns) else None
            # an exchange that failed stays on screen but is not sent again
            if turn.role == "user" and following is not None and following.role == "error":
                continue
            if turn.role in ("user", "assistant"):
                messages.append({"role": turn.role, "content": turn.content})
        self.streaming = True
        self.query_one("#chat-input", Input).disabled = True
        self.stream_reply(url, key, model, messages, settings["temperature"], settings["max_tokens"])

    async def action_regenerate(self) -> None:
        if self.streaming:
            return
        # drop everything after the last user message, then ask again
        while self.turns and self.turns[-1].role != "user":
            turn = self.turns.pop()
            for wid in turn.widget_ids:
                for widget in self.query(f"#{wid}"):
                    await widget.remove()
        if not self.turns:
            self.notify("nothing to regenerate", severity="warning")
            return
        self._start_reply()

    async def action_clear(self) -> None:
        if self.streaming:
            self.workers.cancel_group(self, "chat")
        self.turns.clear()
        log = self.query_one("#chat-log", VerticalScroll)
        await log.remove_children()
        await log.mount(Static("Conversation cleared.", classes="chat-hint", id="chat-empty"))
        self._unlock()

    def action_stop(self) -> None:
        if self.streaming:
            self.workers.cancel_group(self, "chat")
            self._unlock()

    def action_back(self) -> None:
        if self.streaming:
            self.action_stop()
            return
        self.app.pop_screen()

    def transcript(self) -> dict[str, Any]:
        url, _key, model = self._connection()
        try:
            settings = self.settings()
        except ValueError:
            settings = {}
        return {
            "format": "ezrunner-chat/1",
            "base_url": url,
            "model": model or self.model,
            "settings": settings,
            "messages": [
                {"role": t.role, "content": t.content, **({"stats": asdict(t.stats)} if t.stats else {})}
                for t in self.turns
            ],
        }

    def save_transcript(self, path: str) -> None:
        from ezrunner.core.fsutil import atomic_write_text

        atomic_write_text(path, json.dumps(self.transcript(), indent=2, ensure_ascii=False) + "\n")

    def action_save(self) -> None:
        from ezrunner.core.locations import home
        from ezrunner.tui.dialogs.path import PathDialog

        default = str(home() / "transcripts" / "chat.json")

        def done(path: str | None) -> None:
            if not path:
                return
            try:
                self.save_transcript(path)
            except OSError as exc:
                self.notify(f"cannot save {path}: {exc.strerror or exc}", severity="error")
                return
            self.notify(f"transcript saved to {path}")

        self.app.push_screen(PathDialog("Save transcript as JSON", default), done)

    def _unlock(self) -> None:
        self.streaming = False
        box = self.query_one("#chat-input", Input)
        box.disabled = False
        box.focus()

    # ---- the stream -------------------------------------------------------------------------------
    @work(exclusive=True, group="chat", exit_on_error=False, description="chat request")
    async def stream_reply(
        self, url: str, key: str, model: str, messages: list[dict[str, str]], temperature: float, max_tokens: int
    ) -> None:
        """An async worker on the event loop (AsyncOpenAI does not block), so it may
        update the widgets it created itself; the import runs in a thread."""
        wid = self._new_id("assistant")
        reply = Markdown("", id=wid, classes="msg-assistant")
        stats_widget = Static("…", id=f"{wid}-stats", classes="msg-stats", markup=False)
        turn = Turn("assistant", "", ReplyStats(), widget_ids=[wid, f"{wid}-stats"])
        await self._add(reply)
        await self._add(stats_widget)
        stream = Markdown.get_stream(reply)
        parts: list[str] = []
        stats = turn.stats
        assert stats is not None
        try:
            openai = await asyncio.to_thread(importlib.import_module, "openai")
            client = openai.AsyncOpenAI(base_url=url, api_key=key or "none", max_retries=0, timeout=120.0)
            try:
                if not model:
                    listing = await client.models.list()
                    if not listing.data:
                        raise RuntimeError("the server lists no model")
                    model = listing.data[0].id
                    self.model = model
                    self.query_one("#chat-model", Input).value = model
                started = time.perf_counter()
                first: float | None = None
                chunks = 0
                response = await client.chat.completions.create(
                    model=model,
                    messages=messages,
                    temperature=temperature,
                    max_tokens=max_tokens,
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
                            now = time.perf_counter()
                            if first is None:
                                first = now
                                stats.ttft_s = now - started
                            chunks += 1
                            parts.append(delta)
                            await stream.write(delta)
                end = time.perf_counter()
                if stats.completion_tokens is None and chunks:
                    stats.completion_tokens = chunks
                if first is not None and stats.completion_tokens:
                    span = end - first
                    if span > 0:
                        stats.tokens_per_s = max(stats.completion_tokens - 1, 1) / span
            finally:
                await client.close()
        except asyncio.CancelledError:
            stats.error = "stopped"
            raise
        except Exception as exc:  # noqa: BLE001 - shown in the conversation, never a crash
            stats.error = describe_api_error(exc, url)
        finally:
            await stream.stop()
            turn.content = "".join(parts)
            if turn.content or stats.error is None:
                self.turns.append(turn)
            else:
                await reply.remove()
                await stats_widget.remove()
            if stats.error and stats.error != "stopped":
                await self._add_error(stats.error)
            elif stats.error == "stopped" and turn.content:
                stats.finish_reason = "stopped"
            if stats_widget.is_mounted:
                stats_widget.update(stats.line() or "(no reply)")
            self._unlock()
