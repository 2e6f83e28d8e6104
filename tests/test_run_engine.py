"""The run side with the real engine: a bundle packed with the embedded
Transformers server and the tiny demo model. pack -> rmi -> run -> chat (official
openai client) -> logs -> stop; damaged bundles refused before docker load; a
model that crashes at start; a network with no route out."""

from __future__ import annotations

import shutil
import socket
import subprocess

import pytest
from conftest import EZRUNNER
from ezrunner.core import docker_api, run
from ezrunner.core.run import RunOptions, StartOptions
from support_run import copy_range, remove_containers, remove_image, uniq

E2E = uniq("ez-e2e")
E2E_NET = uniq("ez-e2e-internal")
E2E_CRASH = uniq("ez-e2e-crash")
BROKEN_TAG = f"ezrunner-test/broken-model-{E2E}:1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ez(*args, timeout=600, stdin=None):
    return subprocess.run([EZRUNNER, *args], capture_output=True, text=True, timeout=timeout, input=stdin)


@pytest.fixture(scope="module")
def bundle_info(engine_bundle):
    _, info = run.verify_bundle(engine_bundle, check_hash=False)
    return info


@pytest.fixture(scope="module", autouse=True)
def _cleanup(docker_engine, bundle_info):
    yield
    remove_containers(docker_engine, E2E, E2E_NET, E2E_CRASH)
    remove_image(docker_engine, bundle_info.image_id)


def _image_present(client, image_id) -> bool:
    return docker_api.image_or_none(client, image_id) is not None


