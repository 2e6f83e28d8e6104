"""Read side of the bundle format (``bundle.format``): find split parts, read them as one
stream, check the structure and the checksum before anything reaches Docker.

Nothing here imports docker: verifying a bundle needs only the files.

A bundle is one tar in the classic ``docker save`` layout whose FIRST member is
``ezrunner-bundle.json``; next to it lies ``BUNDLE.tar.sha256`` (sha256sum format,
the hash of the whole joined tar). Split bundles are ``BUNDLE.tar.part-001``,
``-002``, ... (3 digits, 1-based) and read as if they were joined.

Every problem with the files raises :class:`BundleError` (exit code 2) whose
message names which problem it is: a missing part, a truncated file, a checksum
mismatch, or a file that is not a bundle.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ezrunner.core.bundle import format as fmt
from ezrunner.core.bundle import members
from ezrunner.core.bundle.format import (
    BUNDLE_MANIFEST_NAME,
    DOCKER_MANIFEST_NAME,
    BundleError,
    BundleLabels,
    BundleManifest,
    DockerManifest,
    Sidecar,
)
from ezrunner.core.errors import EzError
from ezrunner.core.events import BytesProgress, Event, Notice, PhaseFinished, PhaseStarted

READ_CHUNK = 4 * 1024 * 1024
# Emit a progress event at most this often (seconds) while hashing or loading.
PROGRESS_INTERVAL = 0.2


class RunCancelled(EzError):
    """The caller's ``cancelled()`` said stop (the TUI's cancel button)."""

    exit_code = 130


def part_name(base: str, index: int) -> str:
    """``BUNDLE.tar`` + 1 -> ``BUNDLE.tar.part-001``."""
    return fmt.part_path(base, index).name


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class BundleSource:
    """Where a bundle's bytes are: one file, or split parts in order.

    ``path`` is the joined name (``BUNDLE.tar``) even when it does not exist."""

    path: Path
    parts: tuple[Path, ...]
    sizes: tuple[int, ...]

    @property
    def size(self) -> int:
        return sum(self.sizes)

    @property
    def split(self) -> bool:
        return len(self.parts) > 1 or self.parts[0] != self.path

    @property
    def sidecar(self) -> Path:
        return fmt.sidecar_path(self.path)

    def open(self) -> JoinedReader:
        return JoinedReader(self.parts, self.sizes)

    def describe(self) -> str:
        if not self.split:
            return self.path.name
        return f"{self.path.name} ({len(self.parts)} parts)"


def find_bundle(path: str | os.PathLike[str]) -> BundleSource:
    """Resolve what the operator named: ``BUNDLE.tar``, any ``BUNDLE.tar.part-NNN``,
    or ``BUNDLE.tar`` when only its parts exist. Gaps in the part numbers raise
    :class:`BundleError` naming the first missing part."""
    p = Path(path)
    m = fmt.PART_RE.match(p.name)
    if m:
        joined = p.with_name(m.group("base"))
    else:
        joined = p
    if not m and p.is_file():
        return BundleSource(joined, (p,), (p.stat().st_size,))
    if not m and p.exists():
        raise BundleError(f"not a bundle: {p} is not a file")
    parts = _find_parts(joined)
    if not parts:
        if m:
            raise BundleError(f"missing part: {p.name} does not exist", hint=f"look in {p.parent}")
        raise BundleError(
            f"bundle not found: {p} (and no {part_name(p.name, 1)})",
            hint="give the path of BUNDLE.tar or of its first part BUNDLE.tar.part-001",
        )
    numbers = sorted(parts)
    expected = list(range(1, numbers[-1] + 1))
    missing = [n for n in expected if n not in parts]
    if missing:
        names = ", ".join(part_name(joined.name, n) for n in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise BundleError(
            f"missing part: {names}{more} (found {len(parts)} of at least {numbers[-1]} parts of {joined.name})",
            hint=f"copy every {joined.name}.part-NNN file into {joined.parent}",
        )
    ordered = tuple(parts[n] for n in expected)
    return BundleSource(joined, ordered, tuple(q.stat().st_size for q in ordered))


def _find_parts(joined: Path) -> dict[int, Path]:
    found: dict[int, Path] = {}
    folder = joined.parent if str(joined.parent) else Path(".")
    try:
        entries = list(folder.iterdir())
    except OSError:
        return found
    for entry in entries:
        number = fmt.part_number(joined.name, entry.name)
        if number is not None and entry.is_file():
            found[number] = entry
    return found


class JoinedReader(io.RawIOBase):
    """Read (and seek in) several files as one, without writing a joined copy."""

    def __init__(self, parts: tuple[Path, ...], sizes: tuple[int, ...]):
        super().__init__()
        self._parts = parts
        self._sizes = sizes
        self._starts: list[int] = []
        offset = 0
        for size in sizes:
            self._starts.append(offset)
            offset += size
        self._size = offset
        self._pos = 0
        self._index = -1
        self._fh: io.BufferedReader | None = None

    @property
    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"bad whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def _part_at(self, pos: int) -> int:
        # Few parts: a linear scan is fine.
        for i in range(len(self._starts) - 1, -1, -1):
            if pos >= self._starts[i]:
                return i
        return 0

    def readinto(self, buffer) -> int:  # type: ignore[override]
        """Fill ``buffer`` across part boundaries; short only at the end."""
        view = memoryview(buffer).cast("B")
        total = 0
        while total < len(view) and self._pos < self._size:
            n = self._readinto_one(view[total:])
            if n == 0:
                break
            total += n
        return total

    def _readinto_one(self, view: memoryview) -> int:
        index = self._part_at(self._pos)
        while index < len(self._sizes) - 1 and self._pos >= self._starts[index] + self._sizes[index]:
            index += 1
        if index != self._index:
            if self._fh is not None:
                self._fh.close()
            self._fh = open(self._parts[index], "rb", buffering=0)  # noqa: SIM115
            self._index = index
        assert self._fh is not None
        within = self._pos - self._starts[index]
        if self._fh.tell() != within:
            self._fh.seek(within)
        room = min(len(view), self._starts[index] + self._sizes[index] - self._pos)
        n = self._fh.readinto(view[:room]) or 0
        if n == 0 and room > 0:
            raise BundleError(f"truncated: {self._parts[index].name} changed size while reading")
        self._pos += n
        return n

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        super().close()


# --------------------------------------------------------------------------- sidecar


def read_sidecar(source: BundleSource) -> Sidecar:
    path = source.sidecar
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise BundleError(
            f"missing checksum file: {path.name} is not next to the bundle",
            hint=f"copy {path.name} into {path.parent}, or pass --no-verify to skip the checksum",
        ) from None
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return fmt.parse_sidecar(text)
    except EzError:
        raise BundleError(f"bad checksum file: {path.name} is not in sha256sum format",
                          hint="it should read '<64 hex>  BUNDLE.tar'") from None


# --------------------------------------------------------------------------- structure


@dataclass(frozen=True)
class BundleInfo:
    """What the structure check learned: the parsed ``ezrunner-bundle.json``, the
    docker manifest entry, the image's labels and the offsets of the members."""

    manifest: BundleManifest
    docker_manifest: DockerManifest
    labels: BundleLabels | None = None  # set by inspect_bundle (a bundle without them is refused)
    members: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (data offset, size)
    end_of_archive: int = 0
    sha256: str | None = None  # the joined bundle's hash as verified (None: not checked, --no-verify)

    @property
    def image_id(self) -> str:
        return self.manifest.image_id

    @property
    def image_tag(self) -> str:
        return self.manifest.image_tag

    @property
    def served_model_name(self) -> str:
        return self.manifest.served_model_name

    @property
    def model_bytes(self) -> int:
        return int(self.manifest.model_bytes or 0)


