"""``ezrunner prune [--all] [--dry-run]``: remove bundle images nothing uses."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prune",
        help="remove bundle images no container uses (the untagged ones; every one with --all)",
        description="`ezrunner run` keeps a bundle's image loaded so that the next run starts at once. "
        "When a newer bundle of the same model takes its tag, the old image stays behind untagged; "
        "this removes those. With --all it also removes tagged bundle images that no container "
        "(running or stopped) uses. Engine images are pack's cache and stay.",
    )
    p.add_argument("--all", dest="all_images", action="store_true",
                   help="also remove tagged bundle images that no container uses")
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ezrunner.core import run
    from ezrunner.core.run.prune import prune
    from ezrunner.core.units import human_bytes

    client = run.connect(timeout=300)
    rows = prune(client, all_images=args.all_images, dry_run=args.dry_run)
    if not rows:
        print("nothing to prune: every ezrunner bundle image is tagged and in use" if not args.all_images
              else "nothing to prune: every ezrunner bundle image is in use")
        return 0
    for r in rows:
        what = ", ".join(r.tags) or "untagged"
        verb = "would remove" if args.dry_run else ("removed" if r.removed else f"kept ({r.error})")
        print(f"{verb} {r.image_id[7:19]} {what} ({human_bytes(r.size)})")
    return 0 if args.dry_run or all(r.removed for r in rows) else 1