def test_damaged_bundles_are_refused_before_docker_load(docker_engine, engine_bundle, bundle_info, tmp_path):
    # False only when another test run on this engine uses the image right now.
    removed = remove_image(docker_engine, bundle_info.image_id)
    size = engine_bundle.stat().st_size
    sidecar = engine_bundle.with_name(engine_bundle.name + ".sha256")

    # One corrupted byte in the middle.
    bad = tmp_path / engine_bundle.name
    copy_range(engine_bundle, bad)
    shutil.copy(sidecar, tmp_path)
    with open(bad, "r+b") as fh:
        fh.seek(size // 2)
        b = fh.read(1)
        fh.seek(size // 2)
        fh.write(bytes([b[0] ^ 0x10]))
    proc = _ez("run", str(bad), "--port", str(_free_port()), "-d")
    assert proc.returncode == 2, proc.stderr
    assert "ezrunner: error: checksum mismatch" in proc.stderr
    assert not (removed and _image_present(docker_engine, bundle_info.image_id)), "nothing may reach docker load"

    # Truncated: the first 60 %.
    bad.unlink()
    copy_range(engine_bundle, bad, 0, size * 6 // 10)
    proc = _ez("run", str(bad), "--port", str(_free_port()), "-d")
    assert proc.returncode == 2 and "ezrunner: error: truncated bundle" in proc.stderr, proc.stderr
    bad.unlink()

    # Split in three; part 2 missing. (Whole parts verify; the check streams, no joined copy.)
    third = size // 3 + 1
    parts = [copy_range(engine_bundle, tmp_path / f"{engine_bundle.name}.part-{i + 1:03d}", i * third,
                        min(third, size - i * third)) for i in range(3)]
    source, info = run.verify_bundle(parts[0])
    assert info.image_id == bundle_info.image_id and len(source.parts) == 3
    assert not (tmp_path / engine_bundle.name).exists()
    parts[1].unlink()
    proc = _ez("run", str(parts[0]), "--port", str(_free_port()), "-d")
    assert proc.returncode == 2
    assert f"ezrunner: error: missing part: {engine_bundle.name}.part-002" in proc.stderr
    assert not (removed and _image_present(docker_engine, bundle_info.image_id))


def test_pack_rmi_run_chat_logs_ps_stop(docker_engine, engine_bundle, bundle_info):
    import openai

    removed = remove_image(docker_engine, bundle_info.image_id)  # as on a fresh target
    port = _free_port()
    proc = _ez("run", str(engine_bundle), "--name", E2E, "--port", str(port), "--api-key-file", "-", "-d",
               stdin="k-123\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_hardened(docker_engine.containers.get(E2E), "k-123")
    assert "verify: ok sha256" in proc.stderr
    assert ("load: ok loaded" if removed else "load: ok already loaded") in proc.stderr
    assert f"OpenAI base URL: http://127.0.0.1:{port}/v1" in proc.stdout
    model = bundle_info.served_model_name
    assert f"model:           {model}" in proc.stdout
    assert "Authorization: Bearer $API_KEY" in proc.stdout
    assert _image_present(docker_engine, bundle_info.image_id)

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k-123", max_retries=0, timeout=120)
    assert [m.id for m in client.models.list()] == [model]
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hello"}], max_tokens=5)
    assert reply.choices[0].finish_reason in ("length", "stop") and reply.usage.completion_tokens >= 1
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong", max_retries=0).models.list()

    ps = _ez("ps")
    line = next(ln for ln in ps.stdout.splitlines() if ln.startswith(E2E + " "))
    assert model in line and "transformers" in line and f"127.0.0.1:{port}" in line

    logs = _ez("logs", E2E)
    assert logs.returncode == 0 and "POST /v1/chat/completions" in logs.stdout

    # Running it again: refused before the load, and it says where the running one is.
    again = _ez("run", str(engine_bundle), "--name", E2E, "--port", str(_free_port()), "-d", "--no-verify")
    assert again.returncode == 1 and "load:" not in again.stderr
    assert f"{E2E} is already running" in again.stderr and f"http://127.0.0.1:{port}/v1" in again.stderr

    stop = _ez("stop", E2E, "--remove")
    assert stop.returncode == 0 and f"stopped and removed {E2E}" in stop.stdout
    assert docker_api.container_or_none(docker_engine, E2E) is None
    assert E2E + " " not in _ez("ps").stdout


def _assert_hardened(container, key: str) -> None:
    """No capabilities, no privilege gain, a read-only root; the key only in Config.Env."""
    attrs = container.attrs
    host = attrs["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and "no-new-privileges" in host["SecurityOpt"]
    assert host["ReadonlyRootfs"] is True and set(host["Tmpfs"]) == {"/tmp", "/home/ezrunner"}
    assert f"EZRUNNER_API_KEY={key}" in attrs["Config"]["Env"]  # what `docker inspect` still shows (docs/security.md)
    assert key not in " ".join([*attrs.get("Args", []), *(attrs["Config"].get("Cmd") or [])])
    assert key not in str(attrs["Config"]["Labels"])
    setuid = container.exec_run(["sh", "-c", "find / -xdev -type f -perm /6000 2>/dev/null | head -5"])
    assert setuid.output.strip() == b"", setuid.output
    written = container.exec_run(["sh", "-c", "touch /opt/x 2>&1; touch /tmp/x && echo tmp-ok"])
    assert b"Read-only file system" in written.output and b"tmp-ok" in written.output


def test_chat_on_a_network_with_no_route_out(docker_engine, engine_bundle, bundle_info):
    import openai

    net = docker_engine.networks.create(E2E_NET, driver="bridge", internal=True)
    try:
        ready = run.run_bundle(str(engine_bundle), StartOptions(name=E2E_NET, network=net.name, publish=False),
                               RunOptions(verify=False, ready_timeout_s=300), client=docker_engine)
        c = ready.running.container
        assert list(c.attrs["NetworkSettings"]["Networks"]) == [net.name]
        # No route out from inside.
        probe = c.exec_run(["python3", "-c", "import socket; s=socket.socket(); s.settimeout(3); s.connect(('1.1.1.1', 80))"])
        assert probe.exit_code != 0
        ip = c.attrs["NetworkSettings"]["Networks"][net.name]["IPAddress"]
        assert ready.base_url == f"http://{ip}:8000/v1"
        client = openai.OpenAI(base_url=ready.base_url, api_key="none", max_retries=0, timeout=120)
        reply = client.chat.completions.create(model=ready.model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
        assert reply.choices[0].message.role == "assistant" and reply.usage.completion_tokens >= 1
    finally:
        remove_containers(docker_engine, E2E_NET)
        net.remove()


def test_model_that_crashes_at_start(docker_engine, engine_bundle, bundle_info):
    """The real server, its weight file gone: exit code, last lines, the cause."""
    import io

    source, info = run.verify_bundle(engine_bundle, check_hash=False)
    image = run.load_bundle(docker_engine, source, info)
    model_dir = f"/models/{info.served_model_name}"
    dockerfile = (f"FROM {image.id}\nUSER root\nRUN rm -f {model_dir}/model.safetensors "
                  f"{model_dir}/model.safetensors.index.json\nUSER 10001\n")
    broken, _ = docker_engine.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=BROKEN_TAG,
                                           rm=True, forcerm=True)
    try:
        running = run.start(docker_engine, broken, StartOptions(name=E2E_CRASH, port=_free_port()))
        with pytest.raises(run.ReadyError) as exc:
            run.wait_ready(docker_engine, running, timeout=300)
        err = exc.value
        assert err.container_exit_code not in (None, 0)
        assert f"exited with code {err.container_exit_code} before it was ready" in err.message
        assert 0 < len(err.log_tail) <= 50
        assert err.cause == "a file of the model is missing or unreadable", err.log_tail
        running.container.reload()
        assert running.container.status == "exited"  # not looping on unless-stopped
    finally:
        remove_containers(docker_engine, E2E_CRASH)
        remove_image(docker_engine, BROKEN_TAG)
