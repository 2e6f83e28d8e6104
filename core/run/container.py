"""Start a bundle's image as a container, from its labels only, and find it again.

:func:`start` takes a :class:`StartOptions` (what ``ezrunner run``'s flags and the
TUI's form say) and returns a :class:`Running`. The containers it starts carry
``ezrunner.run.*`` labels (:class:`RunLabels`) next to the image's own
``ezrunner.*`` labels (:class:`~ezrunner.core.bundle.format.BundleLabels`).
Never pulls: the image must be loaded. docker is imported inside functions.
"""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ezrunner.core import docker_api
from ezrunner.core.bundle.format import BundleError, BundleLabels
from ezrunner.core.engines import CONTAINER_PORT, CONTAINER_UID, find_spec
from ezrunner.core.errors import EzError, UsageError
from ezrunner.core.events import Event, Notice, PhaseFinished, PhaseStarted

Emit = Callable[[Event], None]

# Labels ezrunner puts on the containers it starts.
RUN_LABEL_MANAGED = "ezrunner.run.managed"
RUN_LABEL_HOST = "ezrunner.run.host"
RUN_LABEL_PORT = "ezrunner.run.port"
RUN_LABEL_BUNDLE = "ezrunner.run.bundle"
RUN_LABEL_API_KEY = "ezrunner.run.api-key"

RUNNING_STATES = ("running", "restarting", "paused")
# The tmpfs mounts of a read-only container: private to it, owned by the server's
# user, no setuid or device files; gone when the container is removed.
TMPFS_OPTIONS = f"rw,nosuid,nodev,uid={CONTAINER_UID},gid={CONTAINER_UID},mode=0700"
LOCAL_HOSTS = ("127.0.0.1", "::1", "localhost")
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")

NVIDIA_FIX = (
    "install the NVIDIA Container Toolkit (package nvidia-container-toolkit), run "
    "`sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker`, "
    "or run without a GPU with --gpus none when the bundle allows it"
)


def _noop(_e: Event) -> None:
    pass


# --------------------------------------------------------------------------- options and labels


@dataclass(frozen=True)
class StartOptions:
    """How to start a bundle: ``ezrunner run``'s flags, the TUI's start form.

    ``gpus``: None follows the bundle (all GPUs when it needs one), "all", "none",
    device ids ("0,1" or a list); a string is checked with :func:`parse_gpus`.
    ``publish=False`` binds no host port (reach it by the container's address on
    ``network``). ``bundle_name`` is recorded on the container for ``ps``."""

    name: str | None = None
    host: str = "127.0.0.1"
    port: int | None = None
    gpus: str | Sequence[str] | None = None
    api_key: str | None = None
    network: str | None = None
    publish: bool = True
    bundle_name: str = ""


@dataclass(frozen=True)
class RunLabels:
    """The ``ezrunner.run.*`` labels of a container that :func:`start` made."""

    managed: bool = True
    host: str = ""
    port: str = ""  # the published host port; "" when none
    bundle: str = ""
    api_key_set: bool = False

    def to_labels(self) -> dict[str, str]:
        return {
            RUN_LABEL_MANAGED: "true" if self.managed else "false",
            RUN_LABEL_HOST: self.host,
            RUN_LABEL_PORT: self.port,
            RUN_LABEL_BUNDLE: self.bundle,
            RUN_LABEL_API_KEY: "set" if self.api_key_set else "none",
        }

    @classmethod
    def from_labels(cls, labels: dict[str, str] | None) -> RunLabels:
        labels = labels or {}
        return cls(managed=labels.get(RUN_LABEL_MANAGED) == "true", host=labels.get(RUN_LABEL_HOST, ""),
                   port=labels.get(RUN_LABEL_PORT, ""), bundle=labels.get(RUN_LABEL_BUNDLE, ""),
                   api_key_set=labels.get(RUN_LABEL_API_KEY) == "set")

    @classmethod
    def of(cls, container: Any) -> RunLabels:
        return cls.from_labels(container.labels)


def bundle_labels_or_none(container: Any) -> BundleLabels | None:
    """The container's bundle labels, or None when they are missing or broken."""
    try:
        return BundleLabels.from_labels(container.labels, what=f"container {container.name}")
    except BundleError:
        return None


