"""The packed demo bundle on containerd, as a Kubernetes node would run it (issue 17):
``load-image.sh ctr`` imports the bundle as it is into a private namespace of dockerd's
containerd, ``ctr run --net-host`` starts it with the args, env, uid/gid and read-only
root the rendered Deployment states, and the probes' paths answer on its port.
SIGTERM then drains and the task ends within the grace period."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from ezrunner.core.k8s import K8sOptions, export_k8s

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SOCKET = Path("/var/run/docker/containerd/containerd.sock")
API_KEY = "k8s-test-key"

pytestmark = pytest.mark.docker


def _missing(why: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true and {why}")
    pytest.skip(why)


@pytest.fixture
def ctr(tmp_path):
    """``ctr`` on dockerd's containerd, in a namespace of our own (removed afterwards)."""
    exe = shutil.which("ctr")
    if exe is None:
        _missing("ctr is not installed (Debian: containerd)")
    if not SOCKET.exists() or os.geteuid() != 0:
        _missing(f"no containerd socket at {SOCKET} that we may use (root and dockerd needed)")
    ns = f"ezrunner-k8s-test-{os.getpid()}"
    base = [exe, "-a", str(SOCKET), "-n", ns]
    yield base
    for args in (["tasks", "kill", "-s", "SIGKILL", "srv"], ["tasks", "rm", "-f", "srv"], ["containers", "rm", "srv"]):
        subprocess.run(base + args, capture_output=True)
    images = subprocess.run(base + ["images", "ls", "-q"], capture_output=True, text=True).stdout.split()
    if images:
        subprocess.run(base + ["images", "rm", *images], capture_output=True)
    subprocess.run([exe, "-a", str(SOCKET), "namespaces", "rm", ns], capture_output=True)


def _get(url: str, key: str | None = None) -> int | None:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=4) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def _run_args(container: dict, pod: dict) -> list[str]:
    """``ctr run`` flags for what the Deployment states: env, read-only root, /tmp. (ctr 1.6 has
    no --user: the image's own User runs, and the test checks the task's uid/gid against the pod's.)"""
    sc = {**pod["securityContext"], **container["securityContext"]}
    flags = ["--net-host"]
    for e in container["env"]:
        value = e.get("value", API_KEY if "secretKeyRef" in e.get("valueFrom", {}) else None)
        flags += ["--env", f"{e['name']}={value}"]
    if sc["readOnlyRootFilesystem"]:
        flags.append("--read-only")
    if any(m["mountPath"] == "/tmp" for m in container["volumeMounts"]):
        flags += ["--mount", "type=tmpfs,src=tmpfs,dst=/tmp,options=rw:nosuid:nodev:mode=1777"]
    return flags


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_bundle_imports_into_containerd_and_runs_as_the_deployment_says(packed_bundle, ctr, tmp_path):
    export_k8s(packed_bundle.path, tmp_path / "k8s", K8sOptions(drain_s=20))
    dep = yaml.safe_load((tmp_path / "k8s" / "base" / "deployment.yaml").read_text())
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    port = c["ports"][0]["containerPort"]
    if not _port_free(port):
        _missing(f"127.0.0.1:{port} is taken on this host (ctr run --net-host needs it)")
    env = {**os.environ, "CTR": " ".join(ctr[:3]), "CTR_NAMESPACE": ctr[4]}
    t0 = time.monotonic()
    load = subprocess.run([str(tmp_path / "k8s" / "load-image.sh"), "ctr", str(packed_bundle.path)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert load.returncode == 0, load.stderr[-3000:]
    print(f"ctr import: {time.monotonic() - t0:.1f} s")
    image = f"docker.io/{c['image']}"
    assert image in load.stderr
    run = subprocess.run(ctr + ["run", "-d", *_run_args(c, pod), image, "srv", *c["args"]],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    base = f"http://127.0.0.1:{port}"
    startup = c["startupProbe"]
    deadline = time.monotonic() + startup["periodSeconds"] * startup["failureThreshold"]
    while _get(base + startup["httpGet"]["path"]) != 200:
        assert time.monotonic() < deadline, "the startup probe never passed"
        time.sleep(1)
    assert _get(base + c["readinessProbe"]["httpGet"]["path"]) == 200
    assert _task_ids(ctr) == (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"])
    assert _get(base + c["livenessProbe"]["httpGet"]["path"]) == 200
    assert _get(base + "/v1/models") == 401  # the key from the Secret's variable is in force
    assert _get(base + "/v1/models", API_KEY) == 200
    _drains_on_sigterm(ctr, base, c, pod)


def _task_ids(ctr: list[str]) -> tuple[int, int]:
    """(uid, gid) of the task's process, from /proc."""
    pid = next(line.split()[1] for line in subprocess.run(ctr + ["tasks", "ls"], capture_output=True,
                                                          text=True).stdout.splitlines() if line.startswith("srv"))
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(status["Uid"].split()[0]), int(status["Gid"].split()[0])


def _drains_on_sigterm(ctr: list[str], base: str, c: dict, pod: dict) -> None:
    subprocess.run(ctr + ["tasks", "kill", "-s", "SIGTERM", "srv"], check=True, capture_output=True)
    deadline = time.monotonic() + pod["terminationGracePeriodSeconds"]
    while time.monotonic() < deadline:
        state = subprocess.run(ctr + ["tasks", "ls"], capture_output=True, text=True).stdout
        if "srv" not in state or "STOPPED" in state:
            break
        assert _get(base + c["readinessProbe"]["httpGet"]["path"]) in (503, None)
        time.sleep(0.5)
    else:
        pytest.fail("the task did not end within terminationGracePeriodSeconds")
