"""What the manifests say about the pod, derived ONLY from the bundle's labels and plan
(and the operator's :class:`~ezrunner.core.k8s.options.K8sOptions`): :class:`Workload`.

Figures:

- **startup probe**: every 10 s, as many failures as ``run``'s ready timeout allows
  (``core.run.ready.ready_timeout``: the engine's base plus the weights at 25 MB/s);
- **memory** (request = limit): on CPU the plan's weights, its reserve and the KV cache
  of ``max_concurrent_sequences`` full-length sequences (at most the plan's KV room);
  on a GPU the host side only: 4 GiB plus 2 GiB per GPU, and the weights once more in
  the limit (the loader stages them through host memory, which the cgroup counts);
  the memory-backed ``/dev/shm`` is added to both, as the kubelet counts it too;
- **CPU** request: 4 on CPU, 2 + 2 per GPU on a GPU; no CPU limit (CFS throttling slows
  token generation; ``--cpu`` sets the request);
- **read-only root filesystem** everywhere except on GPU engines: the NVIDIA container
  toolkit's CDI hook writes into the container's root (KServe's LLM template keeps it
  writable for the same reason), and vLLM JIT-compiles kernels (torch.compile, Triton,
  FlashInfer) into ``~/.cache``. Read-only pods get an emptyDir at ``/tmp``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ezrunner.core.bundle.format import BundleLabels, BundleManifest
from ezrunner.core.engines import CONTAINER_UID, EngineSpec, find_spec
from ezrunner.core.errors import UsageError
from ezrunner.core.k8s.options import K8sOptions, dns_name
from ezrunner.core.run.ready import ready_timeout

GIB = 1024**3
MIB = 1024**2
STARTUP_PERIOD_S = 10
GRACE_MARGIN_S = 5


@dataclass(frozen=True)
class Resources:
    cpu: str
    memory_request: int  # bytes
    memory_limit: int  # bytes
    gpus: int
    shm: int  # bytes of the memory-backed /dev/shm


@dataclass(frozen=True)
class Workload:
    """Everything the manifests state about the serving pod."""

    name: str
    image: str
    labels: BundleLabels
    spec: EngineSpec
    resources: Resources
    startup_failures: int
    read_only_root: bool
    uid: int
    options: K8sOptions

    @property
    def port(self) -> int:
        return self.labels.port

    @property
    def grace_s(self) -> int:
        """``terminationGracePeriodSeconds``: the preStop delay, the drain, a margin."""
        return self.options.pre_stop_s + self.options.drain_s + GRACE_MARGIN_S

    @property
    def secret(self) -> str | None:
        if not self.options.api_key:
            return None
        return self.options.api_key_secret or f"{self.name}-api-key"

    @property
    def selector(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": "ezrunner", "app.kubernetes.io/instance": self.name}


def workload(manifest: BundleManifest, labels: BundleLabels, options: K8sOptions) -> Workload:
    """The :class:`Workload` of a bundle (``manifest`` gives the image tag)."""
    spec = find_spec(labels.engine, labels.device)
    if spec is None:
        raise UsageError(f"the bundle's engine {labels.engine} on {labels.device or '?'} has no row in this "
                         "ezrunner's engine table", hint="use the ezrunner version that packed it")
    name = options.name or dns_name(labels.served_model_name)
    image = f"{options.registry.rstrip('/')}/{manifest.image_tag}" if options.registry else manifest.image_tag
    return Workload(
        name=name, image=image, labels=labels, spec=spec, resources=resources(labels, spec, options),
        startup_failures=startup_failures(labels), read_only_root=not spec.needs_gpu, uid=CONTAINER_UID,
        options=options,
    )


def startup_failures(labels: BundleLabels) -> int:
    """The startup probe's failure threshold: ``run``'s ready timeout in probe periods."""
    return math.ceil(ready_timeout(labels.model_bytes, labels.engine) / STARTUP_PERIOD_S)


def tensor_parallel(labels: BundleLabels) -> int:
    tp = labels.plan.get("tensor_parallel_size")
    return tp if isinstance(tp, int) and not isinstance(tp, bool) and tp > 0 else 1


def resources(labels: BundleLabels, spec: EngineSpec, options: K8sOptions) -> Resources:
    gpus = tensor_parallel(labels) if spec.needs_gpu else 0
    shm = GIB if gpus <= 1 else 2 * GIB * gpus
    if spec.needs_gpu:
        request = 4 * GIB + 2 * GIB * gpus + shm
        limit = request + labels.model_bytes
    else:
        request = limit = cpu_memory(labels) + shm
    if options.memory:
        request = limit = quantity_bytes(options.memory)
    cpu = options.cpu or (str(2 + 2 * gpus) if gpus else "4")
    return Resources(cpu=cpu, memory_request=request, memory_limit=max(limit, request), gpus=gpus, shm=shm)


def cpu_memory(labels: BundleLabels) -> int:
    """RAM of a CPU engine: weights, reserve and the KV cache the plan's concurrency needs."""
    plan = labels.plan
    weights = _int(plan.get("weights_bytes")) or labels.model_bytes
    reserve = _int(plan.get("reserve_bytes")) or GIB
    kv = _int(plan.get("kv_bytes_per_token")) * _int(plan.get("max_model_len")) * max(
        1, _int(plan.get("max_concurrent_sequences")))
    room = _int(plan.get("kv_cache_bytes"))
    return weights + reserve + (min(kv, room) if room else kv)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def quantity_bytes(text: str) -> int:
    """``16Gi`` -> bytes (the binary suffixes :class:`K8sOptions` accepts)."""
    for suffix, mult in (("Ki", 1024), ("Mi", MIB), ("Gi", GIB), ("Ti", 1024 * GIB)):
        if text.endswith(suffix):
            return int(text[: -len(suffix)]) * mult
    return int(text)


def mebibytes(n: int) -> str:
    """Bytes as a Kubernetes quantity in Mi, rounded up."""
    return f"{math.ceil(n / MIB)}Mi"
