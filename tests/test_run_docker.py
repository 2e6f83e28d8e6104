"""The run side against the real Docker engine, with a small labelled image
bundled like `ezrunner pack` does (docker save + ezrunner-bundle.json first)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest
from conftest import EZRUNNER
from ezrunner.core import docker_api, run
from ezrunner.core.bundle.format import BundleError
from ezrunner.core.errors import EzError
from ezrunner.core.events import BytesProgress, LogLines, Notice, PhaseFinished, StepProgress
from ezrunner.core.run import RunLabels, RunOptions, StartOptions
from support_run import (
    MINI_CRASH_TAG,
    MINI_TAG,
    build_mini_image,
    make_synthetic_bundle,
    remove_containers,
    remove_image,
    uniq,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def names(docker_engine):
    created: list[str] = []
    yield created
    remove_containers(docker_engine, *created)


def _ezrunner(*args, timeout=300):
    return subprocess.run([EZRUNNER, *args], capture_output=True, text=True, timeout=timeout)


def test_verify_load_skip_start_ready_ps_logs_stop(docker_engine, mini_bundle, names):
    remove_image(docker_engine, MINI_TAG)
    events = []
    source, info = run.verify_bundle(mini_bundle, events.append)
    image = run.load_bundle(docker_engine, source, info, events.append)
    assert image.id == info.image_id and MINI_TAG in image.tags
    fed = [e for e in events if isinstance(e, BytesProgress) and e.phase == "load" and e.item == "mini.tar"]
    assert fed and fed[-1].done == source.size
    # A second load of the same bundle is skipped (no second copy on disk).
    events.clear()
    again = run.load_bundle(docker_engine, source, info, events.append)
    assert again.id == image.id
    assert any(isinstance(e, Notice) and "already loaded" in e.message for e in events)
    assert not [e for e in events if isinstance(e, BytesProgress)]

    port = _free_port()
    name = uniq("ez-test-run-mini")
    names.append(name)
    events.clear()
    running = run.start(docker_engine, image, StartOptions(name=name, port=port, api_key="s3cret"), on_event=events.append)
    attrs = running.container.attrs
    assert attrs["HostConfig"]["RestartPolicy"]["Name"] == "no"  # until it has come up once
    assert attrs["HostConfig"]["PortBindings"] == {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    assert "EZRUNNER_API_KEY=s3cret" in attrs["Config"]["Env"]
    assert attrs["Config"]["Cmd"] == ["python3", "/opt/mini/server.py"]  # the image's CMD, nothing passed
    assert not attrs["HostConfig"].get("DeviceRequests")
    assert attrs["HostConfig"]["CapDrop"] == ["ALL"] and attrs["HostConfig"]["ReadonlyRootfs"] is True
    ready = run.wait_ready(docker_engine, running, timeout=60, on_event=events.append, poll=0.3)
    assert ready.base_url == f"http://127.0.0.1:{port}/v1" and ready.model == "mini"
    running.container.reload()
    assert running.container.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    waits = [e for e in events if isinstance(e, StepProgress) and e.phase == "ready"]
    assert waits and any(e.name.startswith(("mini server", "listening", "request")) for e in waits)  # latest log line
    assert isinstance(events[-1], PhaseFinished) and events[-1].ok
    assert "Authorization: Bearer $API_KEY" in ready.curl() and f"127.0.0.1:{port}/v1/chat/completions" in ready.curl()

    # A second run of the same name says where it runs.
    with pytest.raises(EzError, match=rf"{name} is already running \(running\) at http://127.0.0.1:{port}/v1"):
        run.start(docker_engine, image, StartOptions(name=name, port=_free_port()))
    # The same port for another name: said before starting anything.
    with pytest.raises(EzError, match=rf"port {port} on 127.0.0.1 is already in use"):
        run.start(docker_engine, image, StartOptions(name=uniq("ez-test-run-other"), port=port))
    assert docker_api.container_or_none(docker_engine, uniq("ez-test-run-other")) is None

    rows = [r for r in run.ps(docker_engine) if r.name == name]
    assert len(rows) == 1 and rows[0].served_model_name == "mini" and rows[0].engine == "transformers"
    assert rows[0].port == str(port) and rows[0].state.startswith("running") and rows[0].uptime_s is not None

    proc = _ezrunner("ps")
    assert proc.returncode == 0 and name in proc.stdout and str(port) in proc.stdout and "transformers" in proc.stdout

    batches = list(run.follow_logs(running.container, follow=False))
    lines = [ln for b in batches for ln in b]
    assert "mini server starting" in lines and "listening on 0.0.0.0:8000" in lines
    proc = _ezrunner("logs", name, "--tail", "2")
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 2

    proc = _ezrunner("stop", name)
    assert proc.returncode == 0 and f"stopped {name}" in proc.stdout
    assert [r.state for r in run.ps(docker_engine) if r.name == name][0].startswith("exited")
    proc = _ezrunner("stop", name, "--remove")
    assert proc.returncode == 0 and "removed" in proc.stdout
    assert docker_api.container_or_none(docker_engine, name) is None
    assert name not in _ezrunner("ps").stdout


def test_follow_logs_yields_batches_while_the_container_writes(docker_engine, base_image, names):
    name = uniq("ez-test-run-logs")
    names.append(name)
    script = "import time,sys\nfor i in range(40):\n    sys.stdout.write(f'line {i} ' + 'x'*3000 + '\\n'); sys.stdout.flush(); time.sleep(0.02)\n"
    c = docker_engine.containers.run(base_image, ["python3", "-c", script], name=name, detach=True,
                                     labels=RunLabels().to_labels())
    batches = []
    t0 = time.monotonic()
    for batch in run.follow_logs(c, follow=True, interval=0.05):
        batches.append(batch)
    assert time.monotonic() - t0 < 60
    lines = [ln for b in batches for ln in b]
    assert [ln.split()[1] for ln in lines] == [str(i) for i in range(40)]
    assert all(len(ln) == len(f"line {i} ") + 3000 for i, ln in enumerate(lines))
    assert len(batches) > 1  # delivered as it came, not at the end


def test_cli_run_detach_prints_url_model_and_curl(docker_engine, mini_bundle, names):
    name = uniq("ez-test-run-cli")
    names.append(name)
    port = _free_port()
    proc = _ezrunner("run", str(mini_bundle), "--name", name, "--port", str(port), "--detach", "--ready-timeout", "60")
    assert proc.returncode == 0, proc.stderr
    assert f"OpenAI base URL: http://127.0.0.1:{port}/v1" in proc.stdout
    assert "model:           mini" in proc.stdout
    assert f"curl -s http://127.0.0.1:{port}/v1/chat/completions" in proc.stdout
    # A second run of the same bundle name says it already runs, and where, before it loads anything.
    proc = _ezrunner("run", str(mini_bundle), "--name", name, "--port", str(_free_port()), "--detach", "--no-verify")
    assert proc.returncode == 1
    assert f"ezrunner: error: {name} is already running (running) at http://127.0.0.1:{port}/v1" in proc.stderr
    assert "load" not in proc.stderr


def test_port_in_use_is_said_before_starting(docker_engine, mini_bundle, names):
    name = uniq("ez-test-run-port")
    names.append(name)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = _ezrunner("run", str(mini_bundle), "--name", name, "--port", str(port), "--detach", "--no-verify")
    assert proc.returncode == 1
    assert f"ezrunner: error: port {port} on 127.0.0.1 is already in use" in proc.stderr
    assert "--port" in proc.stderr  # the hint
    assert docker_api.container_or_none(docker_engine, name) is None


def test_a_bundle_swapped_after_verify_is_never_loaded(docker_engine, mini_bundle, mini_crash_bundle, tmp_path):
    """Time of check to time of use: the verified file is replaced before `docker
    load` reads it; the other bundle's image must not appear in the engine."""
    bundle = shutil.copy(mini_bundle, tmp_path / "swap.tar")
    shutil.copy(str(mini_bundle) + ".sha256", tmp_path / "swap.tar.sha256")
    _, other = run.verify_bundle(mini_crash_bundle, check_hash=False)
    remove_image(docker_engine, MINI_TAG)
    remove_image(docker_engine, MINI_CRASH_TAG)
    source, info = run.verify_bundle(bundle)
    os.replace(shutil.copy(mini_crash_bundle, tmp_path / "other.tar"), bundle)
    with pytest.raises(BundleError, match="changed after it was verified"):
        run.load_bundle(docker_engine, source, info)
    assert docker_api.image_or_none(docker_engine, other.image_id) is None
    assert docker_api.image_or_none(docker_engine, info.image_id) is None


