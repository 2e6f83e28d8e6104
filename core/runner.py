"""The run side: verify and load a bundle, start it, wait for ready, follow its
logs, list and stop what runs. Fully offline: nothing here talks to a hub or a
registry (``containers.create`` never pulls), and nothing imports a hub client.

Every long step reports :mod:`ezrunner.core.events` objects through ``on_event``
(phases "verify", "load", "start", "ready", "logs"); the CLI renders them with
rich and the TUI renders the same objects. docker is imported inside functions.

Public API (see docs/commands/run.md)::

    verify_bundle(path, on_event=None, *, check_hash=True) -> (BundleSource, BundleInfo)
    connect(timeout=3600) -> docker.DockerClient
    load_bundle(client, source, info, on_event=None) -> docker Image
    start(client, image, *, name=None, host="127.0.0.1", port=None, gpus=None,
          api_key=None, network=None, publish=True, on_event=None) -> Running
    wait_ready(client, running, *, timeout=None, on_event=None, poll=1.0) -> Ready
    run_bundle(path, *, verify=True, ..., on_event=None) -> Ready   (all of the above)
    follow_logs(container, *, follow=True, tail="all") -> Iterator[tuple[str, ...]]
    ps(client, *, all=True) -> list[PsRow]
    stop(client, name, *, remove=False) -> str
"""

from __future__ import annotations

import codecs
import json
import queue
import re
import shlex
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ezrunner.core import docker_api
from ezrunner.core.bundle import format as fmt
from ezrunner.core.bundle.format import BundleError, BundleLabels
from ezrunner.core.bundle.reader import (
    BundleInfo,
    BundleSource,
    RunCancelled,
    find_bundle,
    inspect_bundle,
    iter_chunks,
    verify_bundle,
)
from ezrunner.core.engines import ENGINE_TABLE
from ezrunner.core.errors import EzError, UsageError
from ezrunner.core.events import (
    BytesProgress,
    Event,
    LogLines,
    Notice,
    PhaseFinished,
    PhaseStarted,
    StepProgress,
)

if TYPE_CHECKING:  # pragma: no cover
    import docker

__all__ = [
    "BundleError",
    "BundleInfo",
    "BundleLabels",
    "BundleSource",
    "LineAssembler",
    "PsRow",
    "Ready",
    "ReadyError",
    "RunCancelled",
    "Running",
    "connect",
    "find_bundle",
    "follow_logs",
    "inspect_bundle",
    "likely_cause",
    "load_bundle",
    "ps",
    "ready_timeout",
    "run_bundle",
    "start",
    "stop",
    "verify_bundle",
    "wait_ready",
]

Emit = Callable[[Event], None]

# Labels ezrunner puts on the containers it starts (the image's own ezrunner.*
# labels are inherited by the container too).
RUN_LABEL_MANAGED = "ezrunner.run.managed"
RUN_LABEL_HOST = "ezrunner.run.host"
RUN_LABEL_PORT = "ezrunner.run.port"
RUN_LABEL_BUNDLE = "ezrunner.run.bundle"
RUN_LABEL_API_KEY = "ezrunner.run.api-key"

LOG_TAIL_ON_FAILURE = 50
LOAD_CHUNK = 1024 * 1024


def _noop(_e: Event) -> None:
    pass


# --------------------------------------------------------------------------- docker


connect = docker_api.connect
_api_message = docker_api.api_message
_first_line = docker_api.first_line


NVIDIA_FIX = (
    "install the NVIDIA Container Toolkit (package nvidia-container-toolkit), run "
    "`sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker`, "
    "or run without a GPU with --gpus none when the bundle allows it"
)


