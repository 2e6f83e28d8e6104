"""Every ``EZRUNNER_*`` environment variable, in one typed object.

The host side reads its settings through :func:`settings` (at call time, so a
test or a wrapper script that changes the environment is seen). The embedded
server is copied into images and may not import ``core/``; its two variables
are listed here too (``side="server"``) and read by ``images/server/config.py``.
``docs/settings.md`` is the table of :data:`VARIABLES`, and a test keeps the two
and the source in agreement. Pure standard library: the base install stays light.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Variable:
    """One documented environment variable."""

    name: str
    default: str  # as the docs show it
    meaning: str
    side: str = "host"  # host | server (read inside the engine image by ezrunner_server)


VARIABLES: tuple[Variable, ...] = (
    Variable("EZRUNNER_HOME", "$XDG_CACHE_HOME/ezrunner, else ~/.cache/ezrunner",
             "where ezrunner keeps its own files: downloaded models, the wheelhouse, exported engine "
             "layers, the demo model"),
    Variable("EZRUNNER_DEBUG", "unset", "`1` prints tracebacks, as `--debug` does"),
    Variable("EZRUNNER_KEYMAP", "unset",
             "TUI key rebinding: `binding-id=keys` pairs separated by commas, e.g. `run.filter=f,app.pack=f9` "
             "(binding ids in docs/commands/tui.md)"),
    Variable("EZRUNNER_API_KEY", "unset",
             "the API key the embedded server requires (`Authorization: Bearer KEY`); `ezrunner run "
             "--api-key` hands it to the container in this variable, never in its argv or labels",
             side="server"),
    Variable("EZRUNNER_DRAIN_TIMEOUT", "10",
             "seconds the embedded server waits on SIGTERM for requests in flight (streams included) "
             "before it exits; `/ready` answers 503 from the first SIGTERM", side="server"),
    Variable("EZRUNNER_SERVER_FAULT_PROMPT", "unset",
             "tests only: a prompt that makes the embedded server's engine fail, to exercise the error paths",
             side="server"),
)


@dataclass(frozen=True)
class Settings:
    """The host side's settings, read from the environment."""

    home: Path
    debug: bool
    keymap: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(home=_home(env), debug=env.get("EZRUNNER_DEBUG") == "1", keymap=env.get("EZRUNNER_KEYMAP", ""))


def _home(env: Mapping[str, str]) -> Path:
    if env.get("EZRUNNER_HOME"):
        return Path(env["EZRUNNER_HOME"])
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ezrunner"


def settings() -> Settings:
    """The settings as the environment says now."""
    return Settings.from_env()


def markdown_table() -> str:
    """The table ``docs/settings.md`` shows."""
    rows = ["| variable | read by | default | meaning |", "|---|---|---|---|"]
    for v in VARIABLES:
        where = "the embedded server (in the image)" if v.side == "server" else "ezrunner"
        rows.append(f"| `{v.name}` | {where} | {v.default} | {v.meaning} |")
    return "\n".join(rows) + "\n"
