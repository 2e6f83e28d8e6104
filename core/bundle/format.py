"""The bundle contract: every name, label, member and file of an ezrunner bundle.

A bundle is ONE tar in the classic ``docker save`` ("docker-archive") layout whose
first member is :data:`BUNDLE_MANIFEST_NAME` (``ezrunner-bundle.json``, a
:class:`BundleManifest`). Next to it lies ``BUNDLE.tar.sha256`` in ``sha256sum``
format, naming the joined tar. With ``--split-size`` the tar is written as
``BUNDLE.tar.part-001``, ``-002``, ...

The image inside carries ``ezrunner.*`` labels (:class:`BundleLabels`): the run
side starts a container from those labels alone. The image config and
``manifest.json`` are built here too, so the writer (``bundle.writer``, used by
``core.pack``) and the reader (``bundle.reader``, used by ``core.run``) share one
definition of the format. Pure Python; nothing heavy is imported.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ezrunner.core.engines import CONTAINER_PORT, CONTAINER_UID, EngineSpec
from ezrunner.core.errors import EzError, UsageError

from ezrunner._version import __version__

BUNDLE_FORMAT = "ezrunner-bundle/1"
BUNDLE_MANIFEST_NAME = "ezrunner-bundle.json"
DOCKER_MANIFEST_NAME = "manifest.json"
SIDECAR_SUFFIX = ".sha256"
PART_INFIX = ".part-"
PART_DIGITS = 3
MAX_PARTS = 10**PART_DIGITS - 1
PART_RE = re.compile(r"^(?P<base>.+)" + re.escape(PART_INFIX) + rf"(?P<num>\d{{{PART_DIGITS}}})$")
SOURCE_URL = "https://github.com/ezrunner/ezrunner"
# Every bundle image is tagged under this repository (see :func:`image_tag`).
IMAGE_REPO_PREFIX = "ezrunner/"

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
LABEL_BASE_IMAGE = "ezrunner.base-image"

OCI_TITLE = "org.opencontainers.image.title"
OCI_VERSION = "org.opencontainers.image.version"
OCI_CREATED = "org.opencontainers.image.created"
OCI_DESCRIPTION = "org.opencontainers.image.description"
OCI_SOURCE = "org.opencontainers.image.source"

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class BundleError(EzError):
    """A bundle file problem: missing part, truncated, checksum mismatch, not a bundle."""

    exit_code = 2


def now_iso() -> str:
    """The current time as ISO-8601 UTC with a ``Z`` suffix, seconds precision."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_json(raw: bytes | str) -> Any:
    """``json.loads`` for bytes from a bundle: any failure (bad UTF-8, bad JSON,
    nesting deep enough to exhaust the stack) is a ValueError."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise ValueError(str(exc)[:200] or type(exc).__name__) from None


# --------------------------------------------------------------------------- manifest

_MANIFEST_REQUIRED = ("model", "served_model_name", "engine", "device", "image_id", "image_tag")


@dataclass
class BundleManifest:
    """The ``ezrunner-bundle.json`` member (first member of the bundle tar)."""

    model: str
    served_model_name: str
    engine: str
    device: str
    image_id: str
    image_tag: str
    ezrunner_version: str = __version__
    revision: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    model_bytes: int = 0
    plan: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=now_iso)
    format: str = BUNDLE_FORMAT

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {"format": d.pop("format"), **d}  # contract order: format first

    def to_json_bytes(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n").encode("utf-8")

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "the bundle") -> BundleManifest:
        """The one validation of the manifest; a problem is a :class:`BundleError`
        saying ``not a bundle: <where> <what is wrong>``."""
        why = _manifest_problem(data)
        if why:
            raise BundleError(f"not a bundle: {where} {why}",
                              hint="give the .tar written by `ezrunner pack` (or its first .part-001)")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json_bytes(cls, raw: bytes, *, where: str = "the bundle") -> BundleManifest:
        try:
            data = parse_json(raw)
        except ValueError:
            raise BundleError(f"not a bundle: {where} has a {BUNDLE_MANIFEST_NAME} that is not JSON",
                              hint="give the .tar written by `ezrunner pack` (or its first .part-001)") from None
        return cls.from_dict(data, where=where)


def _manifest_problem(data: Any) -> str | None:
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        fmt = data.get("format") if isinstance(data, dict) else None
        return f"has format {fmt!r} in {BUNDLE_MANIFEST_NAME}, expected {BUNDLE_FORMAT!r}"
    for key in _MANIFEST_REQUIRED:
        if not isinstance(data.get(key), str) or not data[key]:
            return f"has no {key!r} in {BUNDLE_MANIFEST_NAME}"
    files, plan = data.get("files", {}), data.get("plan", {})
    if not isinstance(files, dict) or not isinstance(plan, dict):
        return f"has a malformed {BUNDLE_MANIFEST_NAME} (files and plan must be objects)"
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        return f"has a malformed {BUNDLE_MANIFEST_NAME} (files must map names to sha256 strings)"
    return _manifest_field_problem(data)


def _manifest_field_problem(data: dict[str, Any]) -> str | None:
    size = data.get("model_bytes", 0)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return f"has a malformed {BUNDLE_MANIFEST_NAME} (model_bytes must be a whole number)"
    for key in ("revision", "created", "ezrunner_version"):
        if data.get(key) is not None and not isinstance(data[key], str):
            return f"has a malformed {BUNDLE_MANIFEST_NAME} ({key} must be a string)"
    return None


# --------------------------------------------------------------------------- labels

_LABELS_REQUIRED = (LABEL_MODEL, LABEL_SERVED_MODEL_NAME, LABEL_ENGINE, LABEL_PORT, LABEL_READY_PATH,
                    LABEL_SERVE_ARGS, LABEL_API_KEY_ENV)


@dataclass(frozen=True)
class BundleLabels:
    """The image's ``ezrunner.*`` labels: the ONLY source of how to start it."""

    model: str
    served_model_name: str
    engine: str
    device: str
    needs_gpu: bool
    port: int
    ready_path: str
    serve_args: tuple[str, ...]
    api_key_env: str
    model_bytes: int
    revision: str = ""
    version: str = ""
    plan: dict[str, Any] = field(default_factory=dict)
    created: str = ""

    @classmethod
    def for_bundle(cls, manifest: BundleManifest, spec: EngineSpec, serve_args: list[str]) -> BundleLabels:
        """The labels pack writes for a bundle (the manifest's values, the row's paths)."""
        return cls(
            model=manifest.model, served_model_name=manifest.served_model_name, engine=spec.engine,
            device=spec.device, needs_gpu=spec.needs_gpu, port=CONTAINER_PORT, ready_path=spec.ready_path,
            serve_args=tuple(serve_args), api_key_env=spec.api_key_env, model_bytes=manifest.model_bytes,
            revision=manifest.revision or "", version=__version__, plan=manifest.plan, created=manifest.created,
        )

    def to_labels(self) -> dict[str, str]:
        """The label dict, in the order pack has always written it."""
        return {
            LABEL_MODEL: self.model,
            LABEL_REVISION: self.revision,
            LABEL_SERVED_MODEL_NAME: self.served_model_name,
            LABEL_ENGINE: self.engine,
            LABEL_DEVICE: self.device,
            LABEL_NEEDS_GPU: "true" if self.needs_gpu else "false",
            LABEL_PORT: str(self.port),
            LABEL_READY_PATH: self.ready_path,
            LABEL_SERVE_ARGS: json.dumps(list(self.serve_args)),
            LABEL_API_KEY_ENV: self.api_key_env,
            LABEL_PLAN: json.dumps(self.plan, sort_keys=True, separators=(",", ":")),
            LABEL_MODEL_BYTES: str(self.model_bytes),
            LABEL_VERSION: self.version,
            OCI_TITLE: self.served_model_name,
            OCI_VERSION: self.revision or self.version,
            OCI_CREATED: self.created,
            OCI_DESCRIPTION: f"{self.model} served by {self.engine} on {self.device} (ezrunner bundle)",
            OCI_SOURCE: SOURCE_URL,
        }

    @classmethod
    def from_labels(cls, labels: dict[str, str] | None, *, what: str = "the image") -> BundleLabels:
        """Parse and check the labels; a problem is a :class:`BundleError` naming the label."""
        labels = labels or {}
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise BundleError(f"not an ezrunner image: {what} has labels that are not strings",
                              hint="run bundles written by `ezrunner pack`; nothing about the engine is guessed")
        missing = [k for k in _LABELS_REQUIRED if not labels.get(k)]
        if missing:
            raise BundleError(
                f"not an ezrunner image: {what} lacks the label(s) {', '.join(missing)}",
                hint="run bundles written by `ezrunner pack`; nothing about the engine is guessed",
            )
        return cls(
            model=labels[LABEL_MODEL], served_model_name=labels[LABEL_SERVED_MODEL_NAME],
            engine=labels[LABEL_ENGINE], device=labels.get(LABEL_DEVICE, ""),
            needs_gpu=labels.get(LABEL_NEEDS_GPU, "").strip().lower() == "true",
            port=_label_port(labels, what), ready_path=_label_ready_path(labels, what),
            serve_args=_label_serve_args(labels, what), api_key_env=labels[LABEL_API_KEY_ENV],
            model_bytes=_label_int(labels.get(LABEL_MODEL_BYTES)), revision=labels.get(LABEL_REVISION, ""),
            version=labels.get(LABEL_VERSION, ""), plan=_label_plan(labels.get(LABEL_PLAN)),
            created=labels.get(OCI_CREATED, ""),
        )


