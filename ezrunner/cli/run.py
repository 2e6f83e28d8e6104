"""``ezrunner run BUNDLE``: verify, load, start and wait for a bundle (offline)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ezrunner.cli import _render


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="verify, load and start a bundle, wait until it answers (offline)",
        description=(
            "Verify a bundle against its .sha256 sidecar and its manifest, load it into Docker "
            "(skipped when the image is there already), start it from its image labels, wait "
            "for its ready path and print the OpenAI base URL. Needs no network."
        ),
    )
    p.add_argument("bundle", metavar="BUNDLE", help="BUNDLE.tar, or its first part BUNDLE.tar.part-001")
    p.add_argument("--port", type=int, default=None, help="host port (default: the bundle's, 8000)")
    p.add_argument("--host", default="127.0.0.1", help="host address to bind (default 127.0.0.1; 0.0.0.0 = every address)")
    p.add_argument("--name", default=None, help="container name (default: the served model name)")
    p.add_argument("--gpus", default=None, metavar="all|0,1|none",
                   help="GPUs to give the container (default: all when the bundle needs a GPU, else none)")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--api-key-file", default=None, metavar="FILE",
                     help="require the API key in FILE ('-': read it from stdin) from clients")
    key.add_argument("--api-key", default=None,
                     help="require this API key from clients (visible in the process list: prefer --api-key-file)")
    p.add_argument("--no-verify", action="store_true", help="skip the sha256 check (the structure is still checked)")
    p.add_argument("--detach", "-d", action="store_true",
                   help="return once it is ready (default: then follow its logs until Ctrl-C, which leaves it running)")
    p.add_argument("--ready-timeout", type=float, default=None, metavar="SECONDS",
                   help="how long to wait for ready (default: scales with the model size)")
    p.add_argument("--network", default=None, help="attach to this Docker network instead of the default bridge")
    p.set_defaults(func=_run)


class EventRenderer(_render.EventRenderer):
    """The shared renderer in ``run``'s layout: byte bars for verify/load, an
    elapsed-time line with the latest log line while waiting for ready."""

    def __init__(self, console: Any = None) -> None:
        super().__init__(_render.RUN, console)


def _run(args: argparse.Namespace) -> int:
    from ezrunner.core.run import RunOptions, StartOptions, parse_gpus, run_bundle

    options = StartOptions(name=args.name, host=args.host, port=args.port, gpus=parse_gpus(args.gpus),
                           api_key=_api_key(args), network=args.network)
    render = EventRenderer()
    try:
        ready = run_bundle(args.bundle, options, RunOptions(verify=not args.no_verify, ready_timeout_s=args.ready_timeout),
                           on_event=render)
    except KeyboardInterrupt:
        render.close()
        if render.started:
            print(f"ezrunner: interrupted while waiting; {render.started} keeps starting in the background "
                  f"(`ezrunner logs -f {render.started}`, `ezrunner stop {render.started}`)", file=sys.stderr)
            return 130
        raise
    finally:
        render.close()
    _print_ready(ready)
    if not args.detach:
        _follow(ready)
    return 0


def _api_key(args: argparse.Namespace) -> str | None:
    """The key from --api-key-file (a file, or '-' for stdin; surrounding
    whitespace dropped) or --api-key (with a warning: other users see argv)."""
    from ezrunner.core.errors import UsageError
    from ezrunner.core.run import check_api_key

    if args.api_key is not None:
        print("ezrunner: warning: --api-key shows the key to every user of this machine (ps); "
              "use --api-key-file FILE or --api-key-file - (stdin)", file=sys.stderr)
        key = args.api_key
    elif args.api_key_file is None:
        return None
    else:
        try:
            raw = sys.stdin.read() if args.api_key_file == "-" else Path(args.api_key_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--api-key-file: cannot read {args.api_key_file}: {getattr(exc, 'strerror', None) or exc}") from None
        key = raw.strip()
    check_api_key(key)
    return key


def _print_ready(ready: Any) -> None:
    out = sys.stdout
    print(f"{ready.running.name} is ready ({ready.elapsed:.0f}s)", file=out)
    print(f"  OpenAI base URL: {ready.base_url}", file=out)
    print(f"  model:           {ready.model}", file=out)
    if ready.needs_key:
        print("  API key:         the one given with --api-key-file (export API_KEY=... for the command below)", file=out)
    print("  try it:", file=out)
    print(f"    {ready.curl()}", file=out)
    if ready.running.host not in ("127.0.0.1", "::1", "localhost"):
        print(f"  listening on {ready.running.host}:{ready.running.port} (reachable from other machines)", file=out)
    print(f"  stop it with: ezrunner stop {ready.running.name}", file=out)
    out.flush()


def _follow(ready: Any) -> None:
    from ezrunner.core.run import follow_logs

    out = sys.stdout
    print("following its logs; Ctrl-C stops following (the server keeps running)", file=sys.stderr)
    try:
        for batch in follow_logs(ready.running.container, follow=True, tail=0):
            for line in batch:
                print(line, file=out)
            out.flush()
    except KeyboardInterrupt:
        print(f"\nstill running: {ready.base_url}  (ezrunner stop {ready.running.name})", file=sys.stderr)
