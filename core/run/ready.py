"""Wait until a started bundle answers its ready path, or say why it did not:
the exit code (caught even when a restart follows), the last log lines and the
likely cause. Arms the lasting restart policy once the server has come up."""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ezrunner.core.bundle.reader import RunCancelled
from ezrunner.core.engines import ENGINE_TABLE
from ezrunner.core.errors import EzError
from ezrunner.core.events import Event, LogLines, PhaseFinished, PhaseStarted, StepProgress
from ezrunner.core.relay import ThreadRelay
from ezrunner.core.run.container import RunLabels, Running
from ezrunner.core.run.logs import log_tail

Emit = Callable[[Event], None]

LOG_TAIL_ON_FAILURE = 50
RESTART_POLICY = {"Name": "unless-stopped"}
# How long a crash's exit code may take to arrive from the watcher.
EXIT_CODE_WAIT_S = 15.0


def _noop(_e: Event) -> None:
    pass


def ready_timeout(model_bytes: int, engine: str) -> float:
    """How long to wait for the ready path: a base for the engine's start-up plus
    reading the weights at a pessimistic 25 MB/s (a slow disk or a CPU-side
    conversion). 16 GB of vLLM weights -> about 16 minutes; a tiny model -> 2."""
    base = min((s.ready_base_s for s in ENGINE_TABLE if s.engine == engine), default=120.0)
    return base + max(0, model_bytes) / 25e6


@dataclass(frozen=True)
class Ready:
    running: Running
    elapsed: float

    @property
    def base_url(self) -> str:
        return self.running.base_url

    @property
    def model(self) -> str:
        return self.running.labels.served_model_name

    @property
    def needs_key(self) -> bool:
        return RunLabels.of(self.running.container).api_key_set

    def curl(self, api_key: str | None = None) -> str:
        """A ready-to-paste curl command for one chat completion. With an API key
        set and not given here, the header reads the key from ``$API_KEY``."""
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 64})
        parts = ["curl", "-s", shlex.quote(f"{self.base_url}/chat/completions"),
                 "-H", shlex.quote("Content-Type: application/json")]
        if self.needs_key:
            parts += ["-H", shlex.quote(f"Authorization: Bearer {api_key}") if api_key else '"Authorization: Bearer $API_KEY"']
        parts += ["-d", shlex.quote(body)]
        return " ".join(parts)


class ReadyError(EzError):
    """The container exited or did not become ready in time."""

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int | None = None,
                 container_exit_code: int | None = None, log_tail: tuple[str, ...] = (), cause: str | None = None):
        super().__init__(message, hint=hint, exit_code=exit_code)
        self.container_exit_code = container_exit_code
        self.log_tail = log_tail
        self.cause = cause


_CAUSES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("out of memory", re.compile(
        r"out of memory|OutOfMemoryError|\bOOM\b|Cannot allocate memory|std::bad_alloc|MemoryError|"
        r"not enough memory|insufficient memory|No available memory for the cache blocks", re.I)),
    ("a CUDA error (GPU driver, runtime or device problem)", re.compile(
        r"CUDA error|CUDA driver|cudaError|no CUDA-capable device|CUDA initialization|NVIDIA driver|"
        r"nvidia-smi has failed|libcuda\.so|cuInit|RuntimeError: CUDA|NCCL error|Found no NVIDIA driver", re.I)),
    ("a file of the model is missing or unreadable", re.compile(
        r"FileNotFoundError|No such file or directory|does not appear to have a file named|"
        r"Error no file named|PermissionError|Permission denied", re.I)),
    ("the port inside the container is taken", re.compile(r"address already in use", re.I)),
)


def likely_cause(lines: list[str] | tuple[str, ...], *, oom_killed: bool = False, exit_code: int | None = None) -> str | None:
    """Name the likely cause of a failed start from its log lines and state."""
    if oom_killed:
        return "out of memory (the kernel killed the server)"
    text = "\n".join(lines)
    for cause, pattern in _CAUSES:
        if pattern.search(text):
            return cause
    if exit_code == 137:
        return "killed (exit 137): often out of memory"
    return None


def arm_restart_policy(container: Any) -> None:
    """Give a started bundle its lasting restart policy (unless-stopped)."""
    try:
        container.update(restart_policy=RESTART_POLICY)
    except Exception:  # noqa: BLE001 - a container gone meanwhile has nothing to arm
        pass


class _ExitWatcher:
    """Waits for the container's first exit on a thread (POST /wait returns the
    exit code even when the restart policy restarts it at once)."""

    def __init__(self, container: Any):
        import docker

        self._id = container.id
        self._relay: ThreadRelay[int | None] | None = None
        try:
            # Its own connection: closing it ends the blocked wait.
            self._api = docker.from_env(timeout=24 * 3600).api
        except Exception:  # noqa: BLE001 - fall back to polling the state only
            self._api = None
            return
        self._relay = ThreadRelay(self._wait, name=f"ezrunner-wait-{container.name}").start()

    def _wait(self, _put, _stop) -> int | None:
        try:
            return int(self._api.wait(self._id, condition="next-exit").get("StatusCode", -1))
        except Exception:  # noqa: BLE001 - closed by close(), or the container vanished
            return None

    @property
    def code(self) -> int | None:
        """The first exit code, if it has arrived."""
        return self.result(timeout=0)

    def result(self, timeout: float) -> int | None:
        """The first exit code seen, waiting up to ``timeout`` seconds for it."""
        if self._relay is None or not self._relay.wait(timeout):
            return None
        return self._relay.result()

    def close(self) -> None:
        if self._api is not None:
            with contextlib.suppress(Exception):
                self._api.close()


