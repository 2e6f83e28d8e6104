"""Snapshots of every finished screen at 80x24 (fixed fake data, MockClock progress,
no version in the header). Update with ``pytest tests/test_tui_snapshots.py
--snapshot-update`` after checking the HTML report."""

from __future__ import annotations

import pytest
from ezrunner.tui.app import EzRunnerApp
from textual.widgets import Input


@pytest.fixture(autouse=True)
def _steady_cursor(monkeypatch):
    """Freeze the input cursor blink so the frames are stable."""
    monkeypatch.setattr(Input, "_toggle_cursor", lambda _self: None, raising=False)


def test_welcome(snap_compare):
    assert snap_compare(EzRunnerApp(show_version=False), terminal_size=(80, 24))


def test_chat_empty(snap_compare):
    async def run_before(pilot):
        pilot.app.action_open_chat("http://127.0.0.1:9/v1", "", "demo")
        await pilot.pause()

    assert snap_compare(EzRunnerApp(show_version=False), run_before=run_before, terminal_size=(80, 24))


def test_chat_error_in_conversation(snap_compare):
    async def run_before(pilot):
        pilot.app.action_open_chat("http://127.0.0.1:9/v1", "", "demo")
        await pilot.pause()
        await pilot.press(*"Hello", "enter")
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(EzRunnerApp(show_version=False), run_before=run_before, terminal_size=(80, 24))
