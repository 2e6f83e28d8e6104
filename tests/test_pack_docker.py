"""Pack with the real Docker engine: the bundle is checked by docker load, skopeo,
a running container and the official openai client - never by our own reader."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from conftest import EZRUNNER
from ezrunner.core.bundle import format as B
from support_pack import pack_home, read_bundle_manifest, read_sidecar


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sha256(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as fh:
            while chunk := fh.read(8 << 20):
                h.update(chunk)
    return h.hexdigest()


def _rmi(client, ref: str) -> None:
    import docker

    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.remove(ref, force=True)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_bundle_layout_and_sidecar(packed_bundle, tiny_model_dir):
    b = packed_bundle
    # the sidecar names the bundle and matches its bytes
    digest, name = read_sidecar(b.sidecar)
    assert name == b.path.name
    assert digest == _sha256([b.path]) == b.sha256
    assert stat.S_IMODE(b.sidecar.stat().st_mode) == stat.S_IMODE(b.path.stat().st_mode)  # travels with it
    # first member is the ezrunner manifest (contract C)
    with tarfile.open(b.path, "r|") as tf:
        first = tf.next()
        assert first.name == B.BUNDLE_MANIFEST_NAME
        m = json.load(tf.extractfile(first))
    assert m == b.manifest.to_dict()
    assert m["format"] == B.BUNDLE_FORMAT
    assert m["engine"] == "transformers" and m["device"] == "cpu"
    assert m["served_model_name"] == "tiny-llama"
    assert set(m["files"]) >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert m["model_bytes"] == sum(p.stat().st_size for p in tiny_model_dir.rglob("*") if p.is_file())
    assert m["files"]["model.safetensors"] == _sha256([tiny_model_dir / "model.safetensors"])
    assert m["image_tag"].startswith("ezrunner/tiny-llama:")
    assert read_bundle_manifest(b.path).image_id == m["image_id"]
    # docker-archive structure: manifest.json -> config named by its sha256
    with tarfile.open(b.path) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))[0]
        raw = tf.extractfile(manifest["Config"]).read()
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == m["image_id"]
        config = json.loads(raw)
        assert len(config["rootfs"]["diff_ids"]) == len(manifest["Layers"])
        # the model layer's diff id is the sha256 of its bytes
        last = tf.extractfile(manifest["Layers"][-1]).read()
        assert "sha256:" + hashlib.sha256(last).hexdigest() == config["rootfs"]["diff_ids"][-1]
    labels = config["config"]["Labels"]
    assert labels[B.LABEL_READY_PATH] == "/ready"
    assert labels[B.LABEL_PORT] == "8000"
    assert json.loads(labels[B.LABEL_SERVE_ARGS]) == config["config"]["Cmd"]
    assert config["config"]["User"] == "10001:10001"


def test_skopeo_accepts_the_bundle(packed_bundle):
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    proc = subprocess.run(["skopeo", "inspect", f"docker-archive:{packed_bundle.path}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["Labels"][B.LABEL_MODEL] == "tiny-llama"
    assert info["Labels"][B.LABEL_ENGINE] == "transformers"
    assert info["Os"] == "linux"
    assert len(info["Layers"]) >= 2


def test_end_to_end_load_run_chat(packed_bundle, docker_engine):
    from openai import OpenAI

    b = packed_bundle
    _rmi(docker_engine, b.image_tag)
    with open(b.path, "rb") as fh:
        loaded = docker_engine.images.load(fh)
    assert any(b.image_tag in img.tags for img in loaded)
    img = docker_engine.images.get(b.image_tag)
    assert img.id == b.image_id
    port = _free_port()
    container = docker_engine.containers.run(b.image_tag, detach=True, ports={"8000/tcp": ("127.0.0.1", port)})
    try:
        deadline = time.monotonic() + 240
        import httpx

        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    break
            container.reload()
            assert container.status == "running", container.logs()[-2000:]
            assert time.monotonic() < deadline, container.logs()[-2000:]
            time.sleep(1)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
        reply = client.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "hello"}], max_tokens=8)
        assert reply.choices[0].message.content is not None
        assert reply.usage.completion_tokens >= 1
        # non-root user, model read-only
        rc, out = container.exec_run(["id", "-u"])
        assert out.decode().strip() == "10001"
        rc, _ = container.exec_run(["sh", "-c", "touch /models/tiny-llama/x"])
        assert rc != 0
        rc, out = container.exec_run(["sh", "-c", "echo $HF_HUB_OFFLINE"])
        assert out.decode().strip() == "1"
    finally:
        container.remove(force=True)
        _rmi(docker_engine, b.image_tag)


def test_split_join_round_trip(packed_bundle, tmp_path, tiny_model_dir, base_image):
    from ezrunner.core.pack import PackOptions, pack

    out = tmp_path / "split.tar"
    result = pack(PackOptions(str(tiny_model_dir), out, base_image=base_image, engine="transformers", device="cpu", plan={},
                              split_size="300M"))
    parts = [Path(p) for p in result.parts]
    assert len(parts) >= 2
    assert [p.name for p in parts] == [f"split.tar.part-{i:03d}" for i in range(1, len(parts) + 1)]
    assert all(p.stat().st_size == 300 * 1024 * 1024 for p in parts[:-1])
    assert not out.exists()
    digest, name = read_sidecar(B.sidecar_path(out))
    assert name == "split.tar"
    # `cat` joins them
    subprocess.run(f"cat {out}.part-* > {out}", shell=True, check=True)
    assert _sha256([out]) == digest
    assert read_bundle_manifest(parts[0]).model == "tiny-llama"
    if shutil.which("skopeo"):
        proc = subprocess.run(["skopeo", "inspect", f"docker-archive:{out}"], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    # the same model + engine gives the same model layer as the single-file bundle
    assert result.manifest.files == packed_bundle.manifest.files
    assert result.engine_reused


def test_second_model_reuses_the_engine_image(packed_bundle, tmp_path, base_image, docker_engine):
    from ezrunner.core.demo_model import write_demo_model
    from ezrunner.core.pack import PackOptions, pack

    other = write_demo_model(tmp_path / "other-llama", preset="tiny", num_hidden_layers=1)
    events = []
    result = pack(PackOptions(str(other), tmp_path / "other.tar", base_image=base_image, engine="transformers", device="cpu",
                              plan={}), on_event=events.append)
    assert result.engine_image == packed_bundle.engine_image
    assert result.engine_reused
    from ezrunner.core.events import StepProgress

    assert not any(isinstance(e, StepProgress) for e in events)  # no Dockerfile step ran
    assert result.manifest.served_model_name == "other-llama"


def test_missing_base_image_says_how_to_load_it(tmp_path, tiny_model_dir, docker_engine):
    proc = subprocess.run([EZRUNNER, "pack", str(tiny_model_dir), "-o", str(tmp_path / "b.tar"), "--cpu-only", "--ram", "16",
                           "--base-image", "ezrunner-test/not-there:1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("ezrunner: error: ")]
    assert lines == ["ezrunner: error: base image ezrunner-test/not-there:1 is not in the local Docker engine"], proc.stderr
    assert "docker load -i" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _leftovers(tmp_path) == []


def _small_model(tmp_path_factory) -> Path:
    from ezrunner.core.demo_model import write_demo_model

    dest = tmp_path_factory.getbasetemp() / "pack-small-model" / "small-llama"
    if not dest.exists():
        write_demo_model(dest, preset="small")
    return dest


def test_interrupted_pack_leaves_nothing(packed_bundle, tmp_path, tmp_path_factory, base_image):
    model = _small_model(tmp_path_factory)
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, EZRUNNER_HOME=str(pack_home(tmp_path_factory)))
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen([EZRUNNER, "pack", str(model), "-o", str(out / "b.tar"), "--cpu-only", "--ram", "16",
                                 "--engine", "transformers", "--base-image", base_image],
                                stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        seen = []
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if line.startswith("export: writing"):
                break
        time.sleep(0.3)
        assert proc.poll() is None, "".join(seen)  # still writing
        assert any(p.name.endswith(".tmp") for p in out.iterdir())
        proc.send_signal(sig)
        proc.wait(timeout=120)
        assert proc.returncode != 0
        assert _leftovers(out) == [], "".join(seen)


@pytest.fixture
def small_tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tiny-disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_leaves_no_partial_bundle(packed_bundle, small_tmpfs, tmp_path_factory, base_image, tiny_model_dir):
    env = dict(os.environ, EZRUNNER_HOME=str(pack_home(tmp_path_factory)))
    # the free-space check catches it before writing
    proc = subprocess.run([EZRUNNER, "pack", str(tiny_model_dir), "-o", str(small_tmpfs / "b.tar"), "--cpu-only", "--ram", "16",
                           "--engine", "transformers", "--base-image", base_image], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 1
    assert "not enough free space" in proc.stderr
    assert _leftovers(small_tmpfs) == []


def test_disk_full_while_writing_leaves_nothing(packed_bundle, small_tmpfs, tmp_path_factory, base_image, tiny_model_dir, monkeypatch):
    """The disk fills up during the write (the estimate passed): ENOSPC -> one
    line, temporaries removed."""
    from ezrunner.core.bundle import writer
    from ezrunner.core.errors import EzError
    from ezrunner.core.pack import PackOptions, pack

    monkeypatch.setenv("EZRUNNER_HOME", str(pack_home(tmp_path_factory)))
    monkeypatch.setattr(writer, "MIN_FREE_MARGIN", -(10 << 30))  # pretend there is room
    with pytest.raises(EzError, match="disk is full"):
        pack(PackOptions(str(tiny_model_dir), small_tmpfs / "b.tar", base_image=base_image, engine="transformers", device="cpu",
                         plan={}))
    assert _leftovers(small_tmpfs) == []


def test_vllm_bundle_labels_and_command(tmp_path, tiny_model_dir, base_image, docker_engine):
    """The vLLM template built on the local test base (no vLLM image can be pulled
    here): the labels and command the run side reads, checked by skopeo."""
    from ezrunner.core.pack import PackOptions, pack

    plan = {"engine": "vllm", "device": "cuda", "fits": True, "dtype": "bfloat16", "max_model_len": 2048,
            "max_concurrent_sequences": 4, "tensor_parallel_size": 1, "gpu_memory_utilization": 0.9}
    result = pack(PackOptions(str(tiny_model_dir), tmp_path / "v.tar", base_image=base_image, plan=plan))
    try:
        assert result.manifest.engine == "vllm" and result.manifest.device == "cuda"
        if shutil.which("skopeo"):
            proc = subprocess.run(["skopeo", "inspect", "--config", f"docker-archive:{tmp_path / 'v.tar'}"],
                                  capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, proc.stderr
            cfg = json.loads(proc.stdout)["config"]
            labels = cfg["Labels"]
            assert labels[B.LABEL_ENGINE] == "vllm"
            assert labels[B.LABEL_NEEDS_GPU] == "true"
            assert labels[B.LABEL_READY_PATH] == "/health"
            assert labels[B.LABEL_API_KEY_ENV] == "VLLM_API_KEY"
            assert json.loads(labels[B.LABEL_PLAN])["max_model_len"] == 2048
            assert cfg["Cmd"][:3] == ["vllm", "serve", "/models/tiny-llama"]
            assert json.loads(labels[B.LABEL_SERVE_ARGS]) == cfg["Cmd"]
            with tarfile.open(tmp_path / "v.tar") as tf:  # Healthcheck is Docker-only (not in skopeo's OCI view)
                name = json.load(tf.extractfile("manifest.json"))[0]["Config"]
                docker_cfg = json.load(tf.extractfile(name))["config"]
            assert "/health" in " ".join(docker_cfg["Healthcheck"]["Test"])
            assert not cfg.get("Entrypoint")
            assert cfg["User"] == "10001:10001"
    finally:
        _rmi(docker_engine, result.engine_image)
