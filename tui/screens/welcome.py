"""The first screen: what ezrunner does and where to go next."""

from __future__ import annotations

from ezrunner.tui.screens.base import EzScreen
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Footer, Header, OptionList, Static
from textual.widgets.option_list import Option

WELCOME = """\
[b]ezrunner[/b] packs a model and an inference engine into [b]one offline Docker bundle[/b].

  1. Search a model (Hugging Face, ModelScope, a local folder or the demo model)
  2. Probe or enter the target hardware
  3. Review the engine and memory plan
  4. Build and export the bundle
  5. On the target: load it, run it, chat with it
"""


class WelcomeScreen(EzScreen[None]):
    BINDINGS = [
        Binding("p", "app.open_pack", "Pack", id="welcome.pack"),
        Binding("r", "app.open_run", "Run", id="welcome.run"),
        Binding("c", "app.open_chat", "Chat", id="welcome.chat"),
        Binding("q", "app.quit", "Quit", id="welcome.quit"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="welcome"):
            yield Static(WELCOME, id="welcome-text")
            yield OptionList(
                Option("p  Pack a model into an offline bundle", id="pack"),
                Option("r  Run a bundle on this machine", id="run"),
                Option("c  Chat with a running model (any OpenAI URL)", id="chat"),
                id="welcome-menu",
            )
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#welcome-menu", OptionList).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.app.run_action(f"open_{event.option.id}")