def explain_start_error(exc: Exception, *, host: str, port: int | None) -> EzError:
    """Map a Docker API error at container create/start to one line with the fix."""
    msg = _api_message(exc)
    low = msg.lower()
    if 'could not select device driver' in low or "unknown or invalid runtime name: nvidia" in low:
        return EzError("the NVIDIA container runtime is missing: Docker cannot give this container a GPU", hint=NVIDIA_FIX)
    if "nvidia-container-cli" in low or "libnvidia-ml" in low or "nvml" in low:
        return EzError(
            "the NVIDIA driver is not usable from Docker: " + msg[-200:],
            hint="check `nvidia-smi` on the host, then reinstall or reconfigure nvidia-container-toolkit",
        )
    if "port is already allocated" in low or "address already in use" in low:
        return EzError(
            f"port {port} on {host} is already in use",
            hint="pick another port with --port, or stop what uses it (`ezrunner ps`)",
        )
    if "cannot assign requested address" in low:
        return UsageError(f"--host {host}: this machine has no such address", hint="use 127.0.0.1 or one of this machine's addresses")
    if "conflict" in low and "name" in low:
        return EzError("a container with that name exists already: " + msg, hint="choose another --name, or `ezrunner stop NAME --remove`")
    return EzError("Docker could not start the container: " + msg)


# --------------------------------------------------------------------------- labels


def ready_timeout(model_bytes: int, engine: str) -> float:
    """How long to wait for the ready path: a base for the engine's start-up plus
    reading the weights at a pessimistic 25 MB/s (a slow disk or a CPU-side
    conversion). 16 GB of vLLM weights -> about 16 minutes; a tiny model -> 2."""
    base = min((s.ready_base_s for s in ENGINE_TABLE if s.engine == engine), default=120.0)
    return base + max(0, model_bytes) / 25e6


# --------------------------------------------------------------------------- load


def find_image(client: docker.DockerClient, image_id: str):
    from docker.errors import ImageNotFound, NotFound

    try:
        return client.images.get(image_id)
    except (ImageNotFound, NotFound):
        return None


def load_bundle(client: docker.DockerClient, source: BundleSource, info: BundleInfo, on_event: Emit | None = None,
                *, cancelled: Callable[[], bool] | None = None):
    """``docker load`` the bundle with progress (bytes fed to the engine, then the
    engine's own per-layer "Loading layer" progress), unless an image with the same
    id is present already: then the load is skipped and said so."""
    from docker.errors import APIError, DockerException

    emit = on_event or _noop
    existing = find_image(client, info.image_id)
    if existing is not None:
        _ensure_tag(existing, info.image_tag)
        emit(Notice("load", message=f"image {info.image_id[:19]}… ({info.image_tag}) is already loaded; skipping docker load"))
        emit(PhaseFinished("load", ok=True, detail="already loaded", data={"image_id": existing.id, "skipped": True}))
        return existing
    total = source.size
    emit(PhaseStarted("load", label=f"docker load {source.describe()}", total=total))
    sent = [0]
    last = [0.0]

    def body() -> Iterator[bytes]:
        for chunk in iter_chunks(source, LOAD_CHUNK):
            sent[0] += len(chunk)
            now = time.monotonic()
            if now - last[0] >= 0.2:
                last[0] = now
                if cancelled is not None and cancelled():
                    raise RunCancelled("cancelled while loading; Docker discards the partial upload")
                emit(BytesProgress("load", item=source.path.name, done=sent[0], total=total))
            yield bytes(chunk)
        emit(BytesProgress("load", item=source.path.name, done=sent[0], total=total))

    loaded: list[str] = []
    try:
        for msg in client.api.load_image(body(), quiet=False):
            if not isinstance(msg, dict):
                continue
            if msg.get("errorDetail") or msg.get("error"):
                detail = (msg.get("errorDetail") or {}).get("message") or msg.get("error")
                raise EzError(f"docker load failed: {_first_line(str(detail))}", hint="verify the bundle (run without --no-verify)")
            if msg.get("stream"):
                line = str(msg["stream"]).strip()
                if line:
                    loaded.append(line)
                    emit(LogLines("load", lines=(line,)))
            elif msg.get("progressDetail"):
                pd = msg["progressDetail"] or {}
                if "current" in pd:
                    emit(BytesProgress("load", item=f"layer {msg.get('id', '')}", done=int(pd["current"]), total=pd.get("total")))
    except (BundleError, RunCancelled):
        raise
    except APIError as exc:
        raise EzError(f"docker load failed: {_api_message(exc)}") from None
    except DockerException as exc:
        raise EzError(f"docker load failed: {_first_line(str(exc))}") from None
    image = find_image(client, info.image_id)
    if image is None:
        raise EzError(
            f"docker load finished but image {info.image_id[:19]}… is not there ({'; '.join(loaded) or 'no output'})",
            hint="the bundle's image config does not match its manifest; pack it again",
        )
    _ensure_tag(image, info.image_tag)
    emit(PhaseFinished("load", ok=True, detail=f"loaded {info.image_tag}", data={"image_id": image.id, "skipped": False}))
    return image