def _not_a_bundle(source: BundleSource, why: str) -> BundleError:
    return BundleError(
        f"not a bundle: {source.describe()} {why}",
        hint="give the .tar written by `ezrunner pack` (or its first .part-001)",
    )


def _truncated(source: BundleSource, why: str) -> BundleError:
    hint = "copy the file again; the copy stopped early"
    if source.split:
        last = source.parts[-1].name
        hint = f"the last part found is {last}: a later part may be missing, or a part was not copied whole"
        return BundleError(f"truncated bundle (or a missing last part): {source.describe()} {why}", hint=hint)
    return BundleError(f"truncated bundle: {source.describe()} {why}", hint=hint)


MAX_JSON_MEMBER = 64 * 1024 * 1024
# What a hostile header may make tarfile raise besides ReadError.
_TAR_ERRORS = (tarfile.TarError, ValueError, LookupError, OverflowError, EOFError)


class _Window(io.RawIOBase):
    """``size`` bytes of ``raw`` from ``start`` on, as a file of their own (a layer tar)."""

    def __init__(self, raw: JoinedReader, start: int, size: int) -> None:
        super().__init__()
        self._raw, self._start, self._size, self._pos = raw, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")[: max(0, self._size - self._pos)]
        self._raw.seek(self._start + self._pos)
        n = self._raw.readinto(view)
        self._pos += n
        return n


