"""What the operator chooses for ``ezrunner k8s`` (:class:`K8sOptions`), checked once.

Every value that reaches a manifest is checked here against Kubernetes' own rules
(DNS-1123 names, quantities), so a bad flag is a one-line :class:`UsageError`
before anything is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ezrunner.core.errors import UsageError

STRATEGIES = ("rolling", "recreate")
DEFAULT_PROMETHEUS = "http://prometheus-server.monitoring.svc:80"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_CPU = re.compile(r"^(\d+(\.\d{1,3})?|\d+m)$")
_MEMORY = re.compile(r"^\d+(Ki|Mi|Gi|Ti)?$")
_REGISTRY = re.compile(r"^[A-Za-z0-9.-]+(:\d+)?(/[a-z0-9._-]+)*$")
_URL = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d+)?(/[A-Za-z0-9._~/-]*)?$")
NAME_MAX = 52  # a Deployment's pods add "-<hash>-<5>" to it and stay within 63


@dataclass(frozen=True)
class K8sOptions:
    """The choices behind one ``ezrunner k8s`` output (defaults: one replica, rolling update)."""

    name: str | None = None  # the app's name (default: from the served model name)
    namespace: str | None = None  # None: the namespace kubectl uses
    replicas: int = 1
    strategy: str = "rolling"  # rolling (maxUnavailable 0: needs a spare GPU set) | recreate
    runtime_class: str | None = None  # e.g. "nvidia"
    api_key_secret: str | None = None  # default "<name>-api-key"
    api_key: bool = True  # False: no key at all (anyone who reaches the Service may use it)
    registry: str | None = None  # image prefix after `skopeo copy` into a site registry
    cpu: str | None = None  # CPU request (default from the engine and the tensor-parallel size)
    memory: str | None = None  # memory request and limit (default from the plan)
    max_replicas: int = 4  # the autoscaling overlays' ceiling
    hpa_cpu_percent: int = 80
    keda_threshold: int = 5  # waiting requests per replica
    prometheus_url: str = DEFAULT_PROMETHEUS
    pre_stop_s: int = 15  # the pod leaves the endpoints before SIGTERM
    drain_s: int = 45  # the server's own drain after SIGTERM

    def checked(self) -> K8sOptions:
        """Self, when every value is one Kubernetes accepts; else a :class:`UsageError`."""
        for flag, value in (("--name", self.name), ("--namespace", self.namespace)):
            if value is not None:
                _dns_label(flag, value, NAME_MAX if flag == "--name" else 63)
        for flag, value in (("--runtime-class", self.runtime_class), ("--api-key-secret", self.api_key_secret)):
            if value is not None:
                _dns_subdomain(flag, value)
        _choice("--strategy", self.strategy, STRATEGIES)
        _pattern("--cpu", self.cpu, _CPU, "write it like 4, 0.5 or 500m")
        _pattern("--memory", self.memory, _MEMORY, "write it like 16Gi or 512Mi")
        _pattern("--registry", self.registry, _REGISTRY, "write it like registry.local:5000/ai")
        _pattern("--prometheus-url", self.prometheus_url, _URL, "write it like http://prometheus.monitoring.svc:9090")
        self._check_numbers()
        return self

    def _check_numbers(self) -> None:
        _at_least("--replicas", self.replicas, 1)
        _at_least("--max-replicas", self.max_replicas, self.replicas)
        _at_least("--keda-threshold", self.keda_threshold, 1)
        _at_least("--pre-stop", self.pre_stop_s, 0)
        _at_least("--drain", self.drain_s, 0)
        if not 1 <= self.hpa_cpu_percent <= 100:
            raise UsageError(f"--hpa-cpu-percent: must be 1 to 100, got {self.hpa_cpu_percent}")


def dns_name(text: str) -> str:
    """``text`` as a DNS-1123 label (lower case, ``-`` for anything else), at most :data:`NAME_MAX`."""
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:NAME_MAX].rstrip("-")
    return name or "ezrunner"


def _dns_label(flag: str, value: str, limit: int) -> None:
    if len(value) > limit or not _DNS_LABEL.match(value):
        raise UsageError(f"{flag}: {value!r} is not a DNS-1123 label",
                         hint=f"lower-case letters, digits and '-', at most {limit} characters")


def _dns_subdomain(flag: str, value: str) -> None:
    if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        raise UsageError(f"{flag}: {value!r} is not a DNS-1123 name", hint="lower-case letters, digits, '-' and '.'")


def _choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"{flag}: {value!r} is not one of {', '.join(choices)}")


def _pattern(flag: str, value: str | None, pattern: re.Pattern[str], hint: str) -> None:
    if value is not None and not pattern.match(value):
        raise UsageError(f"{flag}: {value!r} is not valid", hint=hint)


def _at_least(flag: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{flag}: must be a whole number of at least {minimum}, got {value!r}")
