"""``ezrunner stop NAME [--remove]``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stop",
        help="stop a bundle started here (and remove its container with --remove)",
        description="Stop a container that `ezrunner run` started. The loaded image stays, so "
        "`ezrunner run` starts it again without loading.",
    )
    p.add_argument("name", metavar="NAME", help="the name `ezrunner ps` shows")
    p.add_argument("--remove", "--rm", action="store_true", help="also remove the container")
    p.add_argument("--timeout", type=int, default=15, help="seconds to wait before killing it (default 15)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ezrunner.core import run

    client = run.connect(timeout=max(60, args.timeout + 30))
    print(run.stop(client, args.name, remove=args.remove, timeout=args.timeout))
    return 0
