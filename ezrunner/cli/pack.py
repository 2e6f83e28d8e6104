"""``ezrunner pack``: a model + the plan -> one offline Docker bundle (BUNDLE.tar).

Renders the core's progress events with rich: one bar per phase (download,
build, export) with bytes and throughput, Dockerfile steps, and the last build
log lines. ``core.pack`` does the work; this module only renders.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def _add_target_flags(p: argparse.ArgumentParser) -> None:
    try:
        from ezrunner.cli._target import add_target_arguments
    except ImportError:  # issue 3's module not there yet: the file form only
        g = p.add_argument_group("target")
        g.add_argument("--target", metavar="FILE", help="hardware profile JSON of the target machine")
        g.add_argument("--cpu-only", action="store_true", help="the target has no NVIDIA GPU")
        return
    add_target_arguments(p)


def register(sub: argparse._SubParsersAction) -> None:
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
    _add_target_flags(p)
    p.add_argument("--engine", choices=("auto", "vllm", "transformers"), default="auto",
                   help="serving engine (default: what the plan chooses)")
    p.add_argument("--base-image", metavar="IMAGE",
                   help="base image already in the local engine (default: the engine's pinned image)")
    p.add_argument("--revision", metavar="REV", help="hub branch, tag or commit (pinned to a commit)")
    p.add_argument("--split-size", metavar="SIZE",
                   help="write BUNDLE.tar.part-001, -002, ... of at most SIZE (e.g. 3.9G for FAT32)")
    p.add_argument("--max-model-len", type=int, metavar="N", help="context length to serve")
    p.add_argument("--yes", "-y", action="store_true", help="pack even when the plan says it does not fit")
    p.set_defaults(func=_run)


def _profile(args: argparse.Namespace) -> Any:
    try:
        from ezrunner.cli._target import profile_from_args
    except ImportError:
        return None
    return profile_from_args(args)


def _run(args: argparse.Namespace) -> int:
    import signal

    from ezrunner.core import pack as pack_mod
    from ezrunner.core.bundle.format import parse_size
    from ezrunner.core.errors import UsageError

    split = parse_size(args.split_size) if args.split_size else None
    if args.max_model_len is not None and args.max_model_len < 1:
        raise UsageError("--max-model-len: must be a positive whole number")
    profile = _profile(args)
    plan = None
    try:
        import ezrunner.core.plan  # noqa: F401
    except ImportError:
        plan = {}  # no planner available: Transformers on CPU

    def on_term(_signum, _frame):  # a kill: unwind so that temporaries are removed
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        gen = pack_mod.iter_pack(
            args.model, args.output, plan=plan, profile=profile,
            engine=None if args.engine == "auto" else args.engine,
            base_image=args.base_image, revision=args.revision, split_size=split,
            max_model_len=args.max_model_len, yes=args.yes, token=os.environ.get("HF_TOKEN"),
        )
        result = render(gen)
    finally:
        signal.signal(signal.SIGTERM, old)
    parts = result.get("parts") or []
    out = sys.stdout
    if parts:
        out.write(f"{len(parts)} parts: {parts[0]} .. {parts[-1]}\n")
        out.write(f"join with: cat {result['bundle']}.part-* > {result['bundle']}\n")
    else:
        out.write(f"{result['bundle']}\n")
    out.write(f"sha256 {result['sha256']}  ({result['sidecar']})\n")
    out.write(f"image {result['image_tag']}\n")
    return 0


def render(gen) -> Any:
    """Drive the pack's event generator with the shared renderer (its phase table);
    returns what the generator returns."""
    from ezrunner.cli._render import PACK, EventRenderer, drive

    try:
        with EventRenderer(PACK) as renderer:
            result = drive(gen, renderer)
    finally:
        close = getattr(gen, "close", None)
        if close is not None:
            close()
    # until core.pack returns its PackResult (r-pack), the result rides on the last event
    return result if result is not None else renderer.state.data.get("export", {})
