"""Chat with any OpenAI-compatible server (a started bundle, ``ezrunner serve``, or
any base URL): streamed Markdown replies with TTFT, tokens/s and token counts."""

from __future__ import annotations

import asyncio
import json

from ezrunner.tui.conversation import (
    ChatRequest,
    ChatSettings,
    ReplyStats,
    Turn,
    describe_api_error,
    request_messages,
    run_chat,
    transcript,
)
from ezrunner.tui.screens.base import EzScreen
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Footer, Header, Input, Label, Markdown, Static, TextArea

DEFAULT_URL = "http://127.0.0.1:8000/v1"
__all__ = ["DEFAULT_URL", "ChatScreen", "ReplyStats", "Turn", "describe_api_error"]


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
    def settings(self) -> ChatSettings:
        """System prompt, temperature and max tokens; invalid numbers raise ValueError
        naming the field."""
        return ChatSettings.parse(
            self.query_one("#chat-system", TextArea).text,
            self.query_one("#chat-temperature", Input).value,
            self.query_one("#chat-max-tokens", Input).value,
        )

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
        self.turns.append(Turn("user", text, key=wid))
        await self._add(Static(text, id=wid, classes="msg-user", markup=False))

    async def _add_error(self, text: str) -> None:
        wid = self._new_id("error")
        self.turns.append(Turn("error", text, key=wid))
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
        self.streaming = True
        self.query_one("#chat-input", Input).disabled = True
        self.stream_reply(ChatRequest(url, key, model, request_messages(self.turns, settings.system), settings))

    async def action_regenerate(self) -> None:
        if self.streaming:
            return
        # drop everything after the last user message, then ask again
        while self.turns and self.turns[-1].role != "user":
            turn = self.turns.pop()
            for wid in (turn.key, f"{turn.key}-stats"):
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

    def transcript(self) -> dict[str, object]:
        url, _key, model = self._connection()
        try:
            settings: ChatSettings | None = self.settings()
        except ValueError:
            settings = None
        return transcript(url, model or self.model, settings, self.turns)

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
    async def stream_reply(self, request: ChatRequest) -> None:
        """An async worker on the event loop (AsyncOpenAI does not block), so it may
        update the widgets it created itself."""
        wid = self._new_id("assistant")
        turn = Turn("assistant", "", ReplyStats(), key=wid)
        reply = Markdown("", id=wid, classes="msg-assistant")
        stats_widget = Static("…", id=f"{wid}-stats", classes="msg-stats", markup=False)
        await self._add(reply)
        await self._add(stats_widget)
        stream = Markdown.get_stream(reply)
        parts: list[str] = []
        stats = turn.stats
        assert stats is not None

        async def on_delta(text: str) -> None:
            parts.append(text)
            await stream.write(text)

        try:
            await run_chat(request, stats, on_delta, self._model_found)
        except asyncio.CancelledError:
            stats.error = "stopped"
            raise
        except Exception as exc:  # noqa: BLE001 - shown in the conversation, never a crash
            stats.error = describe_api_error(exc, request.url)
        finally:
            await stream.stop()
            turn.content = "".join(parts)
            await self._reply_ended(turn, reply, stats_widget)

    def _model_found(self, model: str) -> None:
        """The server's model, when none was named: used from now on."""
        self.model = model
        self.query_one("#chat-model", Input).value = model

    async def _reply_ended(self, turn: Turn, reply: Markdown, stats_widget: Static) -> None:
        """Keep the reply (or drop its empty widgets), show an error, the stats line, unlock."""
        stats = turn.stats
        assert stats is not None
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
