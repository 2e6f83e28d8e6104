"""The Kubernetes objects of a bundle, as plain dicts built from a :class:`Workload`.

Deployment (weights in the image: no volume per replica), ClusterIP Service,
NetworkPolicy (ingress on the service port only, no egress at all), a
PodDisruptionBudget from two replicas on, and the autoscaling overlays' objects
(an HPA on CPU, a KEDA ScaledObject on the engine's waiting-requests gauge).
The API key is only ever a ``secretKeyRef``.
"""

from __future__ import annotations

from typing import Any

from ezrunner.core.k8s.workload import STARTUP_PERIOD_S, Workload, mebibytes

Obj = dict[str, Any]

GPU_RESOURCE = "nvidia.com/gpu"
API_KEY_FIELD = "api-key"


def metadata(w: Workload, name: str | None = None) -> Obj:
    meta: Obj = {"name": name or w.name, "labels": {**w.selector, "app.kubernetes.io/component": "inference",
                                                    "app.kubernetes.io/managed-by": "ezrunner"}}
    if w.options.namespace:
        meta["namespace"] = w.options.namespace
    return meta


def probes(w: Workload) -> Obj:
    """startup and readiness on the ready path, liveness on the health path (the engine's own)."""
    def get(path: str) -> Obj:
        return {"path": path, "port": "http"}

    return {
        "startupProbe": {"httpGet": get(w.labels.ready_path), "periodSeconds": STARTUP_PERIOD_S,
                         "timeoutSeconds": 5, "failureThreshold": w.startup_failures},
        "readinessProbe": {"httpGet": get(w.labels.ready_path), "periodSeconds": 5, "timeoutSeconds": 4,
                           "failureThreshold": 2},
        "livenessProbe": {"httpGet": get(w.spec.health_path), "periodSeconds": 10, "timeoutSeconds": 5,
                          "failureThreshold": 3},
    }


def container_resources(w: Workload) -> Obj:
    r = w.resources
    requests: Obj = {"cpu": r.cpu, "memory": mebibytes(r.memory_request)}
    limits: Obj = {"memory": mebibytes(r.memory_limit)}
    if r.gpus:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = r.gpus
    return {"requests": requests, "limits": limits}


def env(w: Workload) -> list[Obj]:
    items: list[Obj] = [{"name": "HF_HUB_OFFLINE", "value": "1"}]
    if w.spec.drain_env:
        items.append({"name": w.spec.drain_env, "value": str(w.options.drain_s)})
    if w.secret:
        items.append({"name": w.labels.api_key_env,
                      "valueFrom": {"secretKeyRef": {"name": w.secret, "key": API_KEY_FIELD}}})
    return items


def volumes(w: Workload) -> tuple[list[Obj], list[Obj]]:
    """(pod volumes, container mounts): a memory-backed /dev/shm, /tmp when the root is read-only."""
    vols: list[Obj] = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": mebibytes(w.resources.shm)}}]
    mounts: list[Obj] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    if w.read_only_root:
        vols.append({"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}})
        mounts.append({"name": "tmp", "mountPath": "/tmp"})
    return vols, mounts


def container(w: Workload, mounts: list[Obj]) -> Obj:
    return {
        "name": "server",
        "image": w.image,
        "imagePullPolicy": "IfNotPresent",
        "args": list(w.labels.serve_args),  # the image's own CMD, stated
        "ports": [{"name": "http", "containerPort": w.port, "protocol": "TCP"}],
        "env": env(w),
        "resources": container_resources(w),
        **probes(w),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(w.options.pre_stop_s)]}}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": w.read_only_root,
                            "runAsNonRoot": True, "runAsUser": w.uid, "runAsGroup": w.uid,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": mounts,
    }


def pod_spec(w: Workload) -> Obj:
    vols, mounts = volumes(w)
    spec: Obj = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,  # no <SERVICE>_PORT variables (a Service named vllm breaks vLLM)
        "terminationGracePeriodSeconds": w.grace_s,
        "securityContext": {"runAsNonRoot": True, "runAsUser": w.uid, "runAsGroup": w.uid, "fsGroup": w.uid,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container(w, mounts)],
        "volumes": vols,
    }
    if w.resources.gpus:
        spec["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    if w.options.runtime_class:
        spec["runtimeClassName"] = w.options.runtime_class
    return spec


def strategy(w: Workload) -> Obj:
    if w.options.strategy == "recreate":
        return {"type": "Recreate"}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def deployment(w: Workload) -> Obj:
    labels = w.labels
    annotations = {"ezrunner.model": labels.model, "ezrunner.served-model-name": labels.served_model_name,
                   "ezrunner.engine": f"{labels.engine}-{labels.device}", "ezrunner.version": labels.version}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {**metadata(w), "annotations": annotations},
        "spec": {
            "replicas": w.options.replicas,
            "selector": {"matchLabels": w.selector},
            "strategy": strategy(w),
            "template": {
                "metadata": {"labels": metadata(w)["labels"],
                             "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(w.port),
                                             "prometheus.io/path": "/metrics"}},
                "spec": pod_spec(w),
            },
        },
    }


def service(w: Workload) -> Obj:
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata(w),
            "spec": {"type": "ClusterIP", "selector": w.selector,
                     "ports": [{"name": "http", "port": w.port, "targetPort": "http", "protocol": "TCP"}]}}


def network_policy(w: Workload) -> Obj:
    """Ingress only on the service port; egress denied (the weights are in the image)."""
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": metadata(w),
            "spec": {"podSelector": {"matchLabels": w.selector}, "policyTypes": ["Ingress", "Egress"],
                     "ingress": [{"ports": [{"port": w.port, "protocol": "TCP"}]}], "egress": []}}


def disruption_budget(w: Workload) -> Obj:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": metadata(w),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": w.selector}}}


def hpa(w: Workload) -> Obj:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": metadata(w),
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": w.name},
                     "minReplicas": w.options.replicas, "maxReplicas": w.options.max_replicas,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                         "type": "Utilization", "averageUtilization": w.options.hpa_cpu_percent}}}]}}


def waiting_query(w: Workload) -> str:
    """The PromQL sum of the engine's waiting gauge over this app's pods (names are DNS-1123)."""
    where = f'pod=~"{w.name}-.*"'
    if w.options.namespace:
        where = f'namespace="{w.options.namespace}",{where}'
    return f"sum({w.spec.waiting_metric}{{{where}}})"


def scaled_object(w: Workload) -> Obj:
    """KEDA on the waiting requests: ``vllm:num_requests_waiting`` or ``ezrunner_requests_waiting``."""
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": metadata(w),
            "spec": {"scaleTargetRef": {"name": w.name}, "minReplicaCount": w.options.replicas,
                     "maxReplicaCount": w.options.max_replicas, "cooldownPeriod": 360,
                     "triggers": [{"type": "prometheus", "metadata": {
                         "serverAddress": w.options.prometheus_url, "query": waiting_query(w),
                         "threshold": str(w.options.keda_threshold)}}]}}
