"""ezrunner: pack a model and an inference engine into one offline Docker bundle.

The package is lazy on purpose (PEP 562): importing ``ezrunner`` costs nothing
beyond this file, so ``ezrunner --help`` and the TUI start fast and never pull
torch, transformers, docker or the hub clients until a command needs them.
"""

from __future__ import annotations

from ezrunner._version import __version__

__all__ = ["__version__"]
