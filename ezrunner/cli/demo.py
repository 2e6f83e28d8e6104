"""``ezrunner demo-model``: write the built-in demo model (works offline)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo-model",
        help="write the built-in tiny demo model (offline)",
        description=(
            "Write a real, tiny Hugging Face model directory (Llama architecture, random weights "
            "in safetensors, a BPE tokenizer and a chat template). Use it to try pack, serve "
            "and chat with no network."
        ),
    )
    p.add_argument("dest", nargs="?", help="folder to create (default: the ezrunner cache)")
    p.add_argument("--preset", default="tiny", help="tiny (~0.1 M parameters) or small (~34 M)")
    p.add_argument("--force", action="store_true", help="replace the folder if it exists")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    from ezrunner.core import locations
    from ezrunner.core.demo_model import PRESETS, write_demo_model
    from ezrunner.core.errors import UsageError

    if args.preset not in PRESETS:
        raise UsageError(f"--preset: unknown preset {args.preset!r}", hint=f"choose one of: {', '.join(PRESETS)}")
    dest = Path(args.dest) if args.dest else locations.demo_model_dir() / args.preset
    if args.force and dest.exists():
        shutil.rmtree(dest)
    path = write_demo_model(dest, preset=args.preset)
    print(path)
    return 0
