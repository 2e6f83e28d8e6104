"""The server is self-contained: it runs without textual/docker/ezrunner, and its CLI fails cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
from conftest import EZRUNNER, REPO


def test_server_runs_from_a_copy_without_textual_docker_or_ezrunner(gen_server, server_package):
    """gen_server is the copy of images/server started as ``ezrunner_server`` under an
    import blocker (see support_server.BLOCKER); it answered every other test."""
    log = gen_server.log()
    assert "IMPORT-CHECK-OK" in log
    assert (server_package / "ezrunner_server" / "__main__.py").is_file()
    r = httpx.post(f"{gen_server.base_url}/v1/chat/completions", headers=gen_server.headers, timeout=60,
                   json={"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert r.status_code == 200


def test_server_package_uses_relative_imports_only():
    for path in sorted((REPO / "images" / "server").glob("*.py")):
        text = path.read_text()
        for bad in ("from ezrunner", "import ezrunner", "import textual", "import docker", "huggingface_hub"):
            assert bad not in text, f"{path.name} mentions {bad!r}"


def test_requirements_list_the_image_needs():
    req = (REPO / "images" / "server" / "requirements.txt").read_text().lower()
    for name in ("fastapi", "uvicorn", "transformers", "torch", "safetensors", "prometheus-client"):
        assert name in req
    for name in ("textual", "docker", "huggingface-hub"):
        assert name not in req


def _requirement_specs(lines) -> dict[str, str]:
    import re

    specs = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            name, spec = re.match(r"([A-Za-z0-9_.\-]+)\s*(.*)", line).groups()
            specs[name.lower().replace("_", "-")] = spec.replace(" ", "")
    return specs


def test_the_serve_extra_pins_what_the_image_pins():
    """``pip install ezrunner[serve]`` runs the same server on a host: a looser pin there
    (say transformers 4.x, without the batching seam the engine uses) would break it."""
    import tomllib

    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["serve"]
    host = _requirement_specs(extra)
    image = _requirement_specs((REPO / "images" / "server" / "requirements.txt").read_text().splitlines())
    shared = sorted(set(host) & set(image))
    assert "transformers" in shared and "fastapi" in shared
    assert {name: host[name] for name in shared} == {name: image[name] for name in shared}


def _run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([EZRUNNER, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_model_needing_remote_code_fails_naming_the_flag(tmp_path):
    model = tmp_path / "custom"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "architectures": ["WeirdForCausalLM"], "model_type": "weird-custom",
        "auto_map": {"AutoConfig": "configuration_weird.WeirdConfig",
                     "AutoModelForCausalLM": "modeling_weird.WeirdForCausalLM"},
    }))
    for cmd in ([EZRUNNER, "serve", str(model), "--port", "1"],
                [sys.executable, "-m", "ezrunner.images.server", str(model), "--port", "1"]):
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert p.returncode == 2, p.stderr
        assert "--trust-remote-code" in p.stderr
        assert "Traceback" not in p.stderr


def test_missing_model_folder_is_a_usage_error(tmp_path):
    p = _run_cli("serve", str(tmp_path / "nope"))
    assert p.returncode == 2
    assert "does not exist" in p.stderr and "Traceback" not in p.stderr


def test_defaults_are_safe():
    from ezrunner.cli import build_parser

    args = build_parser().parse_args(["serve", "/m"])
    assert args.host == "127.0.0.1"
    assert args.trust_remote_code is False
    assert args.port == 8000


def test_precheck_sets_hub_offline(tiny_model_dir, monkeypatch):
    from ezrunner.images.server.cli import config_from_args, precheck

    from ezrunner.cli import build_parser

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    config = config_from_args(build_parser().parse_args(["serve", str(tiny_model_dir)]))
    assert precheck(config) == "generate"
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert config.served_model_name == tiny_model_dir.name


def test_a_model_that_fails_to_load_stops_the_server_with_one_line(tmp_path, tiny_model_dir):
    import shutil

    broken = tmp_path / "no-weights"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").unlink()
    from support_server import free_port

    p = subprocess.run([EZRUNNER, "serve", str(broken), "--port", str(free_port())],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 1
    assert "cannot serve the model" in p.stderr
    assert "ezrunner: error: the server stopped because the model could not be served" in p.stderr