def test_a_replaced_tag_is_said_and_prune_finds_the_old_image(docker_engine, base_image, mini_bundle):
    from ezrunner.core.run.prune import prune

    remove_image(docker_engine, MINI_TAG)
    old_id = build_mini_image(docker_engine, base_image, MINI_TAG, mode="crash")  # another image under the tag
    try:
        events = []
        source, info = run.verify_bundle(mini_bundle, check_hash=False)
        run.load_bundle(docker_engine, source, info, events.append)
        assert any(isinstance(e, Notice) and "`ezrunner prune` removes it" in e.message for e in events)
        listed = prune(docker_engine, dry_run=True)  # a dry run: the engine is shared with other tests
        assert any(r.image_id == old_id and not r.tags and not r.removed for r in listed)
        proc = _ezrunner("prune", "--dry-run")
        assert proc.returncode == 0 and f"would remove {old_id[7:19]} untagged" in proc.stdout
    finally:
        remove_image(docker_engine, old_id)


def test_cli_checksum_mismatch_is_one_line_with_exit_code_2(docker_engine, tmp_path):
    bundle = make_synthetic_bundle(tmp_path / "c.tar")
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0x80
    bundle.write_bytes(bytes(data))
    proc = _ezrunner("run", str(bundle), "--port", str(_free_port()), "--name", uniq("ez-test-sum"))
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("ezrunner: error:")]
    assert errors == [errors[0]] and "checksum mismatch" in errors[0]
    assert "Traceback" not in proc.stderr


