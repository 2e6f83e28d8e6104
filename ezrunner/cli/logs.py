"""``ezrunner logs NAME``: show (and follow) a running bundle's logs."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "logs",
        help="show the logs of a bundle started here",
        description="Print the logs of a container that `ezrunner run` started; -f keeps following.",
    )
    p.add_argument("name", metavar="NAME", help="the name `ezrunner ps` shows")
    p.add_argument("-f", "--follow", action="store_true", help="keep following new lines (Ctrl-C stops)")
    p.add_argument("--tail", default="all", metavar="N", help="only the last N lines (default: all)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import sys

    from ezrunner.core import run
    from ezrunner.core.errors import UsageError

    tail: int | str = "all"
    if args.tail != "all":
        try:
            tail = int(args.tail)
            if tail < 0:
                raise ValueError
        except ValueError:
            raise UsageError(f"--tail: {args.tail!r} is not a number of lines") from None
    client = run.connect()
    container = run.get_managed(client, args.name)
    try:
        for batch in run.follow_logs(container, follow=args.follow, tail=tail):
            sys.stdout.write("\n".join(batch) + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        return 0
    return 0
