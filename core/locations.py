"""Where ezrunner keeps its own files. ``EZRUNNER_HOME`` overrides everything
(the tests point it at a temporary folder)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    env = os.environ.get("EZRUNNER_HOME")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ezrunner"


def demo_model_dir() -> Path:
    """The default place of the built-in demo model."""
    return home() / "demo-model"