class _Archive:
    """The tar structure of a bundle, read by walking the headers (seeking over
    the data, so it is quick for any size). Every member is checked on its own
    as it is walked (:func:`members.member_problem`)."""

    def __init__(self, source: BundleSource, raw: JoinedReader) -> None:
        self.source = source
        self.raw = raw
        self.members: dict[str, tuple[int, int]] = {}
        self.names: list[tuple[str, bool]] = []  # every member: (name, is a folder)
        self._seen: set[str] = set()
        self.end = 0

    def walk(self) -> None:
        """Every member whole, the first one ``ezrunner-bundle.json``, the end marker present."""
        try:
            tar = tarfile.open(fileobj=self.raw, mode="r:")  # noqa: SIM115
        except _TAR_ERRORS:
            raise _not_a_bundle(self.source, "is not a tar archive") from None
        first = self._walk_members(tar)
        if first is None:
            raise _not_a_bundle(self.source, "is an empty tar archive")
        self.end = tar.offset
        # A tar ends with two zero blocks; a file cut exactly between members lacks them.
        self.raw.seek(self.end)
        trailer = self.raw.read(1024) or b""
        if len(trailer) < 1024 or trailer.count(0) != 1024:
            raise _truncated(self.source, f"has no end-of-archive marker after its last member "
                                          f"(size {self.source.size:,} bytes)")

    def _walk_members(self, tar: tarfile.TarFile) -> tarfile.TarInfo | None:
        size = self.source.size
        first: tarfile.TarInfo | None = None
        try:
            while (info := tar.next()) is not None:
                if first is None:
                    first = info
                    if info.name != BUNDLE_MANIFEST_NAME:
                        raise _not_a_bundle(self.source, f"starts with {info.name!r}, not {BUNDLE_MANIFEST_NAME!r}")
                self._add(info)
                if info.isreg() and info.offset_data + info.size > size:
                    raise _truncated(self.source, f"ends at byte {size:,} inside member {info.name!r} "
                                                  f"(which needs {info.offset_data + info.size:,})")
        except _TAR_ERRORS as exc:
            if first is None:
                raise _not_a_bundle(self.source, "is not a tar archive") from None
            raise _truncated(self.source, f"ends at byte {size:,} in the middle of the archive ({exc})") from None
        return first

    def _add(self, info: tarfile.TarInfo) -> None:
        why = members.member_problem(info)
        if why is None and info.name in self._seen:
            why = f"member {info.name!r} appears twice"
        if why:
            raise _refused(self.source, why)
        self._seen.add(info.name)
        self.names.append((info.name, info.isdir()))
        if info.isreg():
            self.members[info.name] = (info.offset_data, info.size)

    def read(self, name: str) -> bytes:
        offset, length = self.members[name]
        if length > MAX_JSON_MEMBER:
            raise _not_a_bundle(self.source, f"has an oversized {name!r} ({length:,} bytes)")
        self.raw.seek(offset)
        data = b""
        while len(data) < length:
            chunk = self.raw.read(length - len(data))
            if not chunk:
                raise _truncated(self.source, f"ends inside {name!r}")
            data += chunk
        return data

    def check_model_layer(self, name: str) -> None:
        """The model layer (a tar inside the bundle) holds only folders and
        regular files under /models."""
        offset, length = self.members[name]
        try:
            with tarfile.open(fileobj=_Window(self.raw, offset, length), mode="r:") as layer:
                while (info := layer.next()) is not None:
                    why = members.model_member_problem(info)
                    if why:
                        raise _refused(self.source, f"its model layer's {why}")
        except _TAR_ERRORS:
            raise _not_a_bundle(self.source, f"has a model layer {name!r} that is not a tar archive") from None


def _refused(source: BundleSource, why: str) -> BundleError:
    return BundleError(f"refused bundle: {source.describe()}: {why}",
                       hint="only bundles written by `ezrunner pack` are loaded; this one was altered or is foreign")


