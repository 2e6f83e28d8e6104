"""``ezrunner pack``: a model + the plan -> one offline Docker bundle (BUNDLE.tar).

Renders the core's progress events with rich: one bar per phase (download,
build, export) with bytes and throughput, Dockerfile steps, and the last build
log lines. ``core.pack`` does the work; this module only renders.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Generator
from typing import Any, TypeVar

T = TypeVar("T")


def register(sub: argparse._SubParsersAction) -> None:
    from ezrunner.cli._target import add_target_arguments

    p = sub.add_parser(
        "pack",
        help="pack a model + inference engine into one offline Docker bundle",
        description=(
            "Pack a Hugging Face / ModelScope model (hub id or local folder) with the inference engine "
            "the plan chooses into ONE tar that plain `docker load -i` accepts, plus a BUNDLE.tar.sha256 "
            "sidecar. The engine image is built once from a local base image and an offline wheelhouse "
            "and cached; the model layer is written straight into the bundle."
        ),
    )
    p.add_argument("model", metavar="MODEL", help="hub id (owner/name) or a local model folder")
    p.add_argument("-o", "--output", metavar="BUNDLE.tar", required=True, help="the bundle file to write")
    add_target_arguments(p)
    p.add_argument("--engine", choices=("auto", "vllm", "transformers"), default="auto",
                   help="serving engine (default: what the plan chooses)")
    p.add_argument("--base-image", metavar="IMAGE",
                   help="base image already in the local engine (default: the engine's pinned image)")
    p.add_argument("--revision", metavar="REV", help="hub branch, tag or commit (pinned to a commit)")
    p.add_argument("--split-size", metavar="SIZE",
                   help="write BUNDLE.tar.part-001, -002, ... of at most SIZE (e.g. 3.9G for FAT32)")
    p.add_argument("--max-model-len", type=int, metavar="N", help="context length to serve")
    p.add_argument("--yes", "-y", action="store_true", help="pack even when the plan says it does not fit")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="pack a model that ships its own Python code (config.json auto_map); the engine runs it")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import signal

    from ezrunner.cli._target import profile_from_args
    from ezrunner.core.pack import PackOptions, iter_pack

    options = PackOptions(
        args.model, args.output, engine=args.engine, base_image=args.base_image, revision=args.revision,
        split_size=args.split_size or None, max_model_len=args.max_model_len, yes=args.yes, token=os.environ.get("HF_TOKEN"),
        trust_remote_code=args.trust_remote_code,
    ).validated()
    options.profile = profile_from_args(args)

    def on_term(_signum, _frame):  # a kill: unwind so that temporaries are removed
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        result = render(iter_pack(options))
    finally:
        signal.signal(signal.SIGTERM, old)
    out = sys.stdout
    if result.parts:
        out.write(f"{len(result.parts)} parts: {result.parts[0]} .. {result.parts[-1]}\n")
        out.write(f"join with: cat {result.bundle}.part-* > {result.bundle}\n")
    else:
        out.write(f"{result.bundle}\n")
    out.write(f"sha256 {result.sha256}  ({result.sidecar})\n")
    out.write(f"image {result.image_tag}\n")
    return 0


def render(gen: Generator[Any, None, T]) -> T:
    """Drive the pack's event generator with the shared renderer (its phase table);
    returns what the generator returns."""
    from ezrunner.cli._render import PACK, EventRenderer
    from ezrunner.core.events import drive

    try:
        with EventRenderer(PACK) as renderer:
            return drive(gen, renderer)
    finally:
        gen.close()
