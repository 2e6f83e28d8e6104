"""The ``ezrunner`` command line.

With no subcommand it opens the TUI. Each subcommand lives in its own module
under ``ezrunner/cli/`` and exposes ``register(subparsers)``; the module is
imported for ``--help`` too, so it must import heavy libraries (docker, hub
clients, torch) inside its handler, never at module level.

Errors: an :class:`~ezrunner.core.errors.EzError` prints as one line (plus a
hint) and exits with its code; anything else prints one line too, unless
``--debug`` is given, which shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ezrunner._version import __version__

# Subcommand modules, in the order --help lists them. Add a module here only
# when its command really works.
COMMAND_MODULES: tuple[str, ...] = ("demo", "search", "probe", "plan", "pack", "serve", "run", "ps", "logs", "stop",
                                    "prune", "k8s")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ezrunner",
        description=(
            "Pack a Hugging Face or ModelScope model with an inference engine into one offline "
            "Docker bundle, then load, run and chat with it on an air-gapped server. "
            "Run with no command to open the terminal wizard."
        ),
    )
    parser.add_argument("--version", action="version", version=f"ezrunner {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"ezrunner.cli.{name}")
        module.register(sub)
    return parser


def _print_error(message: str, hint: str | None = None) -> None:
    print(f"ezrunner: error: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ezrunner.core.errors import EzError
    from ezrunner.core.settings import settings

    debug = args.debug or settings().debug

    try:
        if args.command is None:
            from ezrunner.tui.app import run_app

            return run_app()
        return int(args.func(args) or 0)
    except EzError as exc:
        if debug:
            raise
        _print_error(exc.message, exc.hint)
        return exc.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        print("ezrunner: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        if debug:
            raise
        _print_error(f"{type(exc).__name__}: {exc}".splitlines()[0], "run again with --debug for the traceback")
        return 1
