"""The Textual application: ``ezrunner`` with no arguments opens it."""

from __future__ import annotations

from textual.app import App
from textual.binding import Binding

from ezrunner._version import __version__


class EzRunnerApp(App[None]):
    """The ezrunner wizard. Collaborators that touch the outside world (hub
    clients, NVML, Docker) are injected here so the tests can replace them."""

    TITLE = "ezrunner"
    SUB_TITLE = f"offline model bundles · v{__version__}"
    CSS_PATH = ["app.tcss"]
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", id="quit", priority=True),
    ]

    def get_default_screen(self):
        from ezrunner.tui.screens.welcome import WelcomeScreen

        return WelcomeScreen()


def run_app() -> int:
    EzRunnerApp().run()
    return 0
