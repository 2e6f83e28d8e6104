"""The run screen: a real bundle loaded, started, its logs tailed, chatted with
and stopped through the real Docker engine; and the failures that must not crash
it (Docker down, a file that is not a bundle). Only NVML is faked."""

from __future__ import annotations

import os
import socket
import tarfile

import pytest
from ezrunner.tui.app import EzRunnerApp
from ezrunner.tui.dialogs.confirm import ConfirmDialog
from ezrunner.tui.dialogs.path import PathDialog
from ezrunner.tui.screens.chat import ChatScreen
from ezrunner.tui.screens.run import RunScreen
from ezrunner.tui.widgets.log_tail import LogTail
from support_tui import FakeNvml, screen_text, until
from textual.widgets import DataTable, Input


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def open_run(pilot, app) -> RunScreen:
    await pilot.press("r")
    await until(pilot, lambda: isinstance(app.screen, RunScreen), what="run screen")
    return app.screen


async def choose_first_bundle(pilot, screen: RunScreen) -> None:
    tree = screen.query_one("#run-tree")
    tree.focus()
    await until(pilot, lambda: tree.root.children, what="tree loaded")
    await pilot.press("down", "enter")
    await until(pilot, lambda: screen.bundle is not None, what="bundle chosen")


def ps_names(screen: RunScreen) -> list[str]:
    table = screen.query_one("#run-ps", DataTable)
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


async def test_docker_down_and_bad_files_are_one_line_states(tmp_path, monkeypatch, synthetic_bundle):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    folder = synthetic_bundle.parent
    (folder / "notes.txt").write_text("not shown\n")
    with tarfile.open(folder / "zz-garbage.tar", "w") as tf:
        tf.add(folder / "notes.txt", arcname="notes.txt")
    app = EzRunnerApp(nvml=FakeNvml(missing=True), bundle_dir=str(folder), show_version=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_run(pilot, app)
        await until(pilot, lambda: "(docker)" in ps_names(screen), what="ps unavailable row")
        text = screen_text(app)
        assert "unavailable" in text
        assert "notes.txt" not in text  # the picker shows bundles and folders only
        assert synthetic_bundle.name in text and "zz-garbage.tar" in text

        await choose_first_bundle(pilot, screen)
        assert screen.bundle == str(synthetic_bundle)
        await pilot.press("v")
        await until(pilot, lambda: screen.verified is not None, what="verified")
        assert "verified" in screen.state
        await pilot.press("g")  # load needs Docker: one line, no crash
        await until(pilot, lambda: screen.state.startswith("FAILED"), what="load failure")
        assert "FAILED load" in screen.state and "Docker" in screen.state
        assert "\n" not in screen.state

        screen.select_bundle(str(folder / "zz-garbage.tar"))
        screen.query_one("#run-tree").focus()
        await pilot.press("v")
        await until(pilot, lambda: screen.state.startswith("FAILED"), what="verify failure")
        assert "FAILED verify" in screen.state
        assert app.is_running and app.errors_shown == []


async def test_log_tail_keys_follow_wrap_filter_clear_save(tmp_path):
    app = EzRunnerApp(nvml=FakeNvml(missing=True), bundle_dir=str(tmp_path), show_version=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_run(pilot, app)
        log = screen.query_one(LogTail)
        assert log.lines == ["Waiting for logs... (start a bundle)"]
        log.append_lines([f"INFO request {i} " + "x" * 100 for i in range(30)] + ["ERROR engine stalled"])
        log.focus()
        await pilot.pause()
        assert len(log.lines) == 31
        await pilot.press("w")  # wrap: long lines break at the width
        assert log.wrap and len(log.lines) > 31
        await pilot.press("w")
        await pilot.press("s")  # follow off
        assert log.follow is False
        await pilot.press("s")
        await pilot.press("slash")
        box = screen.query_one("#run-filter", Input)
        assert box.has_focus
        await pilot.press(*"ERROR", "enter")
        assert log.lines == ["ERROR engine stalled"]
        assert len(log.buffer) == 31  # the filter hides, it does not drop
        target = tmp_path / "saved" / "run.log"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, PathDialog), what="save dialog")
        app.screen.query_one("#path-input", Input).value = str(target)
        await pilot.press("enter")
        await until(pilot, lambda: target.exists(), what="saved log")
        assert target.read_text().splitlines() == log.buffer
        await pilot.press("C")  # clear
        assert log.buffer == [] and log.lines == ["Waiting for logs... (start a bundle)"]


