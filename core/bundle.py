"""The bundle format (contract C): names, the in-tar manifest, the sidecar, parts.

A bundle is ONE tar in the classic ``docker save`` ("docker-archive") layout whose
first member is :data:`BUNDLE_MANIFEST_NAME` (``ezrunner-bundle.json``). Next to it
lies ``BUNDLE.tar.sha256`` in ``sha256sum`` format, naming the joined tar. With
``--split-size`` the tar is written as ``BUNDLE.tar.part-001``, ``-002``, ...

The pack side (``ezrunner.core.pack``) writes bundles; the run side
(``ezrunner.core.runner``) reads them. Both use only the names in this module.
This module is UI-free and imports nothing heavy.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ezrunner.core.errors import EzError, UsageError

# --------------------------------------------------------------------------- constants

BUNDLE_FORMAT = "ezrunner-bundle/1"
BUNDLE_MANIFEST_NAME = "ezrunner-bundle.json"
SIDECAR_SUFFIX = ".sha256"
PART_INFIX = ".part-"
PART_DIGITS = 3
MAX_PARTS = 10**PART_DIGITS - 1

# Image label keys (the run side reads ONLY these; all values are strings).
LABEL_MODEL = "ezrunner.model"
LABEL_REVISION = "ezrunner.revision"
LABEL_SERVED_MODEL_NAME = "ezrunner.served-model-name"
LABEL_ENGINE = "ezrunner.engine"
LABEL_DEVICE = "ezrunner.device"
LABEL_NEEDS_GPU = "ezrunner.needs-gpu"
LABEL_PORT = "ezrunner.port"
LABEL_READY_PATH = "ezrunner.ready-path"
LABEL_SERVE_ARGS = "ezrunner.serve-args"
LABEL_API_KEY_ENV = "ezrunner.api-key-env"
LABEL_PLAN = "ezrunner.plan"
LABEL_MODEL_BYTES = "ezrunner.model-bytes"
LABEL_VERSION = "ezrunner.version"

OCI_TITLE = "org.opencontainers.image.title"
OCI_VERSION = "org.opencontainers.image.version"
OCI_CREATED = "org.opencontainers.image.created"
OCI_DESCRIPTION = "org.opencontainers.image.description"
OCI_SOURCE = "org.opencontainers.image.source"

ENGINES = ("transformers", "vllm")
DEVICES = ("cpu", "cuda")
CONTAINER_PORT = 8000
READY_PATHS = {"transformers": "/ready", "vllm": "/health"}
API_KEY_ENVS = {"transformers": "EZRUNNER_API_KEY", "vllm": "VLLM_API_KEY"}
MODELS_ROOT = "/models"
CONTAINER_UID = 10001

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def model_dir_in_image(served_model_name: str) -> str:
    """Where the model lies inside the image: ``/models/<served-model-name>``."""
    return f"{MODELS_ROOT}/{served_model_name}"


def now_iso() -> str:
    """The current time as ISO-8601 UTC with a ``Z`` suffix, seconds precision."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------- manifest


