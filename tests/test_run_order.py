"""The run side's order of checks and the time-of-check/time-of-use gap (issue 14,
items 10 and 12), with a stand-in Docker client: no engine needed."""

from __future__ import annotations

import os
import socket

import docker
import pytest
from ezrunner.core.bundle.format import BundleError
from ezrunner.core.bundle.reader import verify_bundle
from ezrunner.core.errors import EzError
from ezrunner.core.events import BytesProgress
from ezrunner.core.run import RunOptions, StartOptions, load_bundle, run_bundle
from support_run import make_synthetic_bundle


class FakeImages:
    def get(self, ref):
        raise docker.errors.ImageNotFound(f"no such image: {ref}")


class FakeContainers:
    def get(self, name):
        raise docker.errors.NotFound(f"no such container: {name}")

    def list(self, **_kw):
        return []


class FakeApi:
    """``load_image`` reads the whole body the way the engine does; it records the bytes."""

    def __init__(self) -> None:
        self.received = 0
        self.finished = False

    def load_image(self, data, quiet=False):
        for piece in data:
            self.received += len(piece)
        self.finished = True
        return iter([{"stream": "Loaded image: ezrunner/tiny:test\n"}])


class FakeClient:
    def __init__(self) -> None:
        self.images, self.containers, self.api = FakeImages(), FakeContainers(), FakeApi()


def _hashing_started(events) -> bool:
    return any(isinstance(e, BytesProgress) and e.phase == "verify" for e in events)


def test_docker_unreachable_is_said_before_the_checksum_pass(tmp_path, monkeypatch):
    bundle = make_synthetic_bundle(tmp_path / "b.tar")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    events = []
    with pytest.raises(EzError, match="Docker daemon is not running or not reachable"):
        run_bundle(str(bundle), StartOptions(), on_event=events.append)
    assert not _hashing_started(events)


def test_port_in_use_is_said_before_the_checksum_pass_and_the_load(tmp_path):
    bundle = make_synthetic_bundle(tmp_path / "b.tar")
    client = FakeClient()
    events = []
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(EzError, match=f"port {port} on 127.0.0.1 is already in use"):
            run_bundle(str(bundle), StartOptions(port=port), client=client, on_event=events.append)
    assert not _hashing_started(events) and client.api.received == 0


def test_a_bad_name_or_gpu_choice_is_said_before_the_checksum_pass(tmp_path):
    bundle = make_synthetic_bundle(tmp_path / "b.tar")
    for options in (StartOptions(name="bad name!"), StartOptions(gpus="nonsense")):
        events = []
        with pytest.raises(EzError):
            run_bundle(str(bundle), options, RunOptions(), client=FakeClient(), on_event=events.append)
        assert not _hashing_started(events)


@pytest.mark.parametrize("how", ["renamed-over", "written-in-place"])
def test_a_bundle_swapped_after_verify_never_finishes_loading(tmp_path, how):
    bundle = make_synthetic_bundle(tmp_path / "b.tar", layer_bytes=3_000_000)
    source, info = verify_bundle(bundle)
    assert info.sha256
    other = make_synthetic_bundle(tmp_path / "other.tar", layer_bytes=3_000_000, seed=2)
    if how == "renamed-over":
        os.replace(other, bundle)
    else:
        with open(bundle, "r+b") as fh:
            fh.seek(2_000_000)
            fh.write(b"\0" * 512)
    client = FakeClient()
    with pytest.raises(BundleError, match=r"b\.tar changed after it was verified"):
        load_bundle(client, source, info)
    assert not client.api.finished and 0 < client.api.received < source.size


def test_an_unchanged_bundle_loads_every_byte(tmp_path):
    bundle = make_synthetic_bundle(tmp_path / "b.tar", layer_bytes=3_000_000)
    source, info = verify_bundle(bundle)
    client = FakeClient()
    with pytest.raises(EzError, match="docker load finished but image"):  # the fake loads nothing
        load_bundle(client, source, info)
    assert client.api.finished and client.api.received == source.size


def _cli_run(*args, stdin=None):
    import subprocess

    from conftest import EZRUNNER

    return subprocess.run([EZRUNNER, "run", *args], capture_output=True, text=True, timeout=60, input=stdin,
                          env={"PATH": "/usr/bin:/bin", "DOCKER_HOST": "unix:///nonexistent/docker.sock"})


@pytest.mark.parametrize(("key", "why"), [("", "printable ASCII"), ("k\u00e9y", "printable ASCII"),
                                          ("two words", "printable ASCII")])
def test_cli_api_key_file_is_checked_before_docker(tmp_path, key, why):
    bundle = make_synthetic_bundle(tmp_path / "b.tar")
    (tmp_path / "key").write_text(key + "\n", encoding="utf-8")
    proc = _cli_run(str(bundle), "--api-key-file", str(tmp_path / "key"))
    assert proc.returncode == 2 and why in proc.stderr and "Traceback" not in proc.stderr


def test_cli_api_key_from_stdin_or_a_missing_file(tmp_path):
    bundle = make_synthetic_bundle(tmp_path / "b.tar")
    missing = _cli_run(str(bundle), "--api-key-file", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "--api-key-file: cannot read" in missing.stderr
    from_stdin = _cli_run(str(bundle), "--api-key-file", "-", stdin="s3cret\n")
    assert from_stdin.returncode == 1 and "Docker daemon is not running" in from_stdin.stderr  # the key passed
    assert "warning" not in from_stdin.stderr
    argv = _cli_run(str(bundle), "--api-key", "s3cret")
    assert "ezrunner: warning: --api-key shows the key to every user" in argv.stderr
    both = _cli_run(str(bundle), "--api-key", "a", "--api-key-file", "-")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
