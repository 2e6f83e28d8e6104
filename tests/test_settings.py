"""One settings object: every EZRUNNER_* variable in the source is in core/settings.py,
the docs table is generated from it, and the host settings are read at call time."""

from __future__ import annotations

import re
from pathlib import Path

from ezrunner.core import locations
from ezrunner.core.settings import VARIABLES, Settings, markdown_table

REPO = Path(__file__).resolve().parent.parent


def _names_in_source() -> set[str]:
    names: set[str] = set()
    for folder in ("core", "tui", "ezrunner", "images"):
        for path in (REPO / folder).rglob("*.py"):
            names |= set(re.findall(r"\bEZRUNNER_[A-Z_]+\b", path.read_text(encoding="utf-8")))
    return names


def test_every_variable_in_the_source_is_listed():
    listed = {v.name for v in VARIABLES}
    assert _names_in_source() == listed


def test_the_docs_show_the_table():
    doc = (REPO / "docs" / "settings.md").read_text(encoding="utf-8")
    assert markdown_table() in doc


def test_settings_are_read_at_call_time(monkeypatch, tmp_path):
    monkeypatch.setenv("EZRUNNER_HOME", str(tmp_path / "h"))
    assert locations.home() == tmp_path / "h"
    monkeypatch.delenv("EZRUNNER_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert locations.home() == tmp_path / "xdg" / "ezrunner"


def test_from_env():
    s = Settings.from_env({"EZRUNNER_DEBUG": "1", "EZRUNNER_KEYMAP": "run.filter=f", "EZRUNNER_HOME": "/x"})
    assert s == Settings(home=Path("/x"), debug=True, keymap="run.filter=f")
    assert Settings.from_env({"EZRUNNER_DEBUG": "yes"}).debug is False