def _ensure_tag(image, tag: str) -> None:
    if not tag or tag in (image.tags or []):
        return
    repo, _, t = tag.rpartition(":")
    if not repo or "/" in t:
        repo, t = tag, "latest"
    try:
        image.tag(repo, t)
    except Exception:  # noqa: BLE001 - a missing tag does not stop the run
        pass


# --------------------------------------------------------------------------- start


@dataclass(frozen=True)
class Running:
    """A started (or found) container and where it answers."""

    container: Any
    name: str
    labels: BundleLabels
    host: str
    port: int | None  # the published host port (None when not published)
    url_host: str  # the address to reach it from here
    url_port: int

    @property
    def base_url(self) -> str:
        return f"http://{_url_host(self.url_host)}:{self.url_port}/v1"

    @property
    def ready_url(self) -> str:
        return f"http://{_url_host(self.url_host)}:{self.url_port}{self.labels.ready_path}"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _reach_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


def default_name(served_model_name: str) -> str:
    """A container name from the served model name (Docker allows [a-zA-Z0-9_.-])."""
    name = re.sub(r"[^a-zA-Z0-9_.-]+", "-", served_model_name).strip("-._")
    return name or "ezrunner"


def parse_gpus(value: str | None) -> str | list[str] | None:
    """``--gpus``: None (follow the bundle), "all", "none", or device ids "0,1"."""
    if value is None:
        return None
    v = value.strip().lower()
    if v in ("all", "none"):
        return v
    ids = [x.strip() for x in value.split(",") if x.strip()]
    if not ids or not all(re.fullmatch(r"[0-9]+|GPU-[0-9a-fA-F-]+", x) for x in ids):
        raise UsageError(f"--gpus: {value!r} is not all, none or a list of GPU indexes like 0,1")
    return ids