# The ready probe goes straight to the container: never through an HTTP(S)_PROXY
# from the environment (an unreachable proxy would make every bundle "not ready").
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _probe(url: str, timeout: float = 3.0) -> int | None:
    try:
        with _DIRECT.open(urllib.request.Request(url, method="GET"), timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError, ValueError):
        return None


def wait_ready(
    client: Any,
    running: Running,
    *,
    timeout: float | None = None,
    on_event: Emit | None = None,
    poll: float = 1.0,
    stop_on_failure: bool = True,
    cancelled: Callable[[], bool] | None = None,
) -> Ready:
    """Poll the ready path until it answers 200. Emits StepProgress("ready",
    index=elapsed seconds, count=timeout seconds, name=the latest log line) on every
    poll. When the container exits (or restarts) or the timeout passes, emits the
    last 50 log lines as LogLines and raises :class:`ReadyError` with the exit code
    and the likely cause. A crashed container is stopped, so that its restart
    policy does not loop; a timed-out one is left running. ``client`` is unused
    (the exit watcher opens its own connection); it stays for the call shape."""
    emit = on_event or _noop
    labels = running.labels
    limit = timeout if timeout is not None else ready_timeout(labels.model_bytes, labels.engine)
    emit(PhaseStarted("ready", label=f"waiting for {running.ready_url}", total=int(limit)))
    watcher = _ExitWatcher(running.container)
    t0 = time.monotonic()
    latest = ""
    try:
        while True:
            elapsed = time.monotonic() - t0
            state, exited = _look(running, watcher)
            if not exited and _probe(running.ready_url) == 200:
                return _became_ready(running, elapsed, emit)
            latest = (log_tail(running.container, 3) or [latest])[-1]
            emit(StepProgress("ready", index=int(elapsed), count=int(limit), name=latest))
            if exited:
                raise _exited(running, state, watcher, emit, stop=stop_on_failure)
            if cancelled is not None and cancelled():
                arm_restart_policy(running.container)
                raise RunCancelled(
                    f"stopped waiting; {running.name} keeps starting in the background",
                    hint=f"`ezrunner logs -f {running.name}` follows it, `ezrunner stop {running.name}` stops it",
                )
            if elapsed > limit:
                raise _timed_out(running, limit, emit)
            time.sleep(poll)
    finally:
        watcher.close()


def _look(running: Running, watcher: _ExitWatcher) -> tuple[dict[str, Any], bool]:
    """The container's state now, and whether it has exited (or restarted) yet."""
    container = running.container
    try:
        container.reload()
    except Exception:  # noqa: BLE001
        raise ReadyError(f"container {running.name} disappeared while starting") from None
    state = container.attrs.get("State") or {}
    restarts = int(container.attrs.get("RestartCount") or 0)
    exited = (watcher.code is not None or state.get("Status") in ("exited", "dead") or restarts > 0
              or bool(state.get("Restarting")))
    return state, exited


def _became_ready(running: Running, elapsed: float, emit: Emit) -> Ready:
    emit(PhaseFinished("ready", ok=True, detail=f"ready in {elapsed:.0f}s",
                       data={"base_url": running.base_url, "model": running.labels.served_model_name,
                             "elapsed": elapsed, "name": running.name}))
    arm_restart_policy(running.container)
    return Ready(running, elapsed)


def _exit_code(state: dict[str, Any], watcher: _ExitWatcher) -> int | None:
    """The exit code comes from the watcher (the restart policy may already have
    restarted the container, and a running container's State.ExitCode is 0).
    Under load it can take a moment to arrive, or the next crash."""
    if state.get("Status") in ("exited", "dead"):
        code = watcher.code
        return code if code is not None else state.get("ExitCode")
    code = watcher.result(timeout=EXIT_CODE_WAIT_S)
    if code is None and state.get("Restarting"):
        code = state.get("ExitCode")
    return code


def _last_lines(container: Any, emit: Emit, **state: Any) -> tuple[tuple[str, ...], str | None, str]:
    """The last log lines (emitted), their likely cause, and "; likely cause: ..."."""
    lines = tuple(log_tail(container, LOG_TAIL_ON_FAILURE))
    cause = likely_cause(lines, **state)
    emit(LogLines("ready", lines=lines))
    return lines, cause, (f"; likely cause: {cause}" if cause else "")


def _exited(running: Running, state: dict[str, Any], watcher: _ExitWatcher, emit: Emit, *, stop: bool) -> ReadyError:
    code = _exit_code(state, watcher)
    container = running.container
    if stop:
        with contextlib.suppress(Exception):
            container.stop(timeout=5)
        container.reload()
        state = container.attrs.get("State") or {}
    lines, cause, because = _last_lines(container, emit, oom_killed=bool(state.get("OOMKilled")), exit_code=code)
    how = f"exited with code {code}" if code is not None else "exited (exit code unknown)"
    emit(PhaseFinished("ready", ok=False, detail=f"{how}{because}"))
    return ReadyError(
        f"{running.name} {how} before it was ready{because}",
        hint=f"the last {len(lines)} log lines are above; `ezrunner logs {running.name}` shows all, "
        f"`ezrunner stop {running.name} --remove` removes it",
        container_exit_code=code, log_tail=lines, cause=cause,
    )


def _timed_out(running: Running, limit: float, emit: Emit) -> ReadyError:
    lines, cause, because = _last_lines(running.container, emit)
    emit(PhaseFinished("ready", ok=False, detail=f"not ready after {limit:.0f}s{because}"))
    arm_restart_policy(running.container)  # left running: it gets its lasting policy
    return ReadyError(
        f"{running.name} was not ready after {limit:.0f}s (it is still running, no exit code yet){because}",
        hint=f"follow it with `ezrunner logs -f {running.name}`, wait longer with --ready-timeout, "
        f"or `ezrunner stop {running.name}`",
        log_tail=lines, cause=cause,
    )
