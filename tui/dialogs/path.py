"""Ask for a file path (save transcript, save log, load profile): ``ModalScreen[str | None]``."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static


class PathDialog(ModalScreen["str | None"]):
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="path.cancel")]

    def __init__(self, title: str, value: str = "", placeholder: str = "path") -> None:
        super().__init__(classes="dialog")
        self._title = title
        self._value = value
        self._placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog-box"):
            yield Static(self._title, id="dialog-title", markup=False)
            yield Input(self._value, placeholder=self._placeholder, id="path-input")
            yield Static("Enter to accept, Esc to cancel", classes="dim")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        value = event.value.strip()
        self.dismiss(value or None)

    def action_cancel(self) -> None:
        self.dismiss(None)