def test_crash_at_start_shows_exit_code_last_lines_and_cause(docker_engine, mini_crash_bundle, names):
    name = uniq("ez-test-run-crash")
    names.append(name)
    proc = _ezrunner("run", str(mini_crash_bundle), "--name", name, "--port", str(_free_port()), "--detach",
                     "--ready-timeout", "60")
    assert proc.returncode == 1, proc.stderr
    assert f"ezrunner: error: {name} exited with code 3 before it was ready; likely cause: a file of the model is missing" in proc.stderr, proc.stderr
    assert "FileNotFoundError: [Errno 2] No such file or directory: '/models/mini/model.safetensors'" in proc.stderr
    assert "--- last" in proc.stderr
    c = docker_engine.containers.get(name)
    assert c.status == "exited"  # stopped, not looping on its restart policy
    remove_image(docker_engine, MINI_CRASH_TAG)


def test_gpu_without_nvidia_runtime_is_one_line_with_the_fix(docker_engine, mini_bundle, names):
    if "nvidia" in (docker_engine.info().get("Runtimes") or {}):
        pytest.skip("this engine has the NVIDIA runtime")
    name = uniq("ez-test-run-gpu")
    names.append(name)
    source, info = run.verify_bundle(mini_bundle, check_hash=False)
    image = run.load_bundle(docker_engine, source, info)
    with pytest.raises(EzError) as exc:
        run.start(docker_engine, image, StartOptions(name=name, port=_free_port(), gpus="all"))
    assert exc.value.message == "the NVIDIA container runtime is missing: Docker cannot give this container a GPU"
    assert "nvidia-container-toolkit" in exc.value.hint
    assert docker_api.container_or_none(docker_engine, name) is None  # nothing left behind
    proc = _ezrunner("run", str(mini_bundle), "--name", name, "--gpus", "0", "--port", str(_free_port()), "--no-verify", "-d")
    assert proc.returncode == 1
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("ezrunner: error:")] == [
        "ezrunner: error: the NVIDIA container runtime is missing: Docker cannot give this container a GPU"]


