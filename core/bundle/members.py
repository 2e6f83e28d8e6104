"""Which tar members a bundle may hold, checked before anything reaches ``docker load``.

A bundle holds exactly the docker-archive layout (:mod:`ezrunner.core.bundle.format`):
``ezrunner-bundle.json``, ``manifest.json``, the image config and the layer tars
at the names ``manifest.json`` gives, plus the folders those names need. Every
member is a regular file or a folder: no links, devices or sparse files, no
absolute names, no ``..``. Inside the image, the model layer (the last one) holds
only folders and regular files under ``models/``.

Pure functions over ``tarfile.TarInfo`` headers; the reader walks the tar and
calls them. Each returns why a member is refused (None when it is fine), so the
caller words the one-line error.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterable
from dataclasses import dataclass

from ezrunner.core.bundle.format import BUNDLE_MANIFEST_NAME, DOCKER_MANIFEST_NAME, DockerManifest
from ezrunner.core.engines import MODELS_ROOT

_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE)
_KINDS = {tarfile.SYMTYPE: "a symbolic link", tarfile.LNKTYPE: "a hard link", tarfile.CHRTYPE: "a device",
          tarfile.BLKTYPE: "a device", tarfile.FIFOTYPE: "a FIFO"}
MODEL_PREFIX = MODELS_ROOT.strip("/")


def unsafe_name(name: str) -> str | None:
    """Why a member name could escape the folder it is unpacked into, or None."""
    if not name or name.startswith("/") or "\\" in name:
        return "has an absolute or empty name"
    if ".." in name.split("/"):
        return "has '..' in its name"
    if any(ord(c) < 32 for c in name):
        return "has a control character in its name"
    return None


def kind_problem(info: tarfile.TarInfo) -> str | None:
    """Why a member is neither a regular file nor a folder, or None."""
    if info.sparse is not None:
        return "is a sparse file"
    if info.isdir() or info.type in _FILE_TYPES:
        return None
    return "is " + _KINDS.get(info.type, f"of tar type {info.type!r}")


def member_problem(info: tarfile.TarInfo) -> str | None:
    """Why a member of a bundle (or of its model layer) is refused on its own, or None."""
    why = unsafe_name(info.name) or kind_problem(info)
    return f"member {info.name!r} {why}" if why else None


@dataclass(frozen=True)
class Layout:
    """The member names a docker-archive of one image may hold."""

    files: frozenset[str]
    folders: frozenset[str]

    @classmethod
    def of(cls, dm: DockerManifest) -> Layout:
        files = frozenset({BUNDLE_MANIFEST_NAME, DOCKER_MANIFEST_NAME, dm.config, *dm.layers})
        folders = {"/".join(f.split("/")[:i]) for f in files for i in range(1, f.count("/") + 1)}
        return cls(files, frozenset(folders))

    def problem(self, name: str, is_dir: bool) -> str | None:
        """Why ``name`` does not belong in this layout, or None."""
        if name in (self.folders if is_dir else self.files):
            return None
        return f"member {name!r} is not part of the docker-archive layout its manifest.json names"


def layout_problem(members: Iterable[tuple[str, bool]], dm: DockerManifest) -> str | None:
    """The first member (name, is a folder) outside the layout ``dm`` names, or None."""
    layout = Layout.of(dm)
    for name, is_dir in members:
        why = layout.problem(name, is_dir)
        if why:
            return why
    return None


def model_member_problem(info: tarfile.TarInfo) -> str | None:
    """Why a member of the model layer is refused: not a file or folder under /models."""
    why = member_problem(info)
    if why:
        return why
    name = info.name[2:] if info.name.startswith("./") else info.name
    if name != MODEL_PREFIX and not name.startswith(MODEL_PREFIX + "/"):
        return f"member {info.name!r} lies outside {MODELS_ROOT}"
    return None
