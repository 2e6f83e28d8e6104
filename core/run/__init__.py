"""The run side: verify and load a bundle, start it, wait for ready, follow its
logs, list and stop what runs. Fully offline: nothing here talks to a hub or a
registry (``containers.create`` never pulls), and nothing imports a hub client.

Every long step reports :mod:`ezrunner.core.events` objects through ``on_event``
(phases "verify", "load", "start", "ready"); the CLI renders them with rich and
the TUI renders the same objects. docker is imported inside functions.

Modules: ``container`` (StartOptions, start, Running, the checks), ``load``
(docker load), ``ready`` (wait_ready, ReadyError), ``logs`` (follow_logs),
``ps`` (ps, stop), ``prune`` (prune), ``pipeline`` (run_bundle). Public API (docs/commands/run.md)::

    verify_bundle(path, on_event=None, *, check_hash=True, before_hash=None) -> (BundleSource, BundleInfo)
    connect(timeout=3600) -> docker.DockerClient
    load_bundle(client, source, info, on_event=None) -> docker Image
    check_start(client, labels, StartOptions(...)) -> StartCheck   (changes nothing)
    start(client, image, StartOptions(name=..., port=...), on_event=None) -> Running
    wait_ready(client, running, *, timeout=None, on_event=None, poll=1.0) -> Ready
    run_bundle(path, StartOptions(...), RunOptions(verify=True), on_event=None) -> Ready
    follow_logs(container, *, follow=True, tail="all") -> Iterator[tuple[str, ...]]
    ps(client, *, all=True) -> list[PsRow]
    stop(client, name, *, remove=False) -> str
"""

from __future__ import annotations

from ezrunner.core.bundle.format import BundleError, BundleLabels
from ezrunner.core.bundle.reader import (
    BundleInfo,
    BundleSource,
    RunCancelled,
    find_bundle,
    inspect_bundle,
    verify_bundle,
)
from ezrunner.core.docker_api import connect
from ezrunner.core.run.container import (
    RunLabels,
    Running,
    StartCheck,
    StartOptions,
    check_api_key,
    check_start,
    default_name,
    device_requests_for,
    explain_start_error,
    parse_gpus,
    port_in_use,
    running_from_container,
    start,
)
from ezrunner.core.run.load import load_bundle
from ezrunner.core.run.logs import LineAssembler, follow_logs
from ezrunner.core.run.pipeline import RunOptions, run_bundle
from ezrunner.core.run.ps import PsRow, format_duration, get_managed, ps, stop
from ezrunner.core.run.ready import Ready, ReadyError, likely_cause, ready_timeout, wait_ready

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
    "RunLabels",
    "RunOptions",
    "Running",
    "StartCheck",
    "StartOptions",
    "check_api_key",
    "check_start",
    "connect",
    "default_name",
    "device_requests_for",
    "explain_start_error",
    "find_bundle",
    "follow_logs",
    "format_duration",
    "get_managed",
    "inspect_bundle",
    "likely_cause",
    "load_bundle",
    "parse_gpus",
    "port_in_use",
    "ps",
    "ready_timeout",
    "run_bundle",
    "running_from_container",
    "start",
    "stop",
    "verify_bundle",
    "wait_ready",
]
