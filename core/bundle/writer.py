"""Writing a classic ``docker save`` ("docker-archive") tar by hand, fast.

The bundle is one byte stream (:func:`bundle_stream`), generated from its sources:

1. ``ezrunner-bundle.json`` (the first member; see ``bundle.format``),
2. the cached engine image's layer tars, copied byte for byte (never recompressed),
3. the model layer, generated on the fly from the model folder
   (:func:`plan_model_layer` reads each weight file once to get the per-file
   sha256 and the layer diff id together, on two hash threads),
4. the image config (named by its sha256) and ``manifest.json``.

:class:`BundleWriter` runs three things at once: pass 1 (the model hashes, on a
pool thread), the writer (the stream with a same-length placeholder first
member, into one file or numbered parts via :class:`SplitWriter`; it waits for
pass 1 only at the model layer) and, once pass 1 is done, a hasher thread
replaying the stream with the real first member for the sidecar sha256. The
placeholder is patched in place at the end (:meth:`SplitWriter.patch`). Pieces
are 1 MiB: read, hashed and written while still in the CPU cache. Temporaries
are renamed when complete, the sidecar (itself written to a temporary first) last;
an older bundle at the same path is replaced only then. A failure removes the
temporaries; a model file changed while packing is a failure too.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import re
import shutil
import stat
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from ezrunner.core import events as ev
from ezrunner.core.bundle import format as B
from ezrunner.core.engines import EngineSpec, model_dir_in_image
from ezrunner.core.errors import EzError
from ezrunner.core.units import human_bytes

BLOCK = 512
CHUNK = 1 << 20  # 1 MiB: hashed and written while still in the CPU cache (8 MiB was 2-3x slower)


def _pad(n: int) -> int:
    return (-n) % BLOCK


def tar_header(name: str, size: int, *, mode: int = 0o644, mtime: int = 0, kind: bytes = tarfile.REGTYPE,
               uid: int = 0, gid: int = 0) -> bytes:
    """A PAX/ustar header block (plus PAX extension blocks for long names)."""
    ti = tarfile.TarInfo(name)
    ti.size = size if kind == tarfile.REGTYPE else 0
    ti.mode = mode
    ti.mtime = mtime
    ti.type = kind
    ti.uid = uid
    ti.gid = gid
    ti.uname = "root" if uid == 0 else ""
    ti.gname = "root" if gid == 0 else ""
    return ti.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


# --------------------------------------------------------------------------- model layer


@dataclass
class LayerEntry:
    header: bytes
    source: Path | None  # None for directories
    size: int
    relpath: str  # relative to the model folder ("" for dirs)


@dataclass
class ModelLayer:
    """The model layer as planned: the exact bytes it will contain, its size and
    diff id, and the per-file sha256 of the model files."""

    entries: list[LayerEntry]
    size: int
    diff_id: str  # "sha256:<hex>"
    files: dict[str, str]  # relpath -> sha256 hex
    model_bytes: int


def iter_model_files(folder: Path, *, skip: Callable[[str], bool] | None = None) -> list[tuple[str, Path]]:
    """(relpath, path) of every regular file under ``folder``, sorted, skipping
    hidden folders such as ``.cache`` (huggingface_hub's metadata) and ``.git``."""
    out: list[tuple[str, Path]] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            p = Path(root) / name
            rel = p.relative_to(folder).as_posix()
            if name.startswith(".") or (skip is not None and skip(rel)):
                continue
            st = p.stat()  # follows symlinks (HF cache snapshots are symlinks to blobs)
            if stat.S_ISREG(st.st_mode):
                out.append((rel, p))
    return sorted(out)


def plan_model_layer(
    folder: Path,
    dest_dir: str,
    *,
    on_bytes: Callable[[int, int], None] | None = None,
    check: Callable[[], None] | None = None,
    skip: Callable[[str], bool] | None = None,
) -> ModelLayer:
    """Read the model once: per-file sha256 and the layer diff id together.

    ``dest_dir`` is the folder inside the image (``/models/<name>``); the layer
    holds it and every parent, directories 0555 and files 0444, owned by root, so
    the non-root user can read but never change the model.
    """
    entries = _layer_entries(iter_model_files(folder, skip=skip), dest_dir)
    total = sum(len(e.header) + e.size + _pad(e.size) for e in entries) + 2 * BLOCK
    model_bytes = sum(e.size for e in entries if e.source is not None)
    layer_h = hashlib.sha256()
    sums: dict[str, str] = {}
    done = 0
    views = (memoryview(bytearray(CHUNK)), memoryview(bytearray(CHUNK)))
    # two hashers on two threads; the next chunk is read while they hash this one
    with ThreadPoolExecutor(max_workers=2) as pool:
        for e in entries:
            layer_h.update(e.header)
            if e.source is None:
                continue
            file_h = hashlib.sha256()
            for n in _hash_file(e, pool, views, (layer_h, file_h)):
                done += n
                if on_bytes is not None:
                    on_bytes(done, model_bytes)
                if check is not None:
                    check()
            layer_h.update(b"\0" * _pad(e.size))
            sums[e.relpath] = file_h.hexdigest()
    layer_h.update(b"\0" * (2 * BLOCK))
    return ModelLayer(entries=entries, size=total, diff_id="sha256:" + layer_h.hexdigest(), files=sums, model_bytes=model_bytes)


def _layer_entries(files: list[tuple[str, Path]], dest_dir: str) -> list[LayerEntry]:
    """The layer's members: ``dest_dir`` and its parents, then each file after
    the folders it needs."""
    entries: list[LayerEntry] = []
    parts = [p for p in dest_dir.strip("/").split("/") if p]
    for i in range(len(parts)):
        entries.append(LayerEntry(tar_header("/".join(parts[: i + 1]) + "/", 0, mode=0o555, kind=tarfile.DIRTYPE), None, 0, ""))
    seen_dirs: set[str] = set()
    prefix = "/".join(parts)
    for rel, path in files:
        segs = rel.split("/")[:-1]
        for i in range(len(segs)):
            d = "/".join(segs[: i + 1])
            if d not in seen_dirs:
                seen_dirs.add(d)
                entries.append(LayerEntry(tar_header(f"{prefix}/{d}/", 0, mode=0o555, kind=tarfile.DIRTYPE), None, 0, ""))
        st = path.stat()
        entries.append(LayerEntry(tar_header(f"{prefix}/{rel}", st.st_size, mode=0o444, mtime=int(st.st_mtime)), path, st.st_size, rel))
    return entries


def _hash_file(e: LayerEntry, pool: ThreadPoolExecutor, views: tuple[memoryview, memoryview],
               hashes: tuple[Any, Any]) -> Iterator[int]:
    """Feed ``e.source`` to both hashes on ``pool``, reading into the two buffers in
    turn; yields the byte count of each chunk read."""
    got = 0
    pending: list = []
    k = 0
    with open(e.source, "rb", buffering=0) as fh:  # type: ignore[arg-type]
        while True:
            view = views[k]
            k ^= 1
            n = fh.readinto(view)
            for f in pending:
                f.result()
            if not n:
                break
            chunk = view[:n]
            pending = [pool.submit(h.update, chunk) for h in hashes]
            got += n
            yield n
    if got != e.size:
        raise OSError(f"{e.source} changed size while being read ({e.size} -> {got} bytes)")


# --------------------------------------------------------------------------- output


class DiskFull(OSError):
    pass


@dataclass
class SplitWriter:
    """Writes a byte stream into ``path_for(i)`` files of at most ``part_size``
    bytes (one file when ``part_size`` is None)."""

    path_for: Callable[[int], Path]
    part_size: int | None = None
    written: int = 0
    paths: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._fh: BinaryIO | None = None
        self._in_part = 0

    def _open_next(self) -> None:
        self._close_current()
        p = self.path_for(len(self.paths) + 1)
        self.paths.append(p)
        self._fh = open(p, "wb", buffering=0)  # noqa: SIM115
        self._in_part = 0

    def _close_current(self) -> None:
        if self._fh is not None:
            try:
                os.fsync(self._fh.fileno())
            except OSError as exc:
                self._raise(exc)
            finally:
                self._fh.close()
                self._fh = None

    @staticmethod
    def _raise(exc: OSError) -> None:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise DiskFull(exc.errno, os.strerror(exc.errno)) from exc
        raise exc

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write ``data``, opening the next part whenever one is full."""
        mv = memoryview(data).cast("B") if not isinstance(data, memoryview) else data
        size = len(mv)
        while len(mv):
            if self._fh is None or (self.part_size is not None and self._in_part >= self.part_size):
                self._open_next()
            room = len(mv) if self.part_size is None else min(len(mv), self.part_size - self._in_part)
            piece = mv[:room]
            try:
                while len(piece):
                    n = self._fh.write(piece)  # type: ignore[union-attr]
                    piece = piece[n:]
                    self._in_part += n
            except OSError as exc:
                self._raise(exc)
            mv = mv[room:]
        self.written += size

    def patch(self, offset: int, data: bytes) -> None:
        """Overwrite already written bytes at ``offset`` of the joined stream (the
        first member, once its hashes are known); the size never changes."""
        if offset + len(data) > self.written:
            raise ValueError("patch beyond the written data")
        pos = 0
        while pos < len(data):
            at = offset + pos
            idx = 0 if self.part_size is None else at // self.part_size
            inner = at if self.part_size is None else at % self.part_size
            room = len(data) - pos if self.part_size is None else min(len(data) - pos, self.part_size - inner)
            piece = data[pos:pos + room]
            current = self._fh is not None and idx == len(self.paths) - 1
            try:
                if current:
                    os.pwrite(self._fh.fileno(), piece, inner)  # type: ignore[union-attr]
                else:
                    fd = os.open(self.paths[idx], os.O_WRONLY)
                    try:
                        os.pwrite(fd, piece, inner)
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            except OSError as exc:
                self._raise(exc)
            pos += room

    def close(self) -> None:
        """fsync and close (an empty stream still makes one empty file)."""
        if self._fh is None and not self.paths:
            self._open_next()
        self._close_current()

    def abort(self) -> None:
        """Close and remove every file written so far."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        for p in self.paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)


@dataclass
class Tail:
    """What follows the engine layers, known once the model is hashed."""

    layer: ModelLayer
    layer_name: str  # "<hex>/layer.tar"
    config_name: str
    config_raw: bytes
    manifest_raw: bytes


def bundle_stream(first_json: bytes, engine: list[tuple[str, Path, int]], tail: Callable[[], Tail], *, mtime: int,
                  check: Callable[[], None] | None = None) -> Iterator[bytes | memoryview]:
    """The docker-archive bundle as a sequence of byte pieces, generated from the
    sources. Called twice with the same arguments except ``first_json`` (a
    placeholder of the same length for the writer, the real one for the hasher),
    it gives the same bytes but for that member. Pieces from files share one
    buffer: consume each before asking for the next."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)

    def member(name: str, data: bytes) -> Iterator[bytes]:
        yield tar_header(name, len(data), mtime=mtime)
        yield data + b"\0" * _pad(len(data))

    def file_body(path: Path, size: int) -> Iterator[memoryview]:
        got = 0
        with open(path, "rb", buffering=0) as fh:
            while got < size:
                n = fh.readinto(buf)
                if not n:
                    break
                n = min(n, size - got)
                got += n
                yield view[:n]
                if check is not None:
                    check()
        if got != size:
            raise OSError(f"{path} changed size while being copied ({size} -> {got} bytes)")

    yield from member(B.BUNDLE_MANIFEST_NAME, first_json)
    for name, path, size in engine:
        yield tar_header(name.split("/")[0] + "/", 0, mode=0o755, mtime=mtime, kind=tarfile.DIRTYPE)
        yield tar_header(name, size, mtime=mtime)
        yield from file_body(path, size)
        yield b"\0" * _pad(size)
    t = tail()
    yield tar_header(t.layer_name.split("/")[0] + "/", 0, mode=0o755, mtime=mtime, kind=tarfile.DIRTYPE)
    yield tar_header(t.layer_name, t.layer.size, mtime=mtime)
    for e in t.layer.entries:
        yield e.header
        if e.source is not None:
            yield from file_body(e.source, e.size)
            yield b"\0" * _pad(e.size)
    yield b"\0" * (2 * BLOCK)
    yield b"\0" * _pad(t.layer.size)
    yield from member(t.config_name, t.config_raw)
    yield from member(B.DOCKER_MANIFEST_NAME, t.manifest_raw)
    yield b"\0" * (2 * BLOCK)



# --------------------------------------------------------------------------- the bundle writer


class _Aborted(Exception):  # noqa: N818 - internal: the writer failed, its helpers stop
    pass


@dataclass
class BundleContents:
    """What goes into a bundle, as the pack decided it. The writer adds what only
    hashing the model tells: the files' sha256, the model layer, the image id."""

    model_folder: Path
    manifest: B.BundleManifest  # files, model_bytes, image_id and image_tag are filled in by the writer
    spec: EngineSpec
    serve_args: list[str]
    engine_config: dict[str, Any]  # the engine image's config (``docker save``)
    engine_layers: list[tuple[Path, int, str]]  # (layer tar, size, diff id), in image order
    mtime: int  # of the archive's own members

    @property
    def model_dir(self) -> str:
        return model_dir_in_image(self.manifest.served_model_name)


@dataclass(frozen=True)
class WrittenBundle:
    """A complete bundle on disk (renamed into place, sidecar written)."""

    bundle: Path  # BUNDLE.tar (with parts it does not exist)
    parts: list[Path]  # empty unless split
    sidecar: Path
    sha256: str
    size: int
    manifest: B.BundleManifest  # as written: image_id and image_tag included


def engine_members(layers: list[tuple[Path, int, str]]) -> tuple[list[str], list[tuple[str, Path, int]]]:
    """(member name of every engine layer in image order, the (name, tar, size)
    to write: each distinct layer once)."""
    names: list[str] = []
    seen: dict[str, str] = {}
    for _p, _s, diff in layers:
        names.append(seen.setdefault(diff, B.layer_member(diff)))
    items: list[tuple[str, Path, int]] = []
    written: set[str] = set()
    for (path, size, _diff), name in zip(layers, names, strict=True):
        if name not in written:
            written.add(name)
            items.append((name, path, size))
    return names, items


def seal(contents: BundleContents, layer: ModelLayer, engine_names: list[str]) -> tuple[B.BundleManifest, Tail]:
    """The bundle's manifest and everything after the engine layers, once the
    model layer is known."""
    c = contents
    draft = replace(c.manifest, files=layer.files, model_bytes=layer.model_bytes, image_id="", image_tag="")
    labels = B.BundleLabels.for_bundle(draft, c.spec, c.serve_args)
    image = B.ImageSpec(c.spec, labels, layer.diff_id, f"ezrunner pack: model {c.manifest.model} -> {c.model_dir}")
    cfg_raw, config_digest = B.image_config_bytes(B.image_config(c.engine_config, image))
    image_tag = B.image_tag(c.manifest.served_model_name, c.spec, layer.diff_id)
    layer_name = B.layer_member(layer.diff_id)
    config_name = B.config_member(config_digest)
    manifest = replace(draft, image_id=config_digest, image_tag=image_tag)
    tail = Tail(layer, layer_name, config_name, cfg_raw,
                B.docker_manifest_bytes(config_name, image_tag, [*engine_names, layer_name]))
    return manifest, tail


class BundleWriter:
    """Writes one bundle in a single pass (see the module docstring): pass 1 on a
    pool thread, the writer on the caller's thread behind a placeholder first
    member, the sidecar hash on a hasher thread; the placeholder is patched in
    place at the end. Temporaries ``.NAME.ezpack-<pid>.tmp`` are renamed when
    complete, the sidecar last; any failure (``check`` raising included) removes
    them."""

    def __init__(self, contents: BundleContents, target: Path, *, part_size: int | None,
                 check: Callable[[], None], emit: Callable[[ev.Event], None]) -> None:
        self.contents = contents
        self.target = target
        self.part_size = part_size
        self._check = check
        self._emit = emit
        self._abort = threading.Event()
        self._model_files = iter_model_files(contents.model_folder)
        self._model_stats = {rel: _fingerprint(p) for rel, p in self._model_files}
        self._model_bytes = sum(p.stat().st_size for _r, p in self._model_files)
        self._engine_names, self._engine_items = engine_members(contents.engine_layers)
        zero = "sha256:" + "0" * 64
        self._placeholder = replace(
            contents.manifest, files={rel: zero[7:] for rel, _p in self._model_files}, model_bytes=self._model_bytes,
            image_id=zero, image_tag=B.image_tag(contents.manifest.served_model_name, contents.spec, zero),
        ).to_json_bytes()
        self._pass1: Future[ModelLayer] | None = None
        self._tail_lock = threading.Lock()
        self._sealed: tuple[B.BundleManifest, bytes, Tail] | None = None
        self._hashed: tuple[str, int] | None = None
        self._hash_error: BaseException | None = None

    # ---- sizes
    @property
    def _engine_bytes(self) -> int:
        return sum(s for _p, s, _d in self.contents.engine_layers)

    @property
    def _model_estimate(self) -> int:
        return self._model_bytes + 1024 * (len(self._model_files) + 8)

    def _check_free_space(self) -> None:
        estimate = self._engine_bytes + self._model_estimate + (1 << 20)
        free = shutil.disk_usage(self.target.parent).free
        if free < estimate + MIN_FREE_MARGIN:
            raise EzError(
                f"not enough free space in {self.target.parent}: the bundle needs about {human_bytes(estimate)}, "
                f"{human_bytes(free)} free",
                hint="free some space or write the bundle (-o) elsewhere",
            )

    # ---- the three threads
    def _checked(self) -> None:
        self._check()
        if self._abort.is_set():
            raise _Aborted()

    def _tail(self) -> Tail:
        """Waits for pass 1 (once), then seals the bundle; called by the writer and the hasher."""
        with self._tail_lock:
            if self._sealed is None:
                assert self._pass1 is not None
                layer = self._pass1.result()
                if set(layer.files) != {rel for rel, _p in self._model_files} or layer.model_bytes != self._model_bytes:
                    raise OSError("the model folder changed while packing")
                manifest, tail = seal(self.contents, layer, self._engine_names)
                real = manifest.to_json_bytes()
                if len(real) != len(self._placeholder):
                    raise AssertionError("the bundle manifest changed length between placeholder and final")
                self._sealed = (manifest, real, tail)
            return self._sealed[2]

    def _stream(self, first_json: bytes) -> Iterator[bytes | memoryview]:
        return bundle_stream(first_json, self._engine_items, self._tail, mtime=self.contents.mtime, check=self._checked)

    def _hash_stream(self) -> None:
        """The hasher thread: the same stream with the real first member -> the sidecar sha256."""
        h = hashlib.sha256()
        n = 0
        try:
            self._tail()
            assert self._sealed is not None
            for piece in self._stream(self._sealed[1]):
                h.update(piece)
                n += len(piece)
            self._hashed = (h.hexdigest(), n)
        except BaseException as exc:  # noqa: BLE001 - reported by the writer
            self._hash_error = exc

    def _write_stream(self, out: SplitWriter, total: int) -> None:
        last = 0.0
        for piece in self._stream(self._placeholder):
            out.write(piece)
            now = time.monotonic()
            if now - last > 0.1:
                last = now
                self._emit(ev.BytesProgress("export", item="bundle", done=out.written, total=total))

    def _patch_and_hash(self, out: SplitWriter, hasher: threading.Thread) -> str:
        """Patch the real first member in, wait for the hasher; the sidecar sha256."""
        assert self._sealed is not None
        out.patch(len(tar_header(B.BUNDLE_MANIFEST_NAME, len(self._placeholder), mtime=self.contents.mtime)), self._sealed[1])
        hasher.join()
        if self._hash_error is not None:
            raise self._hash_error
        assert self._hashed is not None
        digest, size = self._hashed
        if size != out.written:
            raise AssertionError(f"hashed {size} bytes but wrote {out.written}")
        out.close()
        return digest

    # ---- files
    def _temporary(self, index: int) -> Path:
        if self.part_size is not None:
            return temporary_path(B.part_path(self.target, index))
        if index != 1:
            raise AssertionError("unsplit bundle opened a second part")
        return temporary_path(self.target)

    def _finals(self, count: int) -> list[Path]:
        if self.part_size is None:
            return [self.target]
        return [B.part_path(self.target, i) for i in range(1, count + 1)]

    def _publish(self, out: SplitWriter, digest: str) -> WrittenBundle:
        """Write the sidecar to its temporary, then (everything new complete) put the
        new files in place of the old ones: the bundle first, the sidecar last."""
        target = self.target
        sidecar = B.sidecar_path(target)
        sidecar_tmp = temporary_path(sidecar)
        try:
            write_sidecar(sidecar_tmp, B.format_sidecar(digest, target.name))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(sidecar_tmp)
            raise
        finals = self._finals(len(out.paths))
        replace_outputs(target, list(zip(out.paths, finals, strict=True)), (sidecar_tmp, sidecar))
        assert self._sealed is not None
        return WrittenBundle(target, finals if self.part_size is not None else [], sidecar, digest, out.written,
                             self._sealed[0])

    def _check_model_unchanged(self) -> None:
        """Every model file as it was when the pack began (size, times, inode)."""
        for rel, path in self._model_files:
            if _fingerprint(path) != self._model_stats.get(rel):
                raise EzError(f"the model file {rel} changed while it was being packed; no bundle was written",
                              hint="let whatever writes into the model folder finish, then pack again")

    def _stop_helpers(self, out: SplitWriter, hasher: threading.Thread) -> None:
        self._abort.set()
        if self._pass1 is not None:
            with contextlib.suppress(BaseException):
                self._pass1.exception()
        if hasher.is_alive():
            hasher.join()
        out.abort()

    def write(self) -> WrittenBundle:
        clean_stale_temporaries(self.target)
        self._check_free_space()
        total = self._engine_bytes + self._model_estimate + 64 * 1024
        out = SplitWriter(self._temporary, self.part_size)
        self._emit(ev.PhaseStarted("export", label=f"writing {self.target.name}", total=total))
        pool = ThreadPoolExecutor(max_workers=1)
        self._pass1 = pool.submit(plan_model_layer, self.contents.model_folder, self.contents.model_dir, check=self._checked)
        hasher = threading.Thread(target=self._hash_stream, name="ezrunner-sha256", daemon=True)
        ok = False
        try:
            with _disk_errors(self.target):
                hasher.start()
                self._write_stream(out, total)
                digest = self._patch_and_hash(out, hasher)
                self._check_model_unchanged()
                written = self._publish(out, digest)
            ok = True
        finally:
            if not ok:
                self._stop_helpers(out, hasher)
            pool.shutdown(wait=True)
        return written


@contextlib.contextmanager
def _disk_errors(target: Path) -> Iterator[None]:
    """A full disk or another OSError while writing -> one EzError line."""
    try:
        yield
    except DiskFull:
        raise EzError(f"the disk is full while writing {target.name} in {target.parent}; nothing was left behind",
                      hint="free some space or write the bundle (-o) elsewhere") from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise EzError(f"the disk is full while writing {target.name}; nothing was left behind",
                          hint="free some space or write the bundle (-o) elsewhere") from None
        raise EzError(f"could not write the bundle: {exc}") from None


# --------------------------------------------------------------------------- temporaries and outputs

MIN_FREE_MARGIN = 64 << 20


def temporary_path(final: Path, pid: int | None = None) -> Path:
    """Where ``final`` is written until it is complete: ``.NAME.ezpack-<pid>.tmp`` beside it."""
    return final.with_name(f".{final.name}.ezpack-{pid or os.getpid()}.tmp")


def clean_stale_temporaries(target: Path) -> None:
    """Remove temporaries of earlier packs of the same bundle whose process is gone."""
    pat = re.compile(r"^\." + re.escape(target.name) + r"(?:\.part-\d{3}|\.sha256)?\.ezpack-(\d+)\.tmp$")
    if not target.parent.is_dir():
        return
    for child in target.parent.iterdir():
        m = pat.match(child.name)
        if m and not _alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                child.unlink()


def _alive(pid: int) -> bool:
    """Whether another process ``pid`` runs (this process counts as gone: its own
    leftovers of an earlier pack are stale too)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _existing_parts(target: Path) -> list[Path]:
    pat = re.compile(re.escape(target.name + B.PART_INFIX) + r"\d{3}$")
    if not target.parent.is_dir():
        return []
    return sorted(c for c in target.parent.iterdir() if pat.match(c.name))


def _fingerprint(path: Path) -> tuple[int, ...] | None:
    """What changes when a file is written or replaced: size, mtime, ctime, inode."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def write_sidecar(path: Path, text: str) -> None:
    """Write and fsync the sidecar with the bundle's own mode (0666 less the umask)."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def replace_outputs(target: Path, renames: list[tuple[Path, Path]], sidecar: tuple[Path, Path]) -> None:
    """Put a complete new bundle (its temporaries, renamed to their final names)
    and its sidecar in place of an older one: the old sidecar goes first, then old
    files the new ones do not overwrite, then the bundle, the sidecar last."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(sidecar[1])
    keep = {final for _tmp, final in renames}
    for old in [target, *_existing_parts(target)]:
        if old not in keep:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
    for tmp, final in renames:
        os.replace(tmp, final)
    os.replace(*sidecar)
    fsync_dir(target.parent)


def fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------- docker save reader


class ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks (docker-py's ``get_image``)."""

    def __init__(self, chunks: Iterator[bytes]):
        self._it = iter(chunks)
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        while not self._rest:
            try:
                self._rest = next(self._it)
            except StopIteration:
                return 0
        n = min(len(b), len(self._rest))
        b[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n