def _label_port(labels: dict[str, str], what: str) -> int:
    try:
        port = int(labels[LABEL_PORT])
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        raise BundleError(f"bad label {LABEL_PORT}={labels[LABEL_PORT]!r} on {what}") from None
    return port


def _label_serve_args(labels: dict[str, str], what: str) -> tuple[str, ...]:
    try:
        args = parse_json(labels[LABEL_SERVE_ARGS])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise ValueError
    except ValueError:
        raise BundleError(f"bad label {LABEL_SERVE_ARGS} on {what}: not a JSON list of strings") from None
    return tuple(args)


def _label_ready_path(labels: dict[str, str], what: str) -> str:
    ready = labels[LABEL_READY_PATH]
    if not ready.startswith("/"):
        raise BundleError(f"bad label {LABEL_READY_PATH}={ready!r} on {what}: not a path")
    return ready


def _label_int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def _label_plan(text: str | None) -> dict[str, Any]:
    try:
        plan = parse_json(text or "{}")
    except ValueError:
        return {}
    return plan if isinstance(plan, dict) else {}


def engine_image_labels(spec: EngineSpec, base_image: str) -> list[tuple[str, str]]:
    """The labels of an engine image (before any model is added), for its Dockerfile."""
    return [
        (LABEL_ENGINE, spec.engine),
        (LABEL_DEVICE, spec.device),
        (LABEL_NEEDS_GPU, "true" if spec.needs_gpu else "false"),
        (LABEL_PORT, str(CONTAINER_PORT)),
        (LABEL_READY_PATH, spec.ready_path),
        (LABEL_API_KEY_ENV, spec.api_key_env),
        (LABEL_VERSION, __version__),
        (LABEL_BASE_IMAGE, base_image),
        (OCI_SOURCE, SOURCE_URL),
    ]