# --------------------------------------------------------------------------- where it answers


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

    @classmethod
    def at(cls, container: Any, name: str, labels: BundleLabels, host: str, port: int | None) -> Running:
        """Reached on ``host:port`` when published, else by the container's address."""
        if port is not None:
            return cls(container, name, labels, host, port, reach_host(host), port)
        return cls(container, name, labels, host, None, container_ip(container), labels.port)

    @property
    def base_url(self) -> str:
        return f"http://{url_host(self.url_host)}:{self.url_port}/v1"

    @property
    def ready_url(self) -> str:
        return f"http://{url_host(self.url_host)}:{self.url_port}{self.labels.ready_path}"


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def reach_host(host: str) -> str:
    """The address to reach a server bound on ``host`` from this machine."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def container_ip(container: Any) -> str:
    nets = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
    for net in nets.values():
        if net.get("IPAddress"):
            return net["IPAddress"]
    raise EzError(f"container {container.name} has no IP address")


def where(container: Any) -> str:
    """The OpenAI base URL of an ezrunner container, for messages and ``ps``."""
    run = RunLabels.of(container)
    if run.port:
        return f"http://{url_host(reach_host(run.host or '127.0.0.1'))}:{run.port}/v1"
    labels = bundle_labels_or_none(container)
    try:
        return f"http://{container_ip(container)}:{labels.port if labels else CONTAINER_PORT}/v1"
    except EzError:
        return "(no published port)"


def running_from_container(container: Any) -> Running:
    """A :class:`Running` for a container ezrunner started earlier."""
    labels = BundleLabels.from_labels(container.labels, what=f"container {container.name}")
    run = RunLabels.of(container)
    return Running.at(container, container.name, labels, run.host or "127.0.0.1", int(run.port) if run.port else None)


# --------------------------------------------------------------------------- checks


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


def device_requests_for(gpus: str | Sequence[str] | None, labels: BundleLabels) -> list:
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


def _container_on_port(client: Any, port: int) -> str | None:
    try:
        for c in client.containers.list():
            for bindings in ((c.attrs.get("HostConfig") or {}).get("PortBindings") or {}).values():
                for b in bindings or []:
                    if str(b.get("HostPort")) == str(port):
                        return c.name
    except Exception:  # noqa: BLE001
        return None
    return None


def _check_port_free(client: Any, host: str, port: int) -> None:
    if port_in_use(host, port):
        owner = _container_on_port(client, port)
        by = f" (by container {owner})" if owner else ""
        raise EzError(f"port {port} on {host} is already in use{by}",
                      hint="pick another port with --port, or stop what uses it (`ezrunner ps`)")
    owner = _container_on_port(client, port)
    if owner:
        raise EzError(f"port {port} is already published by container {owner}",
                      hint="pick another port with --port, or stop it first")


def check_api_key(key: str | None) -> None:
    """An API key is printable ASCII without spaces (what an HTTP header carries
    byte for byte), so that a client can always send it."""
    if key is not None and (not key or not all(33 <= ord(c) <= 126 for c in key)):
        raise UsageError("the API key must be printable ASCII without spaces or control characters",
                         hint="e.g. generate one with: openssl rand -hex 32 > key.txt")


def _checked_name(name: str | None, labels: BundleLabels) -> str:
    name = name or default_name(labels.served_model_name)
    if not _NAME_RE.match(name):
        raise UsageError(f"--name: {name!r} is not a valid container name", hint="use letters, digits, '_', '.', '-'")
    return name


def _checked_port(port: int | None, labels: BundleLabels) -> int:
    host_port = port if port is not None else labels.port
    if not 0 < host_port < 65536:
        raise UsageError(f"--port: {host_port} is not a port number")
    return host_port


def explain_start_error(exc: Exception, *, host: str, port: int | None) -> EzError:
    """Map a Docker API error at container create/start to one line with the fix."""
    msg = docker_api.api_message(exc)
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


# --------------------------------------------------------------------------- start


@dataclass(frozen=True)
class StartCheck:
    """What :func:`check_start` settled: the container name, the host port and the GPUs."""

    name: str
    host_port: int
    device_requests: list
    gpus: str | Sequence[str] | None


def check_start(client: Any, labels: BundleLabels, options: StartOptions | None = None) -> StartCheck:
    """Every cheap check of a start, without changing anything: the name (free, or
    a stopped ezrunner container), the port (free), the GPUs (the bundle allows
    them). ``run`` calls it before the long checksum pass and the load; :func:`start`
    again just before it creates the container."""
    opts = options or StartOptions()
    gpus = parse_gpus(opts.gpus) if isinstance(opts.gpus, str) else opts.gpus
    name, host_port = _checked_name(opts.name, labels), _checked_port(opts.port, labels)
    check_api_key(opts.api_key)
    _stopped_container(client, name)
    if opts.publish:
        _check_port_free(client, opts.host, host_port)
    return StartCheck(name, host_port, device_requests_for(gpus, labels), gpus)


def start(client: Any, image: Any, options: StartOptions | None = None, *, on_event: Emit | None = None) -> Running:
    """Start the image (an image object, or its id or tag) as a container from its
    labels only: bind ``host:port`` (127.0.0.1 by default; the label's port when
    ``port`` is None) to the label's container port, GPUs through device requests,
    the API key in the env variable the label names, hardened (:func:`hardening`).
    The restart policy stays "no" until :func:`~ezrunner.core.run.ready.wait_ready`
    arms it. The image's CMD runs; no command is passed. Never pulls."""
    opts = options or StartOptions()
    emit = on_event or _noop
    image = _loaded_image(client, image)
    labels = BundleLabels.from_labels(image.labels, what=f"image {(image.tags or [image.id])[0]}")
    checked = check_start(client, labels, opts)
    emit(PhaseStarted("start", label=f"start {checked.name}"))
    _remove_stopped(client, checked.name, emit)
    if opts.publish and opts.host not in LOCAL_HOSTS and not opts.api_key:
        emit(Notice("start", level="warning",
                    message=f"listening on {opts.host}:{checked.host_port} without an API key: anyone who reaches "
                    "this address can use the model (add --api-key-file FILE)"))
    container = _create_and_start(client, _create_args(image, labels, opts, checked), host=opts.host,
                                  port=checked.host_port)
    running = Running.at(container, checked.name, labels, opts.host, checked.host_port if opts.publish else None)
    emit(Notice("start", message=f"started {checked.name} ({labels.engine}, {_gpu_note(checked)}) "
                f"from {(image.tags or [image.id[:19]])[0]}"))
    emit(PhaseFinished("start", ok=True, detail=checked.name, data={"container": container.id, "name": checked.name}))
    return running