def inspect_bundle(source: BundleSource) -> BundleInfo:
    """Walk the tar headers, read ``ezrunner-bundle.json`` and ``manifest.json``,
    check that every member is whole, in the docker-archive layout and safe to
    unpack, that the model layer holds only /models, that the archive ends
    properly, and cross-check the image id and labels against the image config
    member. Nothing here needs Docker; all of it runs before ``docker load``."""
    if source.size == 0:
        raise _not_a_bundle(source, "is empty")
    with source.open() as raw:
        archive = _Archive(source, raw)
        archive.walk()
        manifest = BundleManifest.from_json_bytes(archive.read(BUNDLE_MANIFEST_NAME), where=source.describe())
        docker_manifest = _docker_manifest(archive, manifest)
        config_bytes = archive.read(docker_manifest.config)
        archive.check_model_layer(docker_manifest.layers[-1])
    _check_image_id(source, manifest, config_bytes)
    labels = _image_labels(source, manifest, docker_manifest, config_bytes)
    return BundleInfo(manifest=manifest, docker_manifest=docker_manifest, labels=labels,
                      members=archive.members, end_of_archive=archive.end)


def _docker_manifest(archive: _Archive, manifest: BundleManifest) -> DockerManifest:
    source = archive.source
    if DOCKER_MANIFEST_NAME not in archive.members:
        raise _not_a_bundle(source, "has no manifest.json (not a docker save archive)")
    try:
        dm = DockerManifest.from_bytes(archive.read(DOCKER_MANIFEST_NAME))
    except ValueError as exc:
        raise _not_a_bundle(source, f"has an unreadable manifest.json ({exc})") from None
    if dm.config not in archive.members:
        raise _not_a_bundle(source, f"lacks its image config {dm.config!r}")
    for layer in dm.layers:
        if layer not in archive.members:
            raise _not_a_bundle(source, f"lacks layer {layer!r} named in manifest.json")
    why = members.layout_problem(archive.names, dm)
    if why:
        raise _refused(source, why)
    if dm.repo_tags != (manifest.image_tag,) or not manifest.image_tag.startswith(fmt.IMAGE_REPO_PREFIX):
        raise _refused(source, f"manifest.json tags the image {list(dm.repo_tags)}, "
                               f"not [{manifest.image_tag!r}] under {fmt.IMAGE_REPO_PREFIX}")
    return dm


def _check_image_id(source: BundleSource, manifest: BundleManifest, config_bytes: bytes) -> None:
    config_sha = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    if config_sha != manifest.image_id:
        raise BundleError(
            f"checksum mismatch: the image config in {source.describe()} has {config_sha[:19]}…, "
            f"but {BUNDLE_MANIFEST_NAME} says {manifest.image_id[:19]}…",
            hint="the bundle is damaged or was edited; pack it again",
        )


_CROSS_CHECKED = (("served_model_name", fmt.LABEL_SERVED_MODEL_NAME), ("engine", fmt.LABEL_ENGINE),
                  ("model", fmt.LABEL_MODEL))


def _config_labels(source: BundleSource, dm: DockerManifest, config_bytes: bytes) -> dict[str, Any]:
    """The image config's labels, once the config is an object whose layers match manifest.json."""
    try:
        config = fmt.parse_json(config_bytes)
    except ValueError:
        config = None
    if not isinstance(config, dict) or not isinstance(config.get("config") or {}, dict):
        raise _not_a_bundle(source, "has an image config that is not a JSON object")
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") if isinstance(config.get("rootfs"), dict) else None
    if not isinstance(diff_ids, list) or len(diff_ids) != len(dm.layers):
        raise _not_a_bundle(source, "has an image config whose layers do not match manifest.json")
    labels = (config.get("config") or {}).get("Labels") or {}
    if not isinstance(labels, dict):
        raise _not_a_bundle(source, "has an image config whose labels are not an object")
    return labels


def _image_labels(source: BundleSource, manifest: BundleManifest, dm: DockerManifest,
                  config_bytes: bytes) -> BundleLabels:
    """The image's ezrunner.* labels (what `run` starts from): present, well
    formed, and agreeing with ezrunner-bundle.json on the model, the served name
    and the engine. A foreign image is refused here, before it is loaded."""
    labels = _config_labels(source, dm, config_bytes)
    for key, label in _CROSS_CHECKED:
        value = getattr(manifest, key)
        if label in labels and str(labels[label]) != str(value):
            raise BundleError(
                f"inconsistent bundle: {BUNDLE_MANIFEST_NAME} says {key}={value!r}, "
                f"the image label {label} says {labels[label]!r}",
                hint="the bundle was assembled from mismatched pieces; pack it again",
            )
    return BundleLabels.from_labels(labels, what=f"the image in {source.describe()}")


