"""``ezrunner ps``: the bundles running here."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ps",
        help="list the bundles started here: name, model, engine, port, state, uptime",
        description="List the containers that `ezrunner run` started on this machine (running and stopped).",
    )
    p.add_argument("--running", action="store_true", help="only the running ones")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from ezrunner.core import run

    client = run.connect(timeout=60)
    rows = run.ps(client, all=not args.running)
    if args.json:
        print(json.dumps([asdict(r) | {"uptime": r.uptime} for r in rows], indent=2))
        return 0
    if not rows:
        print("no bundles started by ezrunner here (`ezrunner run BUNDLE.tar` starts one)")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("NAME", "MODEL", "ENGINE", "PORT", "STATE", "UPTIME"):
        table.add_column(col, overflow="fold")
    for r in rows:
        port = f"{r.host}:{r.port}" if r.port else "-"
        table.add_row(r.name, r.served_model_name or r.model, r.engine, port, r.state, r.uptime)
    Console(highlight=False).print(table)
    return 0
