"""The first screen: what ezrunner does and where to go next."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

WELCOME = """\
[b]ezrunner[/b] packs a model and an inference engine into [b]one offline Docker bundle[/b].

  1. Search a model (Hugging Face, ModelScope, a local folder or the demo model)
  2. Probe or enter the target hardware
  3. Review the engine and memory plan
  4. Build and export the bundle
  5. On the target: load it, run it, chat with it

No network? The built-in demo model works offline: [b]ezrunner demo-model[/b].
"""


class WelcomeScreen(Screen[None]):
    BINDINGS = [Binding("q", "app.quit", "Quit", id="welcome.quit")]

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="welcome"):
            yield Static(WELCOME, id="welcome-text")
        yield Footer()
