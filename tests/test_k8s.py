"""``ezrunner k8s``: golden manifests for the three plans of issue 17, every base and
overlay rendered by ``kubectl kustomize`` and validated strictly (unknown fields
rejected) against a current Kubernetes schema, the CLI's errors, the load script."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml
from ezrunner.core.errors import UsageError
from ezrunner.core.k8s import K8sOptions, export_k8s, render_bundle
from ezrunner.core.k8s import manifests as m
from support_k8s import bundle_info, synthetic_bundle_for
from support_run import split_bundle

from ezrunner.cli import main

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CASES = ("transformers-cpu", "transformers-cuda", "vllm-tp2")
TREES = ("base", "overlays/hpa", "overlays/keda")


def _docs(case: str, **opts) -> dict[str, dict]:
    info, source = bundle_info(case)
    _w, files = render_bundle(info, source, K8sOptions(**opts))
    return {path: yaml.safe_load(text) for path, text in files.items() if path.endswith(".yaml")}


def _pod(docs: dict[str, dict]) -> dict:
    return docs["base/deployment.yaml"]["spec"]["template"]["spec"]


# ----------------------------------------------------------------------------- golden

GOLDEN = {
    # startup failures = ceil(ready_timeout / 10 s); memory in Mi (request, limit); cpu; GPUs; read-only root
    "transformers-cpu": {"ready": "/ready", "health": "/health", "startup": 16, "memory": ("4026Mi", "4026Mi"),
                         "cpu": "4", "gpus": None, "ro": True, "key_env": "EZRUNNER_API_KEY", "drain": True,
                         "shm": "1024Mi", "metric": "ezrunner_requests_waiting"},
    "transformers-cuda": {"ready": "/ready", "health": "/health", "startup": 76, "memory": ("7168Mi", "22427Mi"),
                          "cpu": "4", "gpus": 1, "ro": False, "key_env": "EZRUNNER_API_KEY", "drain": True,
                          "shm": "1024Mi", "metric": "ezrunner_requests_waiting"},
    "vllm-tp2": {"ready": "/health", "health": "/health", "startup": 286, "memory": ("12288Mi", "73324Mi"),
                 "cpu": "6", "gpus": 2, "ro": False, "key_env": "VLLM_API_KEY", "drain": False,
                 "shm": "4096Mi", "metric": "vllm:num_requests_waiting"},
}


@pytest.mark.parametrize("case", CASES)
def test_golden_probes(case):
    g, c = GOLDEN[case], _pod(_docs(case))["containers"][0]
    assert c["startupProbe"] == {"httpGet": {"path": g["ready"], "port": "http"}, "periodSeconds": 10,
                                 "timeoutSeconds": 5, "failureThreshold": g["startup"]}
    assert c["readinessProbe"]["httpGet"] == {"path": g["ready"], "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": g["health"], "port": "http"}
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]


@pytest.mark.parametrize("case", CASES)
def test_golden_resources_and_placement(case):
    g, pod = GOLDEN[case], _pod(_docs(case))
    res = pod["containers"][0]["resources"]
    requests = {"cpu": g["cpu"], "memory": g["memory"][0]}
    limits = {"memory": g["memory"][1]}
    if g["gpus"]:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = g["gpus"]
        assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    else:
        assert "tolerations" not in pod
    assert res == {"requests": requests, "limits": limits}
    assert pod["volumes"][0] == {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": g["shm"]}}
    assert "runtimeClassName" not in pod
    assert _pod(_docs(case, runtime_class="nvidia"))["runtimeClassName"] == "nvidia"


@pytest.mark.parametrize("case", CASES)
def test_golden_security(case):
    g, pod = GOLDEN[case], _pod(_docs(case))
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                      "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    sc = pod["containers"][0]["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is g["ro"] and sc["runAsNonRoot"] is True
    mounts = {v["mountPath"] for v in pod["containers"][0]["volumeMounts"]}
    assert mounts == ({"/dev/shm", "/tmp"} if g["ro"] else {"/dev/shm"})


@pytest.mark.parametrize("case", CASES)
def test_golden_api_key_is_a_secret_reference_only(case):
    g, docs = GOLDEN[case], _docs(case)
    env = _pod(docs)["containers"][0]["env"]
    key = [e for e in env if e["name"] == g["key_env"]]
    assert key == [{"name": g["key_env"], "valueFrom": {"secretKeyRef": {"name": "model-x-api-key", "key": "api-key"}}}]
    assert not any(d.get("kind") == "Secret" for d in docs.values())
    assert ("EZRUNNER_DRAIN_TIMEOUT" in {e["name"] for e in env}) is g["drain"]
    env = _pod(_docs(case, api_key=False))["containers"][0]["env"]
    assert g["key_env"] not in {e["name"] for e in env}


@pytest.mark.parametrize("case", CASES)
def test_golden_network_policy(case):
    np = _docs(case)["base/networkpolicy.yaml"]
    assert np["spec"] == {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "ezrunner",
                                                          "app.kubernetes.io/instance": "model-x"}},
                          "policyTypes": ["Ingress", "Egress"],
                          "ingress": [{"ports": [{"port": 8000, "protocol": "TCP"}]}], "egress": []}


@pytest.mark.parametrize("case", CASES)
def test_golden_rollout_and_scaling(case):
    g, docs = GOLDEN[case], _docs(case)
    dep = docs["base/deployment.yaml"]
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = dep["spec"]["template"]["spec"]
    assert pod["containers"][0]["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "15"]}}}
    assert pod["terminationGracePeriodSeconds"] == 15 + 45 + 5
    assert "base/pdb.yaml" not in docs
    keda = docs["overlays/keda/scaledobject.yaml"]["spec"]
    assert keda["triggers"][0]["metadata"]["query"] == f'sum({g["metric"]}{{pod=~"model-x-.*"}})'
    two = _docs(case, replicas=2, strategy="recreate", namespace="ai")
    assert two["base/pdb.yaml"]["spec"]["maxUnavailable"] == 1
    assert two["base/deployment.yaml"]["spec"]["strategy"] == {"type": "Recreate"}
    assert two["overlays/hpa/hpa.yaml"]["spec"]["minReplicas"] == 2
    assert two["base/kustomization.yaml"]["resources"][-1] == "pdb.yaml"
    query = two["overlays/keda/scaledobject.yaml"]["spec"]["triggers"][0]["metadata"]["query"]
    assert query == f'sum({g["metric"]}{{namespace="ai",pod=~"model-x-.*"}})'


def test_image_is_the_exact_tag_never_pulled():
    c = _pod(_docs("vllm-tp2"))["containers"][0]
    assert c["image"] == "ezrunner/model-x:vllm-cuda-0123456789ab" and c["imagePullPolicy"] == "IfNotPresent"
    assert c["args"][:2] == ["vllm", "serve"] or "serve" in c["args"]
    c = _pod(_docs("vllm-tp2", registry="registry.local:5000/ai"))["containers"][0]
    assert c["image"] == "registry.local:5000/ai/ezrunner/model-x:vllm-cuda-0123456789ab"


# ----------------------------------------------------------------------------- quoting


@pytest.mark.parametrize("served", ["yes", "1e3", "null", "a: b #c", "on"])
def test_every_string_value_is_quoted_and_reads_back_as_itself(served):
    info, source = bundle_info("transformers-cpu", served=served)
    _w, files = render_bundle(info, source, K8sOptions(name="x"))
    dep = yaml.safe_load(files["base/deployment.yaml"])
    assert dep["metadata"]["annotations"]["ezrunner.served-model-name"] == served
    assert f'"{served}"' in files["base/deployment.yaml"]


def test_default_name_is_a_dns_label():
    info, source = bundle_info("transformers-cpu", served="Qwen2.5_7B.Instruct")
    w, _ = render_bundle(info, source, K8sOptions())
    assert w.name == "qwen2-5-7b-instruct"


@pytest.mark.parametrize("opts", [{"namespace": "Bad_NS"}, {"name": "x" * 60}, {"replicas": 0},
                                  {"strategy": "blue-green"}, {"memory": "lots"}, {"cpu": "four"},
                                  {"registry": "reg istry"}, {"prometheus_url": "ftp://x"},
                                  {"replicas": 3, "max_replicas": 2}, {"hpa_cpu_percent": 0}])
def test_bad_options_are_usage_errors(opts):
    with pytest.raises(UsageError):
        K8sOptions(**opts).checked()


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    bundle = synthetic_bundle_for("transformers-cpu", tmp_path / "b.tar")
    assert main(["k8s", str(bundle), "-o", str(tmp_path / "out"), "--namespace", "Not OK"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("ezrunner: error: --namespace:") and len(err) <= 2
    assert main(["k8s", str(tmp_path / "missing.tar"), "-o", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_cli_writes_the_folder(tmp_path, capsys):
    bundle = synthetic_bundle_for("transformers-cpu", tmp_path / "b.tar")
    assert main(["k8s", str(bundle), "-o", str(tmp_path / "out"), "--replicas", "2"]) == 0
    names = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert names == ["LOAD.md", "base/deployment.yaml", "base/kustomization.yaml", "base/networkpolicy.yaml",
                     "base/pdb.yaml", "base/service.yaml", "load-image.sh", "overlays/hpa/hpa.yaml",
                     "overlays/hpa/kustomization.yaml", "overlays/keda/kustomization.yaml",
                     "overlays/keda/scaledobject.yaml"]
    assert os.access(tmp_path / "out" / "load-image.sh", os.X_OK)
    assert "kubectl apply -k" in capsys.readouterr().out


# ----------------------------------------------------------------------------- kubectl + strict schemas


def _kubectl() -> str:
    found = shutil.which("kubectl")
    if not found:
        if IN_CI:
            pytest.fail("CI=true and kubectl is missing (Debian: kubernetes-client; ./dev.sh test installs it)")
        pytest.skip("kubectl is not installed (Debian: kubernetes-client)")
    return found


def _validate(obj: dict) -> None:
    import kubernetes_validate as kv

    if obj["kind"] == "ScaledObject":  # a KEDA CRD: no schema ships with kubernetes-validate
        assert obj["apiVersion"] == "keda.sh/v1alpha1"
        assert set(obj["spec"]) == {"scaleTargetRef", "minReplicaCount", "maxReplicaCount", "cooldownPeriod",
                                    "triggers"}
        return
    kv.validate(obj, kv.latest_version(), strict=True)


@pytest.mark.parametrize("case", CASES)
def test_kubectl_renders_every_tree_and_it_validates_strictly(case, tmp_path):
    kubectl = _kubectl()
    bundle = synthetic_bundle_for(case, tmp_path / "b.tar")
    export_k8s(bundle, tmp_path / "out", K8sOptions(replicas=2, namespace="ai", runtime_class="nvidia"))
    for tree in TREES:
        out = subprocess.run([kubectl, "kustomize", str(tmp_path / "out" / tree)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        objs = list(yaml.safe_load_all(out.stdout))
        kinds = sorted(o["kind"] for o in objs)
        extra = {"base": [], "overlays/hpa": ["HorizontalPodAutoscaler"], "overlays/keda": ["ScaledObject"]}[tree]
        assert kinds == sorted(["Deployment", "Service", "NetworkPolicy", "PodDisruptionBudget", *extra])
        for obj in objs:
            assert obj["metadata"]["namespace"] == "ai"
            _validate(obj)


def test_strict_validation_rejects_an_unknown_field():
    import kubernetes_validate as kv

    info, source = bundle_info("transformers-cpu")
    w, _ = render_bundle(info, source, K8sOptions())
    dep = m.deployment(w)
    dep["spec"]["template"]["spec"]["containers"][0]["startupProbe"]["failureThresold"] = 3
    with pytest.raises(kv.ValidationError):
        kv.validate(dep, kv.latest_version(), strict=True)


# ----------------------------------------------------------------------------- load script


def test_load_script_joins_parts_checks_sha256_and_copies(tmp_path):
    bundle = synthetic_bundle_for("transformers-cpu", tmp_path / "b.tar")
    whole = bundle.read_bytes()
    export_k8s(bundle, tmp_path / "out")
    split_bundle(bundle, 100_000)
    agent = tmp_path / "agent-images"
    env = {**os.environ, "AGENT_IMAGES": str(agent)}
    out = subprocess.run([str(tmp_path / "out" / "load-image.sh"), "k3s", str(bundle)], capture_output=True,
                         text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "b.tar: OK" in out.stderr
    assert (agent / "b.tar").read_bytes() == whole
    bad = subprocess.run([str(tmp_path / "out" / "load-image.sh"), "nowhere"], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" not in bad.stdout


def test_load_doc_names_the_three_routes():
    info, source = bundle_info("vllm-tp2")
    _w, files = render_bundle(info, source, K8sOptions(namespace="ai"))
    doc = files["LOAD.md"]
    for route in ("agent/images/", "ctr -n k8s.io images import model-x.tar",
                  "skopeo copy docker-archive:model-x.tar docker://REGISTRY/ezrunner/model-x:vllm-cuda-0123456789ab",
                  "kubectl -n ai create secret generic model-x-api-key"):
        assert route in doc, route
