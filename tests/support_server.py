"""Session fixtures: real server processes on 127.0.0.1 for the server tests.

- ``gen_server``: the tiny Llama, started from a COPY of images/server as the
  top-level package ``ezrunner_server`` in a Python whose import system refuses
  textual, docker and the whole ``ezrunner`` package (the image situation). It has
  an API key and a fault-injection prompt for the engine-failure test.
- ``embed_server``: MiniLM through the ``ezrunner serve`` console script.
- ``queue_server``: the tiny Llama with one slot and one waiting place (429 test).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
API_KEY = "test-key-0123456789"
FAULT_PROMPT = "__ezrunner_fault__"

# Runs in the server's Python before anything else: textual, docker and ezrunner
# cannot be imported at all; importing the server package must not pull in
# torch, transformers or huggingface_hub (they load with the model, later).
BLOCKER = r"""
import importlib.abc, sys
BLOCKED = ("textual", "docker", "ezrunner")
class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not available in this image (blocked by the test)")
        return None
sys.meta_path.insert(0, _Blocker())
for mod in BLOCKED:
    try:
        __import__(mod)
    except ImportError:
        pass
    else:
        raise SystemExit(f"blocker failed: {mod} imported")
import ezrunner_server.app, ezrunner_server.cli
heavy = [m for m in ("torch", "transformers", "huggingface_hub", "textual", "docker") if m in sys.modules]
if heavy:
    raise SystemExit(f"importing ezrunner_server pulled in {heavy}")
print("IMPORT-CHECK-OK: textual/docker/ezrunner blocked; no torch/transformers/huggingface_hub at import",
      file=sys.stderr, flush=True)
import runpy
sys.argv = ["ezrunner_server", *sys.argv[1:]]
runpy.run_module("ezrunner_server", run_name="__main__", alter_sys=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    name: str
    port: int
    process: subprocess.Popen
    log_path: Path
    api_key: str | None = None
    ready_statuses: list[int] = field(default_factory=list)
    first_not_ready_body: dict | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> dict[str, float]:
        """Samples of /metrics as {'name{labels}': value}."""
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(f"{self.base_url}/metrics", timeout=10).text
        out: dict[str, float] = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_server(name: str, cmd: list[str], log_path: Path, port: int, *, env: dict | None = None,
                 cwd: Path | None = None, api_key: str | None = None, timeout: float = 180) -> RunningServer:
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("OMP_NUM_THREADS", "2")
    log_file = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=full_env, cwd=cwd)
    log_file.close()
    server = RunningServer(name, port, proc, log_path, api_key)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{name} server exited with {proc.returncode}:\n{server.log()[-4000:]}")
        try:
            r = httpx.get(f"{server.base_url}/ready", timeout=2)
        except httpx.HTTPError:
            time.sleep(0.05)
            continue
        server.ready_statuses.append(r.status_code)
        if r.status_code == 200:
            return server
        if server.first_not_ready_body is None:
            server.first_not_ready_body = r.json()
        time.sleep(0.05)
    server.stop()
    pytest.fail(f"{name} server not ready after {timeout:.0f} s:\n{server.log()[-4000:]}")


@pytest.fixture(scope="session")
def server_package(tmp_path_factory) -> Path:
    """images/server copied as the top-level package ``ezrunner_server`` (as in the images)."""
    root = tmp_path_factory.mktemp("image-opt")
    shutil.copytree(REPO / "images" / "server", root / "ezrunner_server",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.fixture(scope="session")
def gen_server(tiny_model_dir, server_package, tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("logs") / "gen-server.log"
    env = {"PYTHONPATH": str(server_package), "EZRUNNER_SERVER_FAULT_PROMPT": FAULT_PROMPT,
           "EZRUNNER_API_KEY": API_KEY}
    cmd = [sys.executable, "-c", BLOCKER, str(tiny_model_dir), "--port", str(port),
           "--served-model-name", "tiny-chat", "--max-concurrency", "16", "--max-queue", "64",
           "--dtype", "float32"]  # float32: greedy outputs compared token for token with generate()
    server = start_server("generation", cmd, log_path, port, env=env, cwd=server_package, api_key=API_KEY)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def embed_server(minilm_dir, tmp_path_factory):
    from conftest import EZRUNNER

    port = free_port()
    log_path = tmp_path_factory.mktemp("logs") / "embed-server.log"
    cmd = [EZRUNNER, "serve", str(minilm_dir), "--port", str(port), "--served-model-name", "minilm"]
    env = {"EZRUNNER_API_KEY": ""}
    server = start_server("embedding", cmd, log_path, port, env=env)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def queue_server(tiny_model_dir, tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("logs") / "queue-server.log"
    cmd = [sys.executable, "-m", "ezrunner.images.server", str(tiny_model_dir), "--port", str(port),
           "--served-model-name", "tiny-q", "--max-concurrency", "1", "--max-queue", "1"]
    server = start_server("queue", cmd, log_path, port, env={"EZRUNNER_API_KEY": ""})
    yield server
    server.stop()


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    assert "Traceback" not in response.text
    body = response.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]
    if code is not None:
        assert err["code"] == code, err
    return err


def sse_events(lines) -> list:
    """Parse ``data:`` lines of an SSE stream; returns decoded JSON objects and the '[DONE]' marker."""
    events = []
    for line in lines:
        if not line.startswith("data: "):
            continue
        data = line[len("data: "):]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


# ------------------------------------------------------------------------------------------ in-process fakes


class RecordingTokenizer:
    """Stands in for a fast tokenizer: one token per character, and it records the threads it ran on."""

    chat_template = "{{ messages }}"

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.calls = 0

    def get_vocab(self) -> dict[str, int]:
        return {"a": 0, "bb": 1, "<|eot|>": 2}

    def apply_chat_template(self, messages, **_kw) -> str:
        self.threads.append(threading.current_thread().name)
        return "".join(m["content"] for m in messages)

    def __call__(self, text: str, **_kw) -> dict[str, list[int]]:
        self.threads.append(threading.current_thread().name)
        self.calls += 1
        return {"input_ids": [0] * len(text)}


def fake_generation_engine(tokenizer):
    from ezrunner.images.server.engine import GENERATE, longest_token_chars

    return SimpleNamespace(capability=GENERATE, max_model_len=64, device="cpu", tokenizer=tokenizer,
                           model=SimpleNamespace(dtype="torch.float32"), is_alive=lambda: True,
                           default_temperature=0.0, default_top_p=1.0, supports_request_sampling=False,
                           max_token_chars=longest_token_chars(tokenizer))


def app_with_engine(engine, **config):
    from ezrunner.images.server.app import create_app
    from ezrunner.images.server.config import ServerConfig

    app = create_app(ServerConfig(model_dir="/x", served_model_name="fake", **config), load=False)
    app.state.engine, app.state.ready = engine, True
    return app