# --------------------------------------------------------------------------- hashing


def iter_chunks(source: BundleSource, chunk_size: int = READ_CHUNK) -> Iterator[memoryview]:
    """The joined bytes of the bundle, part after part, in chunks (a reused buffer:
    consume each chunk before asking for the next)."""
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    for path, expected in zip(source.parts, source.sizes, strict=False):
        with open(path, "rb", buffering=0) as fh:
            done = 0
            while True:
                n = fh.readinto(buf)
                if not n:
                    break
                done += n
                yield view[:n]
            if done != expected:
                raise BundleError(f"truncated: {path.name} changed size while reading ({done:,} of {expected:,} bytes)")


def sha256_of(
    source: BundleSource,
    on_event: Callable[[Event], None] | None = None,
    *,
    phase: str = "verify",
    chunk_size: int = READ_CHUNK,
    cancelled: Callable[[], bool] | None = None,
) -> str:
    """sha256 of the joined bundle, streamed, emitting BytesProgress. ``cancelled``
    is polled with each progress event; when it returns True, raises RunCancelled."""
    emit = on_event or (lambda _e: None)
    total = source.size
    h = hashlib.sha256()
    done = 0
    last = 0.0
    for chunk in iter_chunks(source, chunk_size):
        h.update(chunk)
        done += len(chunk)
        now = time.monotonic()
        if now - last >= PROGRESS_INTERVAL:
            last = now
            if cancelled is not None and cancelled():
                raise RunCancelled(f"cancelled while verifying {source.describe()}")
            emit(BytesProgress(phase, item=source.path.name, done=done, total=total))
    emit(BytesProgress(phase, item=source.path.name, done=done, total=total))
    return h.hexdigest()


def verify_bundle(
    path: str | os.PathLike[str] | BundleSource,
    on_event: Callable[[Event], None] | None = None,
    *,
    check_hash: bool = True,
    cancelled: Callable[[], bool] | None = None,
    before_hash: Callable[[BundleInfo], None] | None = None,
) -> tuple[BundleSource, BundleInfo]:
    """Find the parts, check the structure (quick), call ``before_hash`` (the
    caller's other cheap checks: Docker, the port, the name), then (unless
    ``check_hash`` is False) hash the whole joined bundle and compare it with the
    sidecar. The returned info carries the verified ``sha256``.

    Emits PhaseStarted/BytesProgress/Notice/PhaseFinished with phase "verify".
    Raises :class:`BundleError` (exit 2) naming the problem."""
    emit = on_event or (lambda _e: None)
    source = path if isinstance(path, BundleSource) else find_bundle(path)
    sidecar = read_sidecar(source) if check_hash else None
    emit(PhaseStarted("verify", label=f"verify {source.describe()}", total=source.size if check_hash else None))
    if source.split:
        emit(Notice("verify", message=f"reading {len(source.parts)} parts in order: "
                    f"{source.parts[0].name} … {source.parts[-1].name} ({source.size:,} bytes)"))
    info = inspect_bundle(source)
    if before_hash is not None:
        before_hash(info)
    if sidecar is None:
        emit(Notice("verify", level="warning", message="--no-verify: the sha256 checksum was NOT checked"))
        emit(PhaseFinished("verify", ok=True, detail="checksum skipped (--no-verify)",
                           data={"verified": False, "image_id": info.image_id}))
        return source, info
    digest = _check_sha256(source, sidecar, emit, cancelled)
    emit(PhaseFinished("verify", ok=True, detail=f"sha256 {digest[:16]}… matches",
                       data={"verified": True, "sha256": digest, "image_id": info.image_id}))
    return source, replace(info, sha256=digest)


def _check_sha256(source: BundleSource, sidecar: Sidecar, emit: Callable[[Event], None],
                  cancelled: Callable[[], bool] | None) -> str:
    if sidecar.name.lstrip("./") != source.path.name:
        emit(Notice("verify", level="warning",
                    message=f"{source.sidecar.name} names {sidecar.name!r}, not {source.path.name!r}; checking anyway"))
    digest = sha256_of(source, emit, cancelled=cancelled)
    if digest != sidecar.sha256:
        raise BundleError(
            f"checksum mismatch: {source.describe()} has sha256 {digest[:16]}…, {source.sidecar.name} says {sidecar.sha256[:16]}…",
            hint="the bundle was damaged in transit; copy it again (compare with `sha256sum` on the source)",
        )
    return digest
