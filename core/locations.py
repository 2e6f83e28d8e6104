"""Where ezrunner keeps its own files. ``EZRUNNER_HOME`` overrides everything
(the tests point it at a temporary folder)."""

from __future__ import annotations

from pathlib import Path

from ezrunner.core.settings import settings


def home() -> Path:
    return settings().home


def demo_model_dir() -> Path:
    """The default place of the built-in demo model."""
    return home() / "demo-model"
