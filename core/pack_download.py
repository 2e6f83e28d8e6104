"""Downloading a model for ``pack``: Hugging Face first, ModelScope by feature detection.

- The revision is resolved to a commit first and the download pinned to it.
- When the repo has safetensors, only safetensors + config/tokenizer/generation
  files are fetched (``.bin``/``.pt``/``.gguf``/``.onnx``/``.msgpack`` duplicates skipped).
- Files go to ``locations.home()/models/<source>/<owner>--<name>/<commit>``;
  huggingface_hub keeps partial files there and resumes them on the next try.
- Byte progress with throughput: a poller thread sums the sizes of the files in the
  destination (including ``.incomplete`` parts) against the expected total.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from queue import Empty, Queue

from ezrunner.core import events as ev
from ezrunner.core import locations
from ezrunner.core.errors import EzError

WEIGHT_DUPLICATES = ("*.bin", "*.pt", "*.pth", "*.gguf", "*.onnx", "*.onnx_data", "*.msgpack", "*.h5", "*.ckpt", "*.ot")
SMALL_FILES = ("*.json", "*.txt", "*.model", "*.tiktoken", "*.py", "*.md", "tokenizer*", "*.jinja")


def choose_patterns(filenames: list[str]) -> tuple[list[str] | None, list[str]]:
    """(allow_patterns, ignore_patterns) for a repo's file list."""
    has_st = any(f.endswith(".safetensors") for f in filenames)
    if has_st:
        return ["*.safetensors", *SMALL_FILES], list(WEIGHT_DUPLICATES)
    return None, ["*.gguf", "*.onnx", "*.onnx_data", "*.msgpack", "*.h5", "*.ot"]


def _dir_bytes(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _hf_error(exc: BaseException, repo_id: str, revision: str | None) -> EzError:
    name = type(exc).__name__
    text = str(exc).splitlines()[0][:200] if str(exc) else name
    if name == "GatedRepoError":
        if not os.environ.get("HF_TOKEN"):
            return EzError(f"{repo_id} is a gated model and no token is set",
                           hint="accept its terms on the hub, then export HF_TOKEN=<your token>")
        return EzError(f"{repo_id} is gated and your token has no access", hint="accept the model's terms on the hub with this account")
    if name == "RepositoryNotFoundError":
        return EzError(f"model {repo_id} not found on the hub (or it is private)",
                       hint="check the id; for private models export HF_TOKEN")
    if name == "RevisionNotFoundError":
        return EzError(f"revision {revision} of {repo_id} not found")
    if name in ("EntryNotFoundError", "RemoteEntryNotFoundError"):
        return EzError(f"a file of {repo_id} was not found on the hub: {text}")
    if name in ("OfflineModeIsEnabled", "LocalEntryNotFoundError"):
        return EzError(f"cannot download {repo_id}: offline or the hub is unreachable ({text})",
                       hint="check the network, HF_ENDPOINT, or pack a local folder instead")
    return EzError(f"downloading {repo_id} failed: {text}",
                   hint="check the network or HF_ENDPOINT; run again to resume")


def _threaded(work: Callable[[Callable[[ev.Event], None]], object], check: Callable[[], None]) -> Iterator[ev.Event | object]:
    """Run ``work(emit)`` on a thread; yield its events live, then its result."""
    q: Queue = Queue()
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["result"] = work(q.put)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            box["error"] = exc
        finally:
            q.put(None)

    t = threading.Thread(target=run, name="ezrunner-download", daemon=True)
    t.start()
    while True:
        try:
            item = q.get(timeout=0.2)
        except Empty:
            check()
            continue
        if item is None:
            break
        yield item
        check()
    t.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    yield box.get("result")


def _progress_poller(folder: Path, total: int | None, emit: Callable[[ev.Event], None], stop: threading.Event) -> threading.Thread:
    def loop() -> None:
        t0 = time.monotonic()
        while not stop.wait(0.5):
            done = _dir_bytes(folder)
            rate = done / max(time.monotonic() - t0, 1e-3)
            emit(ev.BytesProgress("download", item=f"{rate / 1e6:.1f} MB/s", done=done, total=total))

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def download_model(repo_id: str, *, revision: str | None, token: str | None, check: Callable[[], None]) -> Iterator[ev.Event | tuple[Path, str, str | None]]:
    source = "modelscope" if os.environ.get("EZRUNNER_SOURCE", "").lower() == "modelscope" else "huggingface"
    if source == "modelscope":
        yield from _download_modelscope(repo_id, revision=revision, token=token, check=check)
        return
    try:
        from huggingface_hub import HfApi, snapshot_download
    except ImportError:  # pragma: no cover - a base dependency
        raise EzError("huggingface_hub is not installed") from None
    token = token or os.environ.get("HF_TOKEN") or None
    api = HfApi(token=token)
    try:
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
    except Exception as exc:  # noqa: BLE001 - mapped to one line
        raise _hf_error(exc, repo_id, revision) from None
    commit = info.sha or revision
    siblings = info.siblings or []
    names = [s.rfilename for s in siblings]
    allow, ignore = choose_patterns(names)
    import fnmatch

    def wanted(name: str) -> bool:
        if allow is not None and not any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(name.rsplit("/", 1)[-1], p) for p in allow):
            return False
        return not any(fnmatch.fnmatch(name, p) for p in ignore)

    total = sum((s.size or 0) for s in siblings if wanted(s.rfilename)) or None
    dest = locations.home() / "models" / "huggingface" / repo_id.replace("/", "--") / (commit or "main")
    dest.mkdir(parents=True, exist_ok=True)
    yield ev.PhaseStarted("download", label=f"{repo_id}@{(commit or 'main')[:12]}", total=total)

    def work(emit: Callable[[ev.Event], None]) -> Path:
        stop = threading.Event()
        poller = _progress_poller(dest, total, emit, stop)
        try:
            path = snapshot_download(repo_id, revision=commit, local_dir=str(dest), allow_patterns=allow,
                                     ignore_patterns=ignore, token=token)
        finally:
            stop.set()
            poller.join()
        emit(ev.BytesProgress("download", item="done", done=_dir_bytes(dest), total=total))
        return Path(path)

    try:
        path = yield from _drain(work, check)
    except EzError:
        raise
    except Exception as exc:  # noqa: BLE001 - mapped to one line
        raise _hf_error(exc, repo_id, revision) from None
    yield (Path(path), repo_id, commit)  # type: ignore[arg-type]