# --------------------------------------------------------------------------- image config + manifest.json

_NANO = 1_000_000_000


@dataclass(frozen=True)
class ImageSpec:
    """What the bundle's image config adds to the engine image's config."""

    spec: EngineSpec
    labels: BundleLabels
    model_diff_id: str  # "sha256:<hex>" of the model layer
    history: str  # the model layer's created_by line


def image_config(engine_config: dict[str, Any], image: ImageSpec) -> dict[str, Any]:
    """The bundle image's config: the engine image's config, with the model layer,
    the labels, the serve command, the health check, the port and the user."""
    cfg = copy.deepcopy(engine_config)
    for k in ("container", "container_config", "docker_version", "id", "parent"):
        cfg.pop(k, None)
    created = image.labels.created
    cfg["created"] = created
    cc = cfg.setdefault("config", {})
    cc["Labels"] = {**(cc.get("Labels") or {}), **image.labels.to_labels()}
    cc["Cmd"] = list(image.labels.serve_args)
    if image.spec.clear_entrypoint:
        cc["Entrypoint"] = None
    cc["Healthcheck"] = {"Test": image.spec.healthcheck(), "Interval": 10 * _NANO, "Timeout": 5 * _NANO,
                         "StartPeriod": image.spec.start_period_s * _NANO, "Retries": 3}
    cc["ExposedPorts"] = {f"{CONTAINER_PORT}/tcp": {}}
    cc["User"] = f"{CONTAINER_UID}:{CONTAINER_UID}"
    diff_ids = list(cfg.get("rootfs", {}).get("diff_ids") or [])
    cfg["rootfs"] = {"type": "layers", "diff_ids": [*diff_ids, image.model_diff_id]}
    cfg["history"] = [*(cfg.get("history") or []),
                      {"created": created, "created_by": image.history, "comment": "ezrunner model layer"}]
    return cfg