def test_internal_network_only(docker_engine, mini_bundle, names):
    """Attached only to a network with no route out; reached by its address."""
    net = docker_engine.networks.create(uniq("ez-test-run-internal"), driver="bridge", internal=True)
    name = uniq("ez-test-run-internal")
    names.append(name)
    try:
        ready = run.run_bundle(str(mini_bundle), StartOptions(name=name, network=net.name, publish=False),
                               RunOptions(verify=False, ready_timeout_s=60), client=docker_engine)
        nets = ready.running.container.attrs["NetworkSettings"]["Networks"]
        assert list(nets) == [net.name]
        assert ready.base_url.startswith("http://" + nets[net.name]["IPAddress"])
        import urllib.request

        with urllib.request.urlopen(ready.running.ready_url, timeout=5) as r:
            assert r.status == 200
    finally:
        remove_containers(docker_engine, name)
        net.remove()


def test_stop_of_unknown_name(docker_engine):
    proc = _ezrunner("stop", "ez-test-no-such")
    assert proc.returncode == 1 and "ezrunner: error: no ezrunner container named 'ez-test-no-such'" in proc.stderr


def test_no_hub_or_registry_is_touched(docker_engine, mini_bundle, names, tmp_path):
    """run/ps/logs/stop with every hub endpoint and proxy pointed at a dead address,
    in one process that then proves no hub client was even imported."""
    name = uniq("ez-test-run-offline")
    names.append(name)
    port = _free_port()
    code = (
        "import sys\n"
        "from ezrunner.cli import main\n"
        f"rcs = [main(['run', {str(mini_bundle)!r}, '--name', {name!r}, '--port', '{port}', '-d', '--ready-timeout', '60']),\n"
        "       main(['ps']),\n"
        f"       main(['logs', {name!r}, '--tail', '5']),\n"
        f"       main(['stop', {name!r}, '--remove'])]\n"
        "bad = [m for m in ('huggingface_hub', 'modelscope', 'hf_xet') if m in sys.modules]\n"
        "print('RCS', rcs, 'IMPORTED', bad)\n"
    )
    dead = "http://127.0.0.1:9"
    env = dict(os.environ, HF_ENDPOINT=dead, MODELSCOPE_DOMAIN="127.0.0.1:9", MODELSCOPE_ENDPOINT=dead,
               HTTP_PROXY=dead, HTTPS_PROXY=dead, http_proxy=dead, https_proxy=dead, ALL_PROXY=dead, NO_PROXY="", no_proxy="",
               HF_HUB_OFFLINE="0")
    import sys

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert "RCS [0, 0, 0, 0] IMPORTED []" in proc.stdout, proc.stdout + proc.stderr


def test_timeout_shows_last_lines_and_leaves_it_running(docker_engine, mini_bundle, names):
    name = uniq("ez-test-run-timeout")
    names.append(name)
    source, info = run.verify_bundle(mini_bundle, check_hash=False)
    image = run.load_bundle(docker_engine, source, info)
    events = []
    running = run.start(docker_engine, image, StartOptions(name=name, port=_free_port(), host="0.0.0.0"), on_event=events.append)
    assert any(isinstance(e, Notice) and e.level == "warning" and "without an API key" in e.message for e in events)
    with pytest.raises(run.ReadyError, match=rf"{name} was not ready after 0s \(it is still running") as exc:
        run.wait_ready(docker_engine, running, timeout=0.2, poll=0.3, on_event=events.append)
    assert exc.value.container_exit_code is None
    assert any(isinstance(e, LogLines) and e.phase == "ready" for e in events)
    running.container.reload()
    assert running.container.status == "running"
    with pytest.raises(run.RunCancelled, match="keeps starting in the background"):
        run.wait_ready(docker_engine, running, timeout=60, poll=0.3, cancelled=lambda: True)
    # It does become ready later; wait_ready can be called again.
    ready = run.wait_ready(docker_engine, running, timeout=60, poll=0.3)
    assert ready.base_url.startswith("http://127.0.0.1:")  # 0.0.0.0 is reached through loopback
