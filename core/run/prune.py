"""``ezrunner prune``: remove the bundle images nothing uses.

``run`` loads a bundle's image and keeps it, so that the next ``run`` starts
without loading. When a newer bundle of the same model takes the tag
(``ezrunner/<name>:<engine>-<device>-<12 hex>``), the older image stays behind
untagged ("dangling"). This removes those; with ``all_images`` also the tagged
bundle images no container (running or stopped) uses. Engine images and their
build cache are pack's: pack removes engine images older than an hour itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ezrunner.core import docker_api
from ezrunner.core.bundle.format import LABEL_SERVED_MODEL_NAME


@dataclass(frozen=True)
class PrunedImage:
    image_id: str
    tags: tuple[str, ...]  # empty for a dangling image
    size: int
    removed: bool  # False: a dry run, or Docker refused (then ``error`` says why)
    error: str = ""


def bundle_images(client: Any, *, all_images: bool = False) -> list[Any]:
    """The bundle images (they carry ``ezrunner.served-model-name``) that no
    container uses: the dangling ones, or every one with ``all_images``."""
    filters: dict[str, Any] = {"label": LABEL_SERVED_MODEL_NAME}
    if not all_images:
        filters["dangling"] = True
    used = {c.attrs.get("Image") for c in client.containers.list(all=True)}
    return [img for img in client.images.list(filters=filters) if img.id not in used]


def prune(client: Any, *, all_images: bool = False, dry_run: bool = False) -> list[PrunedImage]:
    """Remove (or with ``dry_run`` only list) what :func:`bundle_images` finds."""
    return [_remove(client, img, dry_run) for img in bundle_images(client, all_images=all_images)]


def _remove(client: Any, image: Any, dry_run: bool) -> PrunedImage:
    from docker.errors import DockerException

    tags = tuple(image.tags or ())
    size = int(image.attrs.get("Size") or 0)
    if dry_run:
        return PrunedImage(image.id, tags, size, removed=False)
    try:
        for tag in tags:
            client.images.remove(tag, noprune=False)
        if not tags:
            client.images.remove(image.id, noprune=False)
    except DockerException as exc:
        return PrunedImage(image.id, tags, size, removed=False, error=docker_api.api_message(exc))
    return PrunedImage(image.id, tags, size, removed=True)