def device_requests_for(gpus: str | list[str] | None, labels: BundleLabels) -> list:
    """GPUs for the container: all of them when the bundle needs one (or --gpus all),
    the listed ones for --gpus 0,1, none for --gpus none."""
    import docker

    if gpus is None:
        gpus = "all" if labels.needs_gpu else "none"
    if gpus == "none":
        if labels.needs_gpu:
            raise UsageError(
                f"--gpus none: this bundle needs a GPU (engine {labels.engine}, device {labels.device or 'cuda'})",
                hint="leave --gpus out (all GPUs) or name some: --gpus 0,1",
            )
        return []
    if gpus == "all":
        return [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
    return [docker.types.DeviceRequest(device_ids=list(gpus), capabilities=[["gpu"]])]


def port_in_use(host: str, port: int) -> bool:
    """True when nothing may bind ``host:port`` on this machine now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == 99:  # EADDRNOTAVAIL: not our address; Docker will say so
                return False
            return True
    return False


def _container_on_port(client, port: int) -> str | None:
    try:
        for c in client.containers.list():
            for bindings in ((c.attrs.get("HostConfig") or {}).get("PortBindings") or {}).values():
                for b in bindings or []:
                    if str(b.get("HostPort")) == str(port):
                        return c.name
    except Exception:  # noqa: BLE001
        return None
    return None


def _get_container(client, name: str):
    from docker.errors import NotFound

    try:
        return client.containers.get(name)
    except NotFound:
        return None


def start(
    client: docker.DockerClient,
    image,
    *,
    name: str | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    gpus: str | list[str] | None = None,
    api_key: str | None = None,
    network: str | None = None,
    publish: bool = True,
    bundle_name: str = "",
    on_event: Emit | None = None,
) -> Running:
    """Start the image as a container from its labels only: bind ``host:port``
    (127.0.0.1 by default; the label's port when ``port`` is None) to the label's
    container port, restart policy unless-stopped, GPUs through device_requests,
    the API key in the env variable the label names. The image's CMD runs; no
    command is passed. Never pulls."""
    from docker.errors import APIError, DockerException

    emit = on_event or _noop
    if isinstance(image, str):
        ref = image
        image = find_image(client, ref)
        if image is None:
            raise EzError(f"image {ref} is not loaded", hint="run the bundle file (BUNDLE.tar), which loads it")
    labels = BundleLabels.from_labels(image.labels, what=f"image {(image.tags or [image.id])[0]}")
    name = name or default_name(labels.served_model_name)
    if not _NAME_RE.match(name):
        raise UsageError(f"--name: {name!r} is not a valid container name", hint="use letters, digits, '_', '.', '-'")
    host_port = port if port is not None else labels.port
    if not 0 < host_port < 65536:
        raise UsageError(f"--port: {host_port} is not a port number")
    emit(PhaseStarted("start", label=f"start {name}"))

    existing = _get_container(client, name)
    if existing is not None:
        managed = (existing.labels or {}).get(RUN_LABEL_MANAGED) == "true"
        status = existing.status
        if not managed:
            raise EzError(
                f"a container named {name!r} exists and was not started by ezrunner",
                hint="choose another name with --name",
            )
        if status in ("running", "restarting", "paused"):
            where = _where(existing)
            raise EzError(
                f"{name} is already running ({status}) at {where}",
                hint=f"`ezrunner stop {name}` first, or start a second copy with --name and --port",
            )
        emit(Notice("start", message=f"replacing the stopped container {name} ({status})"))
        try:
            existing.remove(force=True)
        except DockerException as exc:
            raise EzError(f"cannot remove the old container {name}: {_api_message(exc)}") from None

    if publish:
        if port_in_use(host, host_port):
            owner = _container_on_port(client, host_port)
            by = f" (by container {owner})" if owner else ""
            raise EzError(
                f"port {host_port} on {host} is already in use{by}",
                hint="pick another port with --port, or stop what uses it (`ezrunner ps`)",
            )
        owner = _container_on_port(client, host_port)
        if owner:
            raise EzError(
                f"port {host_port} is already published by container {owner}",
                hint="pick another port with --port, or stop it first",
            )

    device_requests = device_requests_for(gpus, labels)
    if publish and host not in ("127.0.0.1", "::1", "localhost") and not api_key:
        emit(Notice("start", level="warning",
                    message=f"listening on {host}:{host_port} without an API key: anyone who reaches this "
                    "address can use the model (add --api-key KEY)"))
    env = {"HF_HUB_OFFLINE": "1"}
    if api_key:
        env[labels.api_key_env] = api_key
    run_labels = {
        RUN_LABEL_MANAGED: "true",
        RUN_LABEL_HOST: host,
        RUN_LABEL_PORT: str(host_port) if publish else "",
        RUN_LABEL_BUNDLE: bundle_name,
        RUN_LABEL_API_KEY: "set" if api_key else "none",
    }
    kwargs: dict[str, Any] = dict(
        image=image.id,
        name=name,
        detach=True,
        labels=run_labels,
        environment=env,
        # No restart until the server has come up once: a model that crashes at
        # start must stay exited with its exit code, not loop. wait_ready() arms
        # unless-stopped when the server is ready (or keeps starting in the background).
        restart_policy={"Name": "no"},
        device_requests=device_requests or None,
    )
    if publish:
        kwargs["ports"] = {f"{labels.port}/tcp": (host, host_port)}
    if network:
        kwargs["network"] = network
    container = None
    try:
        container = client.containers.create(**kwargs)
        container.start()
    except (APIError, DockerException) as exc:
        if container is not None:
            try:
                container.remove(force=True)
            except DockerException:
                pass
        raise explain_start_error(exc, host=host, port=host_port) from None
    container.reload()
    if publish:
        url_host, url_port = _reach_host(host), host_port
    else:
        url_host, url_port = container_ip(container), labels.port
    gpu_note = "no GPU" if not device_requests else ("all GPUs" if gpus in (None, "all") else f"GPUs {','.join(gpus)}")
    emit(Notice("start", message=f"started {name} ({labels.engine}, {gpu_note}) from {(image.tags or [image.id[:19]])[0]}"))
    emit(PhaseFinished("start", ok=True, detail=name, data={"container": container.id, "name": name}))
    return Running(container, name, labels, host, host_port if publish else None, url_host, url_port)


def container_ip(container) -> str:
    nets = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
    for net in nets.values():
        if net.get("IPAddress"):
            return net["IPAddress"]
    raise EzError(f"container {container.name} has no IP address")


def _where(container) -> str:
    labels = container.labels or {}
    host = labels.get(RUN_LABEL_HOST) or "127.0.0.1"
    port = labels.get(RUN_LABEL_PORT)
    if port:
        return f"http://{_url_host(_reach_host(host))}:{port}/v1"
    try:
        return f"http://{container_ip(container)}:{labels.get(fmt.LABEL_PORT, '8000')}/v1"
    except EzError:
        return "(no published port)"


def running_from_container(container) -> Running:
    """A :class:`Running` for a container ezrunner started earlier."""
    labels = BundleLabels.from_labels(container.labels, what=f"container {container.name}")
    cl = container.labels or {}
    host = cl.get(RUN_LABEL_HOST) or "127.0.0.1"
    port = int(cl[RUN_LABEL_PORT]) if cl.get(RUN_LABEL_PORT) else None
    if port is not None:
        return Running(container, container.name, labels, host, port, _reach_host(host), port)
    return Running(container, container.name, labels, host, None, container_ip(container), labels.port)


# --------------------------------------------------------------------------- ready


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
        return (self.running.container.labels or {}).get(RUN_LABEL_API_KEY) == "set"

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


RESTART_POLICY = {"Name": "unless-stopped"}


def arm_restart_policy(container) -> None:
    """Give a started bundle its lasting restart policy (unless-stopped)."""
    try:
        container.update(restart_policy=RESTART_POLICY)
    except Exception:  # noqa: BLE001 - a container gone meanwhile has nothing to arm
        pass


class _ExitWatcher:
    """Waits for the container's first exit in a thread (POST /wait returns the
    exit code even when the restart policy restarts it at once)."""

    def __init__(self, container):
        import docker

        self.code: int | None = None
        self._id = container.id
        try:
            # Its own connection: closing it ends the blocked wait.
            self._client = docker.from_env(timeout=24 * 3600).api
        except Exception:  # noqa: BLE001 - fall back to polling the state only
            self._client = None
            return
        self._thread = threading.Thread(target=self._wait, name=f"ezrunner-wait-{container.name}", daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        if self._client is None:
            return
        try:
            res = self._client.wait(self._id, condition="next-exit")
            self.code = int(res.get("StatusCode", -1))
        except Exception:  # noqa: BLE001 - closed by close(), or the container vanished
            pass

    def result(self, timeout: float) -> int | None:
        """The first exit code seen, waiting up to ``timeout`` seconds for it."""
        thread = getattr(self, "_thread", None)
        if thread is not None and self.code is None:
            thread.join(timeout)
        return self.code

    def close(self) -> None:
        if self._client is None:
            return
        try:
            self._client.close()
        except Exception:  # noqa: BLE001
            pass


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


def _log_tail(container, n: int) -> list[str]:
    try:
        raw = container.logs(tail=n, stdout=True, stderr=True)
    except Exception:  # noqa: BLE001
        return []
    asm = LineAssembler()
    lines = asm.feed(raw) + asm.flush()
    return lines[-n:]


def wait_ready(
    client: docker.DockerClient,
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
    policy does not loop; a timed-out one is left running."""
    emit = on_event or _noop
    labels = running.labels
    limit = timeout if timeout is not None else ready_timeout(labels.model_bytes, labels.engine)
    container = running.container
    emit(PhaseStarted("ready", label=f"waiting for {running.ready_url}", total=int(limit)))
    watcher = _ExitWatcher(container)
    t0 = time.monotonic()
    latest = ""
    try:
        while True:
            elapsed = time.monotonic() - t0
            try:
                container.reload()
            except Exception:  # noqa: BLE001
                raise ReadyError(f"container {running.name} disappeared while starting") from None
            state = container.attrs.get("State") or {}
            restarts = int(container.attrs.get("RestartCount") or 0)
            exited = watcher.code is not None or state.get("Status") in ("exited", "dead") or restarts > 0 or state.get("Restarting")
            if not exited and _probe(running.ready_url) == 200:
                emit(PhaseFinished("ready", ok=True, detail=f"ready in {elapsed:.0f}s",
                                   data={"base_url": running.base_url, "model": labels.served_model_name,
                                         "elapsed": elapsed, "name": running.name}))
                arm_restart_policy(container)
                return Ready(running, elapsed)
            tail = _log_tail(container, 3)
            if tail:
                latest = tail[-1]
            emit(StepProgress("ready", index=int(elapsed), count=int(limit), name=latest))
            if exited:
                # The exit code comes from the watcher (the restart policy may already
                # have restarted the container, and a running container's State.ExitCode
                # is 0). Under load it can take a moment to arrive, or the next crash.
                if state.get("Status") in ("exited", "dead"):
                    code = watcher.code if watcher.code is not None else state.get("ExitCode")
                else:
                    code = watcher.result(timeout=15.0)
                    if code is None and state.get("Restarting"):
                        code = state.get("ExitCode")
                if stop_on_failure:
                    try:
                        container.stop(timeout=5)
                    except Exception:  # noqa: BLE001
                        pass
                    container.reload()
                    state = container.attrs.get("State") or {}
                lines = _log_tail(container, LOG_TAIL_ON_FAILURE)
                cause = likely_cause(lines, oom_killed=bool(state.get("OOMKilled")), exit_code=code)
                emit(LogLines("ready", lines=tuple(lines)))
                because = f"; likely cause: {cause}" if cause else ""
                how = f"exited with code {code}" if code is not None else "exited (exit code unknown)"
                emit(PhaseFinished("ready", ok=False, detail=f"{how}{because}"))
                raise ReadyError(
                    f"{running.name} {how} before it was ready{because}",
                    hint=f"the last {len(lines)} log lines are above; `ezrunner logs {running.name}` shows all, "
                    f"`ezrunner stop {running.name} --remove` removes it",
                    container_exit_code=code, log_tail=tuple(lines), cause=cause,
                )
            if cancelled is not None and cancelled():
                arm_restart_policy(container)
                raise RunCancelled(
                    f"stopped waiting; {running.name} keeps starting in the background",
                    hint=f"`ezrunner logs -f {running.name}` follows it, `ezrunner stop {running.name}` stops it",
                )
            if elapsed > limit:
                lines = _log_tail(container, LOG_TAIL_ON_FAILURE)
                cause = likely_cause(lines)
                emit(LogLines("ready", lines=tuple(lines)))
                because = f"; likely cause: {cause}" if cause else ""
                emit(PhaseFinished("ready", ok=False, detail=f"not ready after {limit:.0f}s{because}"))
                arm_restart_policy(container)  # left running: it gets its lasting policy
                raise ReadyError(
                    f"{running.name} was not ready after {limit:.0f}s (it is still running, no exit code yet){because}",
                    hint=f"follow it with `ezrunner logs -f {running.name}`, wait longer with --ready-timeout, "
                    f"or `ezrunner stop {running.name}`",
                    log_tail=tuple(lines), cause=cause,
                )
            time.sleep(poll)
    finally:
        watcher.close()


# --------------------------------------------------------------------------- all in one


def run_bundle(
    path: str,
    *,
    verify: bool = True,
    name: str | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    gpus: str | list[str] | None = None,
    api_key: str | None = None,
    network: str | None = None,
    publish: bool = True,
    ready_timeout_s: float | None = None,
    client: docker.DockerClient | None = None,
    on_event: Emit | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Ready:
    """Verify (or with ``verify=False`` only check the structure), load, start
    and wait until ready. Raises EzError subclasses; emits events throughout."""
    source, info = verify_bundle(path, on_event, check_hash=verify, cancelled=cancelled)
    client = client or connect()
    image = load_bundle(client, source, info, on_event, cancelled=cancelled)
    running = start(client, image, name=name, host=host, port=port, gpus=gpus, api_key=api_key,
                    network=network, publish=publish, bundle_name=source.path.name, on_event=on_event)
    return wait_ready(client, running, timeout=ready_timeout_s, on_event=on_event, cancelled=cancelled)


# --------------------------------------------------------------------------- logs


class LineAssembler:
    """Reassemble text lines from byte chunks that are not line-aligned (and may
    split a UTF-8 character). ``\\n``, ``\\r\\n`` and a lone ``\\r`` (progress bars)
    end a line."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending = ""

    def feed(self, chunk: bytes) -> list[str]:
        text = self._pending + self._decoder.decode(chunk)
        if not text:
            return []
        # Keep a trailing "\r" pending: it may be the first half of "\r\n".
        hold_cr = text.endswith("\r")
        if hold_cr:
            text = text[:-1]
        parts = re.split(r"\r\n|\n|\r", text)
        self._pending = parts.pop() + ("\r" if hold_cr else "")
        return parts

    def flush(self) -> list[str]:
        text = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        text = text.rstrip("\r")
        return [text] if text else []


_END = object()


def follow_logs(
    container,
    *,
    follow: bool = True,
    tail: int | str = "all",
    interval: float = 0.1,
    max_lines: int = 1000,
    stop_event: threading.Event | None = None,
) -> Iterator[tuple[str, ...]]:
    """Yield batches of whole log lines: everything that arrived within
    ``interval`` seconds (at most ``max_lines`` per batch), so a UI can append a
    batch at a time. Reads ``container.logs(stream=True, follow=follow)`` in a
    thread; closing the generator (or setting ``stop_event``) ends it."""
    stream = container.logs(stream=True, follow=follow, tail=tail, stdout=True, stderr=True)
    q: queue.Queue = queue.Queue(maxsize=1024)
    done = threading.Event()

    def pump() -> None:
        try:
            for chunk in stream:
                while not done.is_set():
                    try:
                        q.put(chunk, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if done.is_set():
                    break
        except Exception as exc:  # noqa: BLE001 - ends the stream; reported below
            q.put(exc)
        finally:
            q.put(_END)

    thread = threading.Thread(target=pump, name="ezrunner-logs", daemon=True)
    thread.start()
    asm = LineAssembler()
    try:
        finished = False
        while not finished:
            try:
                item = q.get(timeout=0.25)
            except queue.Empty:
                if stop_event is not None and stop_event.is_set():
                    return
                continue
            batch: list[str] = []
            deadline = time.monotonic() + interval
            while True:
                if item is _END:
                    batch.extend(asm.flush())
                    finished = True
                    break
                if isinstance(item, Exception):
                    batch.extend(asm.flush())
                    finished = True
                    break
                batch.extend(asm.feed(item))
                if len(batch) >= max_lines:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = q.get(timeout=remaining)
                except queue.Empty:
                    break
            while len(batch) > max_lines:
                yield tuple(batch[:max_lines])
                batch = batch[max_lines:]
            if batch:
                yield tuple(batch)
            if stop_event is not None and stop_event.is_set():
                return
    finally:
        done.set()
        try:
            stream.close()
        except Exception:  # noqa: BLE001
            pass


def get_managed(client: docker.DockerClient, name: str):
    """The ezrunner container called ``name`` (or raise a one-line error)."""
    c = _get_container(client, name)
    if c is None or (c.labels or {}).get(RUN_LABEL_MANAGED) != "true":
        names = ", ".join(r.name for r in ps(client)) or "none"
        raise EzError(f"no ezrunner container named {name!r} (running here: {names})", hint="`ezrunner ps` lists them")
    return c


# --------------------------------------------------------------------------- ps / stop


@dataclass(frozen=True)
class PsRow:
    name: str
    model: str
    served_model_name: str
    engine: str
    device: str
    host: str
    port: str
    state: str
    uptime_s: float | None
    url: str
    image: str

    @property
    def uptime(self) -> str:
        return format_duration(self.uptime_s) if self.uptime_s is not None else "-"


def format_duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def _parse_time(text: str) -> datetime | None:
    if not text or text.startswith("0001-"):
        return None
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text)
    if not m:
        return None
    frac = (m.group(2) or ".0")[:7]
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    try:
        return datetime.fromisoformat(m.group(1) + frac + tz)
    except ValueError:
        return None


def ps(client: docker.DockerClient, *, all: bool = True) -> list[PsRow]:  # noqa: A002
    """The containers ezrunner started here (running and stopped), by name."""
    rows: list[PsRow] = []
    for c in client.containers.list(all=all, filters={"label": f"{RUN_LABEL_MANAGED}=true"}):
        labels = c.labels or {}
        state = c.attrs.get("State") or {}
        status = state.get("Status") or c.status
        health = (state.get("Health") or {}).get("Status")
        # "healthy", "starting", "unhealthy" say more than "running" when the image has a HEALTHCHECK.
        shown = health if status == "running" and health else status
        uptime = None
        if status == "running":
            started = _parse_time(state.get("StartedAt", ""))
            if started:
                uptime = max(0.0, (datetime.now(UTC) - started).total_seconds())
        elif status == "exited":
            shown = f"exited ({state.get('ExitCode')})"
        port = labels.get(RUN_LABEL_PORT, "")
        host = labels.get(RUN_LABEL_HOST, "")
        rows.append(PsRow(
            name=c.name,
            model=labels.get(fmt.LABEL_MODEL, ""),
            served_model_name=labels.get(fmt.LABEL_SERVED_MODEL_NAME, ""),
            engine=labels.get(fmt.LABEL_ENGINE, ""),
            device=labels.get(fmt.LABEL_DEVICE, ""),
            host=host,
            port=port,
            state=shown,
            uptime_s=uptime,
            url=_where(c) if status == "running" else "",
            image=(c.image.tags[0] if c.image and c.image.tags else (c.attrs.get("Image") or "")[:19]),
        ))
    rows.sort(key=lambda r: r.name)
    return rows


def stop(client: docker.DockerClient, name: str, *, remove: bool = False, timeout: int = 15) -> str:
    """Stop the ezrunner container ``name`` (and remove it with ``remove``).
    Returns a one-line summary. The image stays (``docker rmi`` removes it)."""
    from docker.errors import DockerException

    c = get_managed(client, name)
    try:
        c.reload()
        was = c.status
        if was in ("running", "restarting", "paused"):
            c.stop(timeout=timeout)
        if remove:
            c.remove(force=True)
            return f"stopped and removed {name}" if was in ("running", "restarting", "paused") else f"removed {name} (was {was})"
    except DockerException as exc:
        raise EzError(f"cannot stop {name}: {_api_message(exc)}") from None
    return f"stopped {name}" if was in ("running", "restarting", "paused") else f"{name} was not running ({was})"
