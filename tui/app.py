"""The Textual application: ``ezrunner`` with no arguments opens it.

Only textual itself is imported here; every screen, and every core module
behind them, is imported when first needed (tests/test_import_hygiene.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ezrunner.tui.state import WizardState
from textual import on
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.message import Message
from textual.worker import Worker, WorkerState

from ezrunner._version import __version__

if TYPE_CHECKING:
    from ezrunner.tui.build_job import BuildJob
    from ezrunner.tui.services import Services
    from textual.clock import Clock
    from textual.screen import Screen


class WorkerFailed(Message):
    """Posted to the active screen when one of its workers died with an error
    (after the app showed the error modal), so the screen can unlock itself."""

    def __init__(self, group: str, error: BaseException) -> None:
        super().__init__()
        self.group = group
        self.error = error


def parse_keymap(text: str) -> dict[str, str]:
    """``EZRUNNER_KEYMAP``: ``binding-id=keys`` pairs separated by commas, e.g.
    ``run.filter=f,app.pack=f9`` (ids are listed in docs/commands/tui.md).
    Malformed pairs are skipped."""
    keymap: dict[str, str] = {}
    for pair in text.split(","):
        binding_id, sep, keys = pair.partition("=")
        if sep and binding_id.strip() and keys.strip():
            keymap[binding_id.strip()] = keys.strip()
    return keymap


def error_text(error: BaseException) -> tuple[str, str | None]:
    """The one line (and hint) a user sees for an exception."""
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    first = message.strip().splitlines()[0] if message.strip() else type(error).__name__
    return first, getattr(error, "hint", None)


class EzRunnerApp(App[None]):
    """The ezrunner wizard, run screen and chat screen.

    Collaborators that touch the outside world are injected here so tests can
    replace exactly two seams: ``hub`` (endpoint settings of the hub clients,
    pointed at a local replay server) and ``nvml`` (the NVML library object).
    ``services`` may be given whole instead. ``clock`` drives the progress bars
    (a ``MockClock`` makes snapshots deterministic).
    """

    TITLE = "ezrunner"
    SUB_TITLE = "offline model bundles"
    # absolute, so that subclasses defined elsewhere find it too
    CSS_PATH = [Path(__file__).parent / "app.tcss"]
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True),
        Binding("f1", "open_pack", "Pack", id="app.pack", show=False),
        Binding("f2", "open_run", "Run", id="app.run", show=False),
        Binding("f3", "open_chat", "Chat", id="app.chat", show=False),
    ]

    def __init__(
        self,
        services: Services | None = None,
        *,
        hub: dict[str, str] | None = None,
        nvml: Any = None,
        docker: Any = None,
        clock: Clock | None = None,
        bundle_dir: str | None = None,
        show_version: bool = True,
    ) -> None:
        super().__init__()
        if services is None:
            from ezrunner.tui.services import Services

            services = Services(hub=hub, nvml=nvml, docker=docker)
        self.services = services
        self.clock = clock
        self.wizard = WizardState()
        self.bundle_dir = bundle_dir
        if show_version:
            self.sub_title = f"offline model bundles · v{__version__}"
        self.build_job: BuildJob | None = None
        self.errors_shown: list[str] = []

    def on_mount(self) -> None:
        from ezrunner.core.settings import settings

        keymap = parse_keymap(settings().keymap)
        if keymap:
            self.set_keymap(keymap)

    # ---- screens ------------------------------------------------------------------------------
    def get_default_screen(self) -> Screen:
        from ezrunner.tui.screens.welcome import WelcomeScreen

        return WelcomeScreen()

    def action_open_pack(self) -> None:
        from ezrunner.tui.screens.search import SearchScreen

        self.push_screen(SearchScreen())

    def action_open_run(self) -> None:
        from ezrunner.tui.screens.run import RunScreen

        self.push_screen(RunScreen(self.bundle_dir))

    def action_open_chat(self, base_url: str = "", api_key: str = "", model: str = "") -> None:
        from ezrunner.tui.screens.chat import ChatScreen

        self.push_screen(ChatScreen(base_url=base_url, api_key=api_key, model=model))

    def start_build(self) -> BuildJob:
        """Start the App-owned build/export worker for the wizard's choices."""
        from ezrunner.tui.build_job import BuildJob

        self.build_job = BuildJob(self, self.wizard.pack_options())
        self.build_job.start()
        return self.build_job

    def action_back(self) -> None:
        if len(self.screen_stack) > 1:
            self.pop_screen()

    # ---- errors: ONE handler for every worker ---------------------------------------------------
    @on(Worker.StateChanged)
    def _worker_state_changed(self, event: Worker.StateChanged) -> None:
        self.handle_worker_state(event)

    def handle_worker_state(self, event: Worker.StateChanged) -> None:
        """The one place worker errors go (screens forward theirs: the message
        does not bubble)."""
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        if error is None:
            return
        self.show_error(f"{event.worker.description or event.worker.name} failed", error)
        try:
            self.screen.post_message(WorkerFailed(event.worker.group, error))
        except Exception:  # noqa: BLE001 - the screen may be gone
            pass

    def show_error(self, title: str, error: BaseException | str, hint: str | None = None) -> None:
        from ezrunner.tui.dialogs.error import ErrorDialog

        if isinstance(error, BaseException):
            message, hint2 = error_text(error)
            hint = hint or hint2
        else:
            message = error
        self.errors_shown.append(message)
        self.push_screen(ErrorDialog(title, message, hint))

    # ---- command palette: the current screen's actions ------------------------------------------
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        from textual.screen import Screen as _Screen

        seen: set[str] = set()
        for active in screen.active_bindings.values():
            binding = active.binding
            # the screen's own actions (not a focused Input's editing keys, not the app's)
            if not isinstance(active.node, _Screen) or not binding.description:
                continue
            if binding.action in seen or not active.enabled:
                continue
            seen.add(binding.action)
            node = active.node

            def run(action: str = binding.action, node: Any = node) -> None:
                self.call_later(self.run_action, action, node)

            yield SystemCommand(binding.description, f"{binding.description} ({binding.key})", run)
        yield SystemCommand("Pack a model", "Open the pack wizard (F1)", self.action_open_pack)
        yield SystemCommand("Run a bundle", "Open the run screen (F2)", self.action_open_run)
        yield SystemCommand("Chat", "Open the chat screen (F3)", self.action_open_chat)
        yield from super().get_system_commands(screen)


def run_app() -> int:
    EzRunnerApp().run()
    return 0