@dataclass
class BundleManifest:
    """The ``ezrunner-bundle.json`` member (first member of the bundle tar)."""

    model: str
    served_model_name: str
    engine: str
    device: str
    image_id: str
    image_tag: str
    ezrunner_version: str
    revision: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    model_bytes: int = 0
    plan: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=now_iso)
    format: str = BUNDLE_FORMAT

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        # contract order: format first
        return {"format": d.pop("format"), **d}

    def to_json_bytes(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n").encode("utf-8")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BundleManifest:
        if not isinstance(data, dict):
            raise EzError("the bundle manifest is not a JSON object")
        fmt = data.get("format")
        if fmt != BUNDLE_FORMAT:
            raise EzError(
                f"unsupported bundle format {fmt!r} (this ezrunner reads {BUNDLE_FORMAT})",
                hint="pack the bundle again with this version of ezrunner",
            )
        missing = [k for k in ("model", "served_model_name", "engine", "device", "image_id", "image_tag") if k not in data]
        if missing:
            raise EzError(f"the bundle manifest lacks {', '.join(missing)}")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json_bytes(cls, raw: bytes) -> BundleManifest:
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EzError(f"the bundle manifest is not valid JSON ({exc})") from None
        return cls.from_dict(data)


# --------------------------------------------------------------------------- sidecar


def sidecar_path(bundle: str | os.PathLike[str]) -> Path:
    """``BUNDLE.tar`` -> ``BUNDLE.tar.sha256``."""
    p = Path(bundle)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def format_sidecar(digest_hex: str, bundle_name: str) -> str:
    """One ``sha256sum`` line: ``<64 hex>  NAME\\n`` (NAME is a basename)."""
    if not _HEX64.match(digest_hex):
        raise ValueError(f"not a sha256 hex digest: {digest_hex!r}")
    return f"{digest_hex}  {Path(bundle_name).name}\n"


def write_sidecar(bundle: str | os.PathLike[str], digest_hex: str) -> Path:
    """Write ``BUNDLE.tar.sha256`` atomically; returns its path."""
    from ezrunner.core.fsutil import atomic_write_text

    path = sidecar_path(bundle)
    atomic_write_text(path, format_sidecar(digest_hex, Path(bundle).name))
    return path


def parse_sidecar(text: str) -> tuple[str, str]:
    """Parse a ``sha256sum`` line; returns ``(hex digest, file name)``.
    Accepts the binary marker (``<hex> *NAME``) too."""
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        m = re.match(r"^([0-9a-fA-F]{64}) [ *](.+)$", line)
        if not m:
            break
        return m.group(1).lower(), m.group(2)
    raise EzError("the checksum file is not in sha256sum format (<64 hex>  NAME)")


def read_sidecar(path: str | os.PathLike[str]) -> tuple[str, str]:
    """Read a sidecar file; returns ``(hex digest, file name)``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EzError(f"checksum file not found: {p}", hint="it is written next to the bundle by `ezrunner pack`") from None
    return parse_sidecar(text)


# --------------------------------------------------------------------------- parts


def part_path(bundle: str | os.PathLike[str], index: int) -> Path:
    """``BUNDLE.tar`` + 1 -> ``BUNDLE.tar.part-001`` (1-based)."""
    if not 1 <= index <= MAX_PARTS:
        raise ValueError(f"part index out of range: {index}")
    p = Path(bundle)
    return p.with_name(f"{p.name}{PART_INFIX}{index:0{PART_DIGITS}d}")


def find_parts(bundle: str | os.PathLike[str]) -> list[Path]:
    """The existing parts of ``bundle`` in order (empty when not split). Raises when
    the numbering has a gap (a part is missing)."""
    p = Path(bundle)
    pat = re.compile(re.escape(p.name + PART_INFIX) + r"(\d{" + str(PART_DIGITS) + r"})$")
    found: dict[int, Path] = {}
    if p.parent.is_dir():
        for child in p.parent.iterdir():
            m = pat.match(child.name)
            if m:
                found[int(m.group(1))] = child
    if not found:
        return []
    indexes = sorted(found)
    expected = list(range(1, indexes[-1] + 1))
    if indexes != expected:
        missing = sorted(set(expected) - set(indexes))
        raise EzError(
            f"bundle part {part_path(p, missing[0]).name} is missing",
            hint="copy every BUNDLE.tar.part-NNN file into the same folder",
        )
    return [found[i] for i in indexes]


def parse_size(text: str) -> int:
    """Parse a size like ``3.9G``, ``500M``, ``2GiB``, ``1048576`` into bytes.
    Suffixes are binary (K = 1024). Raises UsageError on nonsense."""
    s = str(text).strip()
    m = re.match(r"^(\d+(?:\.\d+)?)\s*([KMGTkmgt]?)(?:i?[Bb])?$", s)
    if not m:
        raise UsageError(f"not a size: {text!r}", hint="write it like 3.9G, 700M or 1048576")
    value = float(m.group(1))
    mult = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}[m.group(2).upper()]
    n = int(value * mult)
    if n <= 0:
        raise UsageError(f"size must be positive: {text!r}")
    return n


# --------------------------------------------------------------------------- hashing


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def read_manifest_from_tar(path: str | os.PathLike[str]) -> BundleManifest:
    """Read ``ezrunner-bundle.json`` from the first member of a (joined) bundle tar
    without scanning the rest."""
    try:
        with tarfile.open(path, mode="r|") as tf:
            member = tf.next()
            if member is None or member.name != BUNDLE_MANIFEST_NAME or not member.isfile():
                raise EzError(f"{path} is not an ezrunner bundle (its first member is not {BUNDLE_MANIFEST_NAME})")
            fh = tf.extractfile(member)
            assert fh is not None
            return BundleManifest.from_json_bytes(fh.read())
    except tarfile.TarError as exc:
        raise EzError(f"{path} is not a readable tar ({exc})") from None
    except FileNotFoundError:
        raise EzError(f"bundle not found: {path}") from None