@pytest.mark.slow
async def test_load_start_logs_chat_and_stop_a_real_bundle(packed_bundle, docker_engine, tmp_path):
    from support_run import remove_containers

    name = f"tui-run-{os.getpid()}"
    port = free_port()
    nvml = FakeNvml(missing=True)
    app = EzRunnerApp(nvml=nvml, bundle_dir=str(packed_bundle.path.parent), show_version=False)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await open_run(pilot, app)
            await choose_first_bundle(pilot, screen)
            assert screen.bundle == str(packed_bundle.path)
            screen.query_one("#run-port", Input).value = str(port)
            screen.query_one("#run-key", Input).value = "tui-secret"
            screen.query_one("#run-name", Input).value = name
            screen.query_one("#run-tree").focus()
            await pilot.press("g")
            await until(pilot, lambda: screen.ready is not None or screen.state.startswith("FAILED"),
                        timeout=600, what="ready")
            assert screen.ready is not None, screen.state
            assert screen.state == "ready"
            text = screen_text(app)
            assert f"http://127.0.0.1:{port}/v1" in text and name in text
            await until(pilot, lambda: name in ps_names(screen), timeout=30, what="ps row")
            log = screen.query_one(LogTail)
            await until(pilot, lambda: len(log.buffer) > 0, timeout=60, what="container logs")

            # chat with the ready bundle
            log.focus()
            await pilot.press("c")
            await until(pilot, lambda: isinstance(app.screen, ChatScreen), what="chat")
            chat = app.screen
            assert chat.query_one("#chat-url", Input).value == f"http://127.0.0.1:{port}/v1"
            chat.query_one("#chat-max-tokens", Input).value = "6"
            chat.query_one("#chat-input", Input).focus()
            await pilot.press(*"Hello", "enter")
            await until(pilot, lambda: not chat.streaming and len(chat.turns) == 2, timeout=120, what="reply")
            assert chat.turns[-1].role == "assistant", chat.turns[-1].content
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is screen, what="run screen again")

            # restart: a new container from the same image, ready again
            old_id = screen.running.container.id
            log.focus()
            await pilot.press("t")
            await until(pilot, lambda: screen.ready is not None and screen.running.container.id != old_id
                        or screen.state.startswith("FAILED"), timeout=300, what="ready after restart")
            assert screen.state == "ready", screen.state

            # a fresh screen takes over the running bundle from the ps list
            await pilot.press("escape")
            await pilot.press("r")
            await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen is not screen, what="new run screen")
            screen = app.screen
            await until(pilot, lambda: name in ps_names(screen), timeout=30, what="ps row (new screen)")
            table = screen.query_one("#run-ps", DataTable)
            table.focus()
            table.move_cursor(row=ps_names(screen).index(name))
            await pilot.press("enter")
            await until(pilot, lambda: screen.ready is not None or screen.state.startswith("FAILED"), timeout=120,
                        what="attached and ready")
            assert screen.state == "ready" and screen.running.name == name
            log = screen.query_one(LogTail)
            await until(pilot, lambda: len(log.buffer) > 0, timeout=60, what="logs after attach")

            # stop, after confirming
            log.focus()
            await pilot.press("x")
            await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="stop confirmation")
            await pilot.press("y")
            await until(pilot, lambda: screen.running is None and screen.state == "stopped", timeout=120, what="stopped")
            assert not docker_engine.containers.list(all=True, filters={"name": f"^{name}$"})
            await until(pilot, lambda: name not in ps_names(screen), timeout=30, what="ps without it")
    finally:
        remove_containers(docker_engine, name)