def image_config_bytes(config: dict[str, Any]) -> tuple[bytes, str]:
    """Serialise an image config; returns (bytes, "sha256:<hex>") - the image id."""
    raw = json.dumps(config, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return raw, "sha256:" + hashlib.sha256(raw).hexdigest()


def layer_member(diff_id: str) -> str:
    """A layer's member name in the archive: ``<hex>/layer.tar``."""
    return f"{diff_id.split(':')[1]}/layer.tar"


def config_member(image_id: str) -> str:
    """The image config's member name: ``<hex>.json``."""
    return f"{image_id.split(':')[1]}.json"


def image_tag(served_name: str, spec: EngineSpec, model_diff_id: str) -> str:
    """The bundle image's tag: ``ezrunner/<served>:<engine>-<device>-<12 hex>``."""
    return f"{IMAGE_REPO_PREFIX}{served_name}:{spec.key}-{model_diff_id.split(':')[1][:12]}"


def docker_manifest_bytes(config_name: str, repo_tag: str, layers: list[str]) -> bytes:
    """``manifest.json`` of a one-image docker-archive."""
    return json.dumps([{"Config": config_name, "RepoTags": [repo_tag], "Layers": layers}]).encode()


@dataclass(frozen=True)
class DockerManifest:
    """The one entry of ``manifest.json`` the run side reads."""

    config: str
    layers: tuple[str, ...]
    repo_tags: tuple[str, ...] = ()

    @classmethod
    def from_bytes(cls, raw: bytes) -> DockerManifest:
        """Raises ValueError (saying what is wrong) unless it is a docker-archive
        manifest of exactly ONE image: a config name, layer names, tags, all strings."""
        entries = parse_json(raw)
        if not isinstance(entries, list) or len(entries) != 1 or not isinstance(entries[0], dict):
            raise ValueError("it must list exactly one image")
        entry = entries[0]
        config, layers, tags = entry.get("Config"), entry.get("Layers"), entry.get("RepoTags") or []
        if not isinstance(config, str) or not config:
            raise ValueError("its Config is not a name")
        if not _strings(layers) or not layers:
            raise ValueError("its Layers are not a list of names")
        if not _strings(tags):
            raise ValueError("its RepoTags are not a list of names")
        return cls(config=config, layers=tuple(layers), repo_tags=tuple(tags))


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


# --------------------------------------------------------------------------- sidecar


@dataclass(frozen=True)
class Sidecar:
    sha256: str
    name: str


def sidecar_path(bundle: str | Path) -> Path:
    """``BUNDLE.tar`` -> ``BUNDLE.tar.sha256``."""
    p = Path(bundle)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def format_sidecar(digest_hex: str, bundle_name: str) -> str:
    """One ``sha256sum`` line: ``<64 hex>  NAME\\n`` (NAME is a basename)."""
    if not _HEX64.match(digest_hex):
        raise ValueError(f"not a sha256 hex digest: {digest_hex!r}")
    return f"{digest_hex}  {Path(bundle_name).name}\n"


def parse_sidecar(text: str) -> Sidecar:
    """Parse a ``sha256sum`` line (``<hex>  NAME``, or ``<hex> *NAME`` in binary mode)."""
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        m = re.match(r"^([0-9a-fA-F]{64}) [ *](.+)$", line)
        if not m:
            break
        return Sidecar(m.group(1).lower(), m.group(2).strip())
    raise EzError("the checksum file is not in sha256sum format (<64 hex>  NAME)")


# --------------------------------------------------------------------------- parts


def part_path(bundle: str | Path, index: int) -> Path:
    """``BUNDLE.tar`` + 1 -> ``BUNDLE.tar.part-001`` (1-based)."""
    if not 1 <= index <= MAX_PARTS:
        raise ValueError(f"part index out of range: {index}")
    p = Path(bundle)
    return p.with_name(f"{p.name}{PART_INFIX}{index:0{PART_DIGITS}d}")


def part_number(bundle_name: str, candidate: str) -> int | None:
    """The part number when ``candidate`` is a part of ``bundle_name``, else None."""
    m = PART_RE.match(candidate)
    return int(m.group("num")) if m and m.group("base") == bundle_name else None


def parse_size(text: str) -> int:
    """Parse a size like ``3.9G``, ``500M``, ``2GiB``, ``1048576`` into bytes.
    Suffixes are binary (K = 1024). Raises UsageError on nonsense."""
    s = str(text).strip()
    m = re.match(r"^(\d+(?:\.\d+)?)\s*([KMGTkmgt]?)(?:i?[Bb])?$", s)
    if not m:
        raise UsageError(f"not a size: {text!r}", hint="write it like 3.9G, 700M or 1048576")
    mult = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}[m.group(2).upper()]
    n = int(float(m.group(1)) * mult)
    if n <= 0:
        raise UsageError(f"size must be positive: {text!r}")
    return n
