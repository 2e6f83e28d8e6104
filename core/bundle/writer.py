"""Writing a classic ``docker save`` ("docker-archive") tar by hand, fast.

The bundle is one byte stream (:func:`bundle_stream`), generated from its sources:

1. ``ezrunner-bundle.json`` (the first member; see ``bundle.format``),
2. the cached engine image's layer tars, copied byte for byte (never recompressed),
3. the model layer, generated on the fly from the model folder
   (:func:`plan_model_layer` reads each weight file once to get the per-file
   sha256 and the layer diff id together, on two hash threads),
4. the image config (named by its sha256) and ``manifest.json``.

``core.pack`` runs three things at once: pass 1 (the model hashes), the writer
(the stream with a same-length placeholder first member, into one file or
numbered parts via :class:`SplitWriter`; it waits for pass 1 only at the model
layer) and, once pass 1 is done, a hasher replaying the stream with the real
first member for the sidecar sha256. The placeholder is patched in place at the
end (:meth:`SplitWriter.patch`). Pieces are 1 MiB: read, hashed and written while
still in the CPU cache.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

BLOCK = 512
CHUNK = 1 << 20  # 1 MiB: hashed and written while still in the CPU cache (8 MiB was 2-3x slower)
_ZERO_BLOCK = b"\0" * BLOCK


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
    files = iter_model_files(folder, skip=skip)
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
            got = 0
            pending: list = []
            k = 0
            with open(e.source, "rb", buffering=0) as fh:
                while True:
                    view = views[k]
                    k ^= 1
                    n = fh.readinto(view)
                    for f in pending:
                        f.result()
                    if not n:
                        break
                    chunk = view[:n]
                    pending = [pool.submit(layer_h.update, chunk), pool.submit(file_h.update, chunk)]
                    got += n
                    done += n
                    if on_bytes is not None:
                        on_bytes(done, model_bytes)
                    if check is not None:
                        check()
            if got != e.size:
                raise OSError(f"{e.source} changed size while being read ({e.size} -> {got} bytes)")
            layer_h.update(b"\0" * _pad(e.size))
            sums[e.relpath] = file_h.hexdigest()
    layer_h.update(b"\0" * (2 * BLOCK))
    return ModelLayer(entries=entries, size=total, diff_id="sha256:" + layer_h.hexdigest(), files=sums, model_bytes=model_bytes)


# --------------------------------------------------------------------------- output


class DiskFull(OSError):
    pass


@dataclass
class SplitWriter:
    """Writes a byte stream into ``paths(i)`` files of at most ``part_size`` bytes
    (one file when ``part_size`` is None), hashing everything on a helper thread."""

    path_for: Callable[[int], Path]
    part_size: int | None = None
    hashing: bool = True
    written: int = 0
    paths: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._h = hashlib.sha256()
        self._fh: BinaryIO | None = None
        self._in_part = 0
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending = None

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

    def _write_raw(self, data: memoryview) -> None:
        while len(data):
            if self._fh is None or (self.part_size is not None and self._in_part >= self.part_size):
                self._open_next()
            room = len(data) if self.part_size is None else min(len(data), self.part_size - self._in_part)
            piece = data[:room]
            try:
                while len(piece):
                    n = self._fh.write(piece)  # type: ignore[union-attr]
                    piece = piece[n:]
                    self._in_part += n
            except OSError as exc:
                self._raise(exc)
            data = data[room:]

    def _wait_pending(self) -> None:
        fut, self._pending = self._pending, None
        if fut is not None:
            fut.result()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write ``data``; large pieces are hashed on the helper thread while they are
        written, and that hash may still run when this returns: a caller that reuses
        a mutable buffer must alternate two of them (see ArchiveWriter._copy_file)."""
        mv = memoryview(data).cast("B") if not isinstance(data, memoryview) else data
        if not self.hashing:
            self._write_raw(mv)
            self.written += len(mv)
            return
        self._wait_pending()
        if len(mv) >= 1 << 16:
            self._pending = self._pool.submit(self._h.update, mv)
        else:
            self._h.update(mv)
        self._write_raw(mv)
        self.written += len(mv)

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

    def close(self) -> str:
        """fsync and close; returns the sha256 hex of everything written."""
        self._wait_pending()
        if self._fh is None and not self.paths:
            self._open_next()
        self._close_current()
        self._pool.shutdown()
        return self._h.hexdigest()

    def abort(self) -> None:
        try:
            self._wait_pending()
        except Exception:  # noqa: BLE001 - removing the files matters more
            pass
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._pool.shutdown(wait=True)
        for p in self.paths:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


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

    yield from member(BUNDLE_MANIFEST, first_json)
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
    yield from member("manifest.json", t.manifest_raw)
    yield b"\0" * (2 * BLOCK)


BUNDLE_MANIFEST = "ezrunner-bundle.json"


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
