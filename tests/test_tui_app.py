"""App-wide behaviour: the error modal from the one worker-error handler, the
command palette listing the screen's actions, NO_COLOR, the GPU line of the run
screen's status panel (NVML seam), bindings with ids."""

from __future__ import annotations

from ezrunner.core.errors import EzError
from ezrunner.tui.app import EzRunnerApp
from ezrunner.tui.dialogs.error import ErrorDialog
from ezrunner.tui.screens.chat import ChatScreen
from ezrunner.tui.screens.run import RunScreen
from support_tui import A100_80G, FakeNvml, screen_text, until
from textual.widgets import Input


async def test_an_unexpected_worker_error_becomes_a_modal_not_a_crash():
    app = EzRunnerApp(show_version=False)

    def failing() -> None:
        raise EzError("the engine went away", hint="start Docker")

    async with app.run_test(size=(80, 24)) as pilot:
        app.run_worker(failing, thread=True, exit_on_error=False, description="test job", group="test")
        await until(pilot, lambda: isinstance(app.screen, ErrorDialog), what="error modal")
        text = screen_text(app)
        assert "test job failed" in text and "the engine went away" in text and "hint: start Docker" in text
        assert app.errors_shown == ["the engine went away"]
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, ErrorDialog), what="modal closed")
        assert app.is_running
        # a screen's worker: its StateChanged bubbles to the same App handler
        app.action_open_chat("http://127.0.0.1:9/v1", "", "m")
        await until(pilot, lambda: isinstance(app.screen, ChatScreen), what="chat")
        app.screen.run_worker(failing, thread=True, exit_on_error=False, description="screen job", group="test")
        await until(pilot, lambda: isinstance(app.screen, ErrorDialog), what="error modal for a screen worker")
        assert "screen job failed" in screen_text(app)
        assert app.errors_shown == ["the engine went away", "the engine went away"]


async def test_command_palette_lists_the_screens_actions():
    app = EzRunnerApp(show_version=False)
    async with app.run_test(size=(80, 24)) as pilot:
        app.action_open_chat("http://127.0.0.1:9/v1", "", "m")
        await until(pilot, lambda: isinstance(app.screen, ChatScreen), what="chat")
        commands = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Regenerate", "Clear", "Save", "Settings", "Back", "Pack a model", "Run a bundle"} <= commands
        assert "Cut selected text" not in commands  # a focused Input's keys are not screen actions
        await pilot.press("ctrl+p")
        await pilot.press(*"Regen")
        await pilot.pause(0.3)
        assert "Regenerate" in screen_text(app)
        await pilot.press("escape")


def test_every_binding_has_an_id():
    from ezrunner.tui.dialogs.confirm import ConfirmDialog
    from ezrunner.tui.dialogs.path import PathDialog
    from ezrunner.tui.screens import build, chat, done, hardware, review, run, search, welcome

    classes = [EzRunnerApp, ConfirmDialog, ErrorDialog, PathDialog, welcome.WelcomeScreen, search.SearchScreen,
               hardware.HardwareScreen, review.ReviewScreen, build.BuildScreen, done.DoneScreen, run.RunScreen,
               chat.ChatScreen]
    ids = []
    for cls in classes:
        for binding in cls.BINDINGS:
            assert binding.id, f"{cls.__name__}: {binding.key} has no id"
            ids.append(binding.id)
    assert len(ids) == len(set(ids))


async def test_no_color_start_and_text_marks(monkeypatch, tmp_path):
    monkeypatch.setenv("NO_COLOR", "1")
    app = EzRunnerApp(show_version=False, nvml=FakeNvml(missing=True))
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.no_color
        await pilot.press("p")
        await pilot.pause()
        text = screen_text(app)
        assert "[1 Search]" in text  # the current step without colour
        assert "▐X▌ HF" in text and "▐X▌ Local" in text
        app.screen.query_one("#src-local").value = False
        await pilot.pause()
        assert "▐ ▌ Local" in screen_text(app)  # off is visible without colour too


async def test_run_screen_shows_live_gpu_use_from_nvml(tmp_path):
    app = EzRunnerApp(show_version=False, nvml=FakeNvml([A100_80G, A100_80G], utilization=42), bundle_dir=str(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, RunScreen), what="run screen")
        screen = app.screen
        screen.poll_gpu()
        await until(pilot, lambda: screen.gpu_text, what="GPU line")
        assert screen.gpu_text.startswith("GPU     GPU0 42% 2.0 GiB/80.0 GiB  GPU1 42%")
        assert "GPU0 42%" in screen_text(app)


async def test_searching_with_no_source_says_so(tmp_path):
    app = EzRunnerApp(show_version=False, hub={"hf": "http://127.0.0.1:9"})
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("p")
        await pilot.pause()
        for key in ("hf", "modelscope", "local"):
            app.screen.query_one(f"#src-{key}").value = False
        box = app.screen.query_one("#search-query", Input)
        box.focus()
        await pilot.press(*"qwen", "enter")
        await pilot.pause()
        assert "Tick at least one source" in str(app.screen.query_one("#search-notice").content)


async def test_keymap_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EZRUNNER_KEYMAP", "run.filter=f, app.pack=f9")
    app = EzRunnerApp(show_version=False, nvml=FakeNvml(missing=True), bundle_dir=str(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f9")
        await until(pilot, lambda: type(app.screen).__name__ == "SearchScreen", what="f9 opens the pack wizard")
        await pilot.press("escape")
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, RunScreen), what="run screen")
        app.screen.query_one("#run-tree").focus()
        await pilot.press("f")
        await until(pilot, lambda: app.screen.query_one("#run-filter", Input).has_focus, what="f opens the filter")


def test_a_bad_keymap_is_ignored_with_a_reason(monkeypatch):
    from ezrunner.tui.app import parse_keymap

    assert parse_keymap("run.filter=f, chat.save = ctrl+w") == {"run.filter": "f", "chat.save": "ctrl+w"}
    assert parse_keymap("nonsense") == {}
    assert parse_keymap("") == {}


def test_line_batcher_hands_over_batches_not_lines():
    import threading
    import time

    import pytest
    from ezrunner.tui.batching import LineBatcher

    with pytest.raises(ValueError):
        LineBatcher(lambda batch: None, interval=0.01)  # below 50 ms: too many UI calls
    batches: list[list[str]] = []
    batcher = LineBatcher(batches.append, interval=0.05)

    def produce() -> None:
        for i in range(200):
            batcher.add([f"line {i}"])
            time.sleep(0.001)
        batcher.flush()

    worker = threading.Thread(target=produce)
    worker.start()
    worker.join()
    lines = [line for batch in batches for line in batch]
    assert lines == [f"line {i}" for i in range(200)]
    assert 1 < len(batches) < 50  # ~200 ms of lines in a handful of 50 ms batches
