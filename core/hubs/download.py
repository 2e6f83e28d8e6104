"""What the hub downloads share: which files to fetch, where they go, and the
relay that runs the blocking download on a thread while reporting byte progress.

- When the repo has safetensors, only safetensors + config/tokenizer/generation
  files are fetched (``.bin``/``.pt``/``.gguf``/``.onnx``/``.msgpack`` duplicates skipped).
- Files go to ``locations.home()/models/<hub>/<owner>--<name>/<revision>``; the hub
  clients keep partial files there and resume them on the next try.
- Byte progress with throughput: while the download runs, the sizes of the files
  in the destination (including ``.incomplete`` parts) are summed against the
  expected total.
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections.abc import Callable, Generator
from pathlib import Path

from ezrunner.core import events as ev
from ezrunner.core import locations
from ezrunner.core.relay import Empty, ThreadRelay

WEIGHT_DUPLICATES = ("*.bin", "*.pt", "*.pth", "*.gguf", "*.onnx", "*.onnx_data", "*.msgpack", "*.h5", "*.ckpt", "*.ot")
SMALL_FILES = ("*.json", "*.txt", "*.model", "*.tiktoken", "*.py", "*.md", "tokenizer*", "*.jinja")
PROGRESS_EVERY = 0.5  # seconds


def choose_patterns(filenames: list[str]) -> tuple[list[str] | None, list[str]]:
    """(allow_patterns, ignore_patterns) for a repo's file list."""
    has_st = any(f.endswith(".safetensors") for f in filenames)
    if has_st:
        return ["*.safetensors", *SMALL_FILES], list(WEIGHT_DUPLICATES)
    return None, ["*.gguf", "*.onnx", "*.onnx_data", "*.msgpack", "*.h5", "*.ot"]


def wanted(name: str, allow: list[str] | None, ignore: list[str]) -> bool:
    """Whether ``name`` passes ``choose_patterns``' filters."""
    if allow is not None and not any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(name.rsplit("/", 1)[-1], p) for p in allow):
        return False
    return not any(fnmatch.fnmatch(name, p) for p in ignore)


def destination(hub: str, repo_id: str, revision: str) -> Path:
    """The folder a download goes to (created)."""
    dest = locations.home() / "models" / hub / repo_id.replace("/", "--") / revision
    dest.mkdir(parents=True, exist_ok=True)
    return dest


def dir_bytes(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def run_download(fn: Callable[[], Path], dest: Path, total: int | None, check: Callable[[], None],
                 *, name: str) -> Generator[ev.Event, None, Path]:
    """``path = yield from run_download(...)``: ``fn()`` (a blocking download into
    ``dest``) on a thread; ``BytesProgress`` every half second; ``check()`` (the
    cancel flag) polled meanwhile. A cancelled download is left to end on its own
    (its partial files resume on the next try)."""
    t0 = time.monotonic()
    with ThreadRelay(lambda _put, _stop: fn(), name=name, join_timeout=1.0) as r:
        while not r.finished:
            try:
                r.get(timeout=PROGRESS_EVERY)
            except Empty:
                check()
                done = dir_bytes(dest)
                rate = done / max(time.monotonic() - t0, 1e-3)
                yield ev.BytesProgress("download", item=f"{rate / 1e6:.1f} MB/s", done=done, total=total)
            except StopIteration:
                break
        path = r.result()
    yield ev.BytesProgress("download", item="done", done=dir_bytes(dest), total=total)
    return path