def _gpu_note(checked: StartCheck) -> str:
    if not checked.device_requests:
        return "no GPU"
    return "all GPUs" if checked.gpus in (None, "all") else f"GPUs {','.join(checked.gpus or ())}"


def _loaded_image(client: Any, image: Any) -> Any:
    if not isinstance(image, str):
        return image
    found = docker_api.image_or_none(client, image)
    if found is None:
        raise EzError(f"image {image} is not loaded", hint="run the bundle file (BUNDLE.tar), which loads it")
    return found


def _stopped_container(client: Any, name: str) -> Any:
    """The stopped ezrunner container called ``name`` (None when there is none);
    a container of another owner, or a running one, is refused."""
    existing = docker_api.container_or_none(client, name)
    if existing is None:
        return None
    if not RunLabels.of(existing).managed:
        raise EzError(f"a container named {name!r} exists and was not started by ezrunner",
                      hint="choose another name with --name")
    if existing.status in RUNNING_STATES:
        raise EzError(f"{name} is already running ({existing.status}) at {where(existing)}",
                      hint=f"`ezrunner stop {name}` first, or start a second copy with --name and --port")
    return existing


def _remove_stopped(client: Any, name: str, emit: Emit) -> None:
    """Remove a stopped ezrunner container of that name; refuse anything else."""
    from docker.errors import DockerException

    existing = _stopped_container(client, name)
    if existing is None:
        return
    emit(Notice("start", message=f"replacing the stopped container {name} ({existing.status})"))
    try:
        existing.remove(force=True)
    except DockerException as exc:
        raise EzError(f"cannot remove the old container {name}: {docker_api.api_message(exc)}") from None


def hardening(labels: BundleLabels) -> dict[str, Any]:
    """The container's defaults beyond Docker's: no capabilities, no privilege
    gain through setuid files, and (for engines known to allow it) a read-only
    root filesystem with a private tmpfs for what the engine writes."""
    out: dict[str, Any] = {"cap_drop": ["ALL"], "security_opt": ["no-new-privileges"]}
    spec = find_spec(labels.engine, labels.device)
    if spec is not None and spec.writable_paths:
        out["read_only"] = True
        out["tmpfs"] = {path: TMPFS_OPTIONS for path in spec.writable_paths}
    return out


def _create_args(image: Any, labels: BundleLabels, opts: StartOptions, checked: StartCheck) -> dict[str, Any]:
    env = {"HF_HUB_OFFLINE": "1"}
    if opts.api_key:
        env[labels.api_key_env] = opts.api_key
    run_labels = RunLabels(host=opts.host, port=str(checked.host_port) if opts.publish else "",
                           bundle=opts.bundle_name, api_key_set=bool(opts.api_key))
    kwargs: dict[str, Any] = dict(
        image=image.id, name=checked.name, detach=True, labels=run_labels.to_labels(), environment=env,
        # No restart until the server has come up once: a model that crashes at
        # start must stay exited with its exit code, not loop. wait_ready() arms
        # unless-stopped when the server is ready (or keeps starting in the background).
        restart_policy={"Name": "no"},
        device_requests=checked.device_requests or None,
        **hardening(labels),
    )
    if opts.publish:
        kwargs["ports"] = {f"{labels.port}/tcp": (opts.host, checked.host_port)}
    if opts.network:
        kwargs["network"] = opts.network
    return kwargs


def _create_and_start(client: Any, create: dict[str, Any], *, host: str, port: int) -> Any:
    """Create and start; on a failure remove what was created and explain it."""
    from docker.errors import DockerException

    container = None
    try:
        container = client.containers.create(**create)
        container.start()
    except DockerException as exc:
        if container is not None:
            with contextlib.suppress(DockerException):
                container.remove(force=True)
        raise explain_start_error(exc, host=host, port=port) from None
    container.reload()
    return container