def _drain(work: Callable[[Callable[[ev.Event], None]], Path], check: Callable[[], None]):
    """Run ``work`` on its thread, re-yield its events, and return its result."""
    result = None
    for item in _threaded(work, check):
        if isinstance(item, ev.Event):
            yield item
        else:
            result = item
    return result


def _download_modelscope(repo_id: str, *, revision: str | None, token: str | None, check: Callable[[], None]) -> Iterator[ev.Event | tuple[Path, str, str | None]]:
    try:
        import modelscope
        from modelscope import snapshot_download
    except ImportError:
        raise EzError("modelscope is not installed", hint="pip install modelscope") from None
    import inspect

    params = inspect.signature(snapshot_download).parameters
    dest = locations.home() / "models" / "modelscope" / repo_id.replace("/", "--") / (revision or "master")
    dest.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, object] = {"revision": revision} if revision else {}
    if "local_dir" in params:
        kwargs["local_dir"] = str(dest)
    else:
        kwargs["cache_dir"] = str(dest)
    if "allow_patterns" in params:
        kwargs["allow_patterns"] = ["*.safetensors", *SMALL_FILES]
    if "ignore_patterns" in params:
        kwargs["ignore_patterns"] = list(WEIGHT_DUPLICATES)
    if token and "token" in params:
        kwargs["token"] = token
    yield ev.PhaseStarted("download", label=f"{repo_id} (ModelScope {getattr(modelscope, '__version__', '?')})")

    def work(emit: Callable[[ev.Event], None]) -> Path:
        stop = threading.Event()
        poller = _progress_poller(dest, None, emit, stop)
        try:
            return Path(snapshot_download(repo_id, **kwargs))
        finally:
            stop.set()
            poller.join()

    try:
        path = yield from _drain(work, check)
    except EzError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise EzError(f"downloading {repo_id} from ModelScope failed: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}",
                      hint="check the network or MODELSCOPE_ENDPOINT; run again to resume") from None
    yield (Path(path), repo_id, revision)  # type: ignore[arg-type]
