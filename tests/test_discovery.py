"""Discovery: search and model details against a local HTTP server replaying hub
API responses (tests/fixtures/hub), local folders and the local caches.

The real huggingface_hub and modelscope clients make the requests; they are
pointed at the replay server only through endpoint settings (HF_ENDPOINT,
HfApi(endpoint=), MODELSCOPE_ENDPOINT). Nothing inside the libraries is patched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import pytest
from conftest import EZRUNNER, local_http_server
from ezrunner.core import discovery
from ezrunner.core.errors import EzError, UsageError
from ezrunner.core.hubs import HubConfig

HUB = Path(__file__).parent / "fixtures" / "hub"
UNREACHABLE = "http://no-such-host.invalid"


def _model_info_answer(record: dict, expand: list[str] | None) -> dict:
    """What /api/models/{id} answers: with ``expand``, only those properties (and the id);
    without, the record less the properties it lists under ``_expand_only``."""
    expand_only = record.pop("_expand_only", [])
    if expand:
        return {k: v for k, v in record.items() if k in {"_id", "id", *expand}}
    return {k: v for k, v in record.items() if k not in expand_only}


class _Replay(BaseHTTPRequestHandler):
    log: list[dict] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, ctype: str = "application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, path: Path | None = None, data=None, headers=None):
        body = path.read_bytes() if path is not None else json.dumps(data).encode()
        self._send(status, body, headers)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):  # noqa: C901 - a small router
        u = urlparse(self.path)
        q = {k: v for k, v in parse_qs(u.query).items()}
        parts = [unquote(p) for p in u.path.strip("/").split("/")]
        type(self).log.append({"path": u.path, "query": q, "headers": {k.lower(): v for k, v in self.headers.items()}})
        # ---- Hugging Face
        if parts[:2] == ["api", "models"] and len(parts) == 2 and q.get("search") == ["server-error"]:
            return self._json(503, data={"error": "Service Unavailable"})
        if parts[:2] == ["api", "models"] and len(parts) == 2:
            f = HUB / "hf" / "search" / f"{q.get('search', [''])[0].lower()}.json"
            data = json.loads(f.read_text()) if f.is_file() else []
            limit = int(q.get("limit", ["1000"])[0])
            return self._json(200, data=data[:limit])
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            f = HUB / "hf" / "models" / f"{parts[2]}--{parts[3]}.json"
            if not f.is_file():
                return self._json(401, data={"error": "Repository not found"},
                                  headers={"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
            return self._json(200, data=_model_info_answer(json.loads(f.read_text()), q.get("expand")))
        if len(parts) >= 5 and parts[2] == "resolve":
            folder = HUB / "hf" / "files" / f"{parts[0]}--{parts[1]}"
            f = folder / "/".join(parts[4:])
            if (folder / ".gated").exists() and "authorization" not in {k.lower() for k in self.headers}:
                return self._json(401, data={"error": "gated"},
                                  headers={"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to model is restricted"})
            if not f.is_file():
                return self._json(404, data={"error": "Entry not found"}, headers={"X-Error-Code": "EntryNotFound"})
            return self._send(200, f.read_bytes(), {"X-Repo-Commit": "0" * 40, "ETag": '"abc"'})
        # ---- ModelScope OpenAPI
        if parts[:3] == ["openapi", "v1", "models"] and len(parts) == 3:
            f = HUB / "ms" / "search" / f"{q.get('search', [''])[0].lower()}.json"
            if f.is_file():
                return self._json(200, f)
            return self._json(200, data={"success": True, "data": {"models": [], "total_count": 0}})
        if parts[:3] == ["openapi", "v1", "models"] and len(parts) == 5:
            f = HUB / "ms" / "models" / f"{parts[3]}--{parts[4]}.json"
            if f.is_file():
                return self._json(200, f)
            return self._json(404, data={"success": False, "code": "NotFound", "message": "model not found"})
        # ---- ModelScope legacy API
        if parts[:3] == ["api", "v1", "models"] and len(parts) >= 5:
            key = f"{parts[3]}--{parts[4]}"
            if parts[5:] == ["repo", "files"]:
                f = HUB / "ms" / "files" / f"{key}.json"
                if f.is_file():
                    return self._json(200, f)
            elif parts[5:] == ["repo"]:
                f = HUB / "ms" / "raw" / key / q.get("FilePath", [""])[0]
                if f.is_file():
                    return self._send(200, f.read_bytes())
            return self._json(404, data={"Code": 10010205001, "Message": "model not found", "Success": False})
        return self._json(404, data={"error": f"no fixture for {u.path}"})


@pytest.fixture(scope="module")
def hub_server():
    _Replay.log = []
    with local_http_server(_Replay) as url:
        yield url


@pytest.fixture
def hub_env(hub_server, monkeypatch, tmp_path):
    """Point both hubs at the replay server through their endpoint variables,
    with empty, private caches."""
    monkeypatch.setenv("HF_ENDPOINT", hub_server)
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", hub_server)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    _Replay.log.clear()
    return hub_server


# ------------------------------------------------------------------ HF search

def test_hf_search_uses_list_models_with_expand_and_sorts_by_downloads(hub_env):
    out = discovery.search("qwen2.5-0.5b", ["hf"], limit=10)
    assert out.errors == {}
    ids = [r.id for r in out.results]
    assert ids == ["Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-0.5B-Instruct-GGUF"]
    first = out.results[0]
    assert (first.source, first.parameters, first.downloads, first.gated) == ("hf", 494032768, 1523741, False)
    req = [r for r in _Replay.log if r["path"] == "/api/models"][-1]
    assert req["query"]["search"] == ["qwen2.5-0.5b"]
    assert req["query"]["sort"] == ["downloads"]
    assert {"safetensors", "gated", "downloads"} <= set(req["query"]["expand"])


def test_hf_token_is_sent(hub_env, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_testtoken123")
    discovery.search("llama-3.1-8b", ["hf"], limit=5)
    req = [r for r in _Replay.log if r["path"] == "/api/models"][-1]
    assert req["headers"].get("authorization") == "Bearer hf_testtoken123"


def test_gated_status_in_search(hub_env):
    out = discovery.search("llama-3.1-8b", ["hf"], limit=5)
    assert out.results[0].gated == "manual"
    assert out.results[0].parameters == 8030261248


# ------------------------------------------------------------ ModelScope search

def test_modelscope_search_through_hubapi(hub_env):
    out = discovery.search("qwen2.5-0.5b", ["modelscope"], limit=10)
    assert out.errors == {}
    assert [r.id for r in out.results] == ["Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B"]
    assert out.results[0].downloads == 987654
    assert out.results[0].size_bytes == 998945832
    req = [r for r in _Replay.log if r["path"] == "/openapi/v1/models"][-1]
    assert req["query"]["search"] == ["qwen2.5-0.5b"]


# ---------------------------------------------------------------- no network

def test_no_network_fails_fast_per_source_and_local_still_shows(monkeypatch, tmp_path, tiny_model_dir):
    monkeypatch.setenv("HF_ENDPOINT", UNREACHABLE)
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", UNREACHABLE)
    t0 = time.monotonic()
    out = discovery.search(str(tiny_model_dir), ["all"], limit=5)
    elapsed = time.monotonic() - t0
    assert elapsed < 8, elapsed
    assert set(out.errors) == {"hf", "modelscope"}
    for reason in out.errors.values():
        assert "\n" not in reason and "no-such-host.invalid" in reason
    assert [r.source for r in out.results] == ["local"]
    assert out.results[0].path == str(tiny_model_dir.resolve())


def test_refused_port_fails_fast(monkeypatch):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    t0 = time.monotonic()
    out = discovery.search("qwen", ["hf"], cfg=HubConfig(hf_endpoint=f"http://127.0.0.1:{port}"))
    assert time.monotonic() - t0 < 5
    assert "cannot connect" in out.errors["hf"]
    assert out.results == []


def test_hf_offline_mode_is_a_reason_not_a_crash(monkeypatch, hub_env):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = discovery.search("qwen2.5-0.5b", ["hf"])
    assert "offline" in out.errors["hf"]


def test_cli_search_offline_prints_local_and_one_line_reasons(tiny_model_dir, tmp_path):
    env = dict(os.environ, HF_ENDPOINT=UNREACHABLE, MODELSCOPE_ENDPOINT=UNREACHABLE, EZRUNNER_HOME=str(tmp_path))
    p = subprocess.run([EZRUNNER, "search", str(tiny_model_dir)], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    assert str(tiny_model_dir.resolve()) in p.stdout
    assert "hf: unavailable: cannot resolve no-such-host.invalid" in p.stdout
    assert "modelscope: unavailable:" in p.stdout
    assert "Traceback" not in p.stdout + p.stderr


# ------------------------------------------------------------------- details

def test_hf_details_report_everything(hub_env):
    d = discovery.model_details("Qwen/Qwen2.5-0.5B-Instruct")
    x = d.to_dict()
    assert x["source"] == "hf"
    assert x["revision"] == "7ae557604adf67be50417f59c2c2f167def9a775"
    assert x["weight_format"] == "safetensors"
    assert x["weight_files"] == [{"path": "model.safetensors", "size": 988097824, "format": "safetensors"}]
    assert x["weights_total_bytes"] == 988097824
    assert x["architecture"] == "Qwen2ForCausalLM"
    assert x["parameters"] == 494032768 and x["parameters_source"] == "hub-metadata"
    assert (x["dtype"], x["context_length"]) == ("bfloat16", 32768)
    assert (x["num_hidden_layers"], x["num_attention_heads"], x["num_key_value_heads"], x["head_dim"]) == (24, 14, 2, 64)
    assert x["num_experts"] is None
    assert x["gated"] is False and x["trust_remote_code"] is False
    # model_info was asked with file metadata; config.json read at the exact sha
    paths = [r["path"] for r in _Replay.log]
    assert "/api/models/Qwen/Qwen2.5-0.5B-Instruct" in paths
    assert "/Qwen/Qwen2.5-0.5B-Instruct/resolve/7ae557604adf67be50417f59c2c2f167def9a775/config.json" in paths
    info_req = next(r for r in _Replay.log if r["path"] == "/api/models/Qwen/Qwen2.5-0.5B-Instruct")
    assert info_req["query"].get("blobs", [""])[0].lower() == "true"


def test_hf_details_take_the_hubs_safetensors_metadata_of_a_quantized_checkpoint(hub_env):
    # The FP8 checkpoint's model info leaves the safetensors counts to expand=["safetensors"]:
    # the details ask for them, and the plan sizes the weights by the stored dtypes.
    from ezrunner.core import hardware
    from ezrunner.core.plan import make_plan

    d = discovery.model_details("Qwen/Qwen3-32B-FP8")
    by_dtype = {"BF16": 1556501504, "F8_E4M3": 31205621760, "F32": 1904640}
    assert (d.parameters_source, d.parameters_by_dtype, d.parameters) == ("hub-metadata", by_dtype, sum(by_dtype.values()))
    asked = [r["query"].get("expand") for r in _Replay.log if r["path"].startswith("/api/models/Qwen/Qwen3-32B-FP8")]
    assert asked[0] is None and asked[-1] == ["safetensors"]
    p = make_plan(d, hardware.preset_profile("H200", 1, ram_gib=256))
    stored = 1556501504 * 2 + 31205621760 + 1904640 * 4  # bf16 rest, fp8 weights, fp32 block scales
    assert p.weights_bytes == stored == d.weights_total_bytes
    assert (p.sources["weights"], p.sources["parameters"], p.quantization) == ("hub-metadata", "hub-metadata", "fp8")


def test_hf_details_gated_without_token(hub_env):
    d = discovery.model_details("meta-llama/Llama-3.1-8B-Instruct")
    assert d.gated == "manual"
    assert d.config is None and any("HF_TOKEN" in n for n in d.notes)
    assert d.weight_format == "safetensors" and len(d.weight_files) == 4
    assert d.weights_total_bytes == 4976698672 + 4999802720 + 4915916176 + 1168138808
    assert [f.path for f in d.files if f.format == "pytorch"] == ["original/consolidated.00.pth"]
    assert d.parameters == 8030261248


def test_hf_details_gated_with_token(hub_env, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_testtoken123")
    d = discovery.model_details("meta-llama/Llama-3.1-8B-Instruct")
    assert d.config is not None and d.config.num_key_value_heads == 8


def test_hf_unknown_model_is_usage_error_naming_it(hub_env):
    with pytest.raises(UsageError) as e:
        discovery.model_details("nobody/no-such-model")
    assert "nobody/no-such-model" in e.value.message and e.value.exit_code == 2
    assert e.value.hint


def test_modelscope_details(hub_env):
    d = discovery.model_details("ms:Qwen/Qwen2.5-0.5B-Instruct")
    assert d.source == "modelscope"
    assert [f.path for f in d.weight_files] == ["model.safetensors"]
    assert d.weights_total_bytes == 988097824
    # ModelScope's model info has no per-dtype tensor counts: config.json is counted as the plan counts it
    assert d.config is not None and d.parameters == 494032768 and d.parameters_source == "transformers-meta"


def test_local_details_of_the_demo_model(tiny_model_dir):
    from ezrunner.core.demo_model import PRESETS

    d = discovery.model_details(str(tiny_model_dir))
    assert d.source == "local" and d.path == str(tiny_model_dir.resolve())
    assert d.parameters == PRESETS["tiny"].parameter_count()
    assert d.parameters_source == "safetensors-headers"
    assert d.parameters_by_dtype == {"BF16": PRESETS["tiny"].parameter_count()}
    # the config count agrees with the headers
    from ezrunner.core import modelinfo, paramcount

    assert paramcount.config_count(d.config).total == d.parameters == sum(modelinfo.count_parts(d.config).values())


def test_missing_local_folder_is_one_line_usage_error(tmp_path):
    with pytest.raises(UsageError) as e:
        discovery.model_details(str(tmp_path / "nope"))
    assert "nope" in e.value.message and e.value.exit_code == 2


def test_config_missing_key_names_it(tmp_path, tiny_model_dir):
    d = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    del cfg["num_attention_heads"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UsageError) as e:
        discovery.model_details(str(d))
    assert "num_attention_heads" in e.value.message


def test_cli_info_json(hub_server, tmp_path):
    env = dict(os.environ, HF_ENDPOINT=hub_server, HF_HUB_CACHE=str(tmp_path / "c"), EZRUNNER_HOME=str(tmp_path))
    env.pop("HF_TOKEN", None)
    p = subprocess.run([EZRUNNER, "search", "--info", "Qwen/Qwen2.5-0.5B-Instruct", "--json"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    x = json.loads(p.stdout)
    assert x["parameters"] == 494032768 and x["revision"].startswith("7ae5576")


def test_cli_unknown_model_exit_2_one_line(hub_server, tmp_path):
    env = dict(os.environ, HF_ENDPOINT=hub_server, HF_HUB_CACHE=str(tmp_path / "c"), EZRUNNER_HOME=str(tmp_path))
    p = subprocess.run([EZRUNNER, "search", "--info", "nobody/no-such-model"], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert lines[0].startswith("ezrunner: error:") and "nobody/no-such-model" in lines[0]
    assert lines[1].startswith("hint:") and "Traceback" not in p.stderr


def test_cli_missing_path_exit_2(tmp_path):
    p = subprocess.run([EZRUNNER, "plan", str(tmp_path / "missing-model"), "--cpu-only", "--ram", "8"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "missing-model" in p.stderr.splitlines()[0] and "Traceback" not in p.stderr


# -------------------------------------------------------------------- caches

def _make_hf_cache(root: Path, repo_id: str, src: Path, sha: str = "a" * 40) -> Path:
    """The layout huggingface_hub writes: blobs/, snapshots/<sha>/ with symlinks, refs/main."""
    import hashlib

    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    snap = repo / "snapshots" / sha
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for f in sorted(src.iterdir()):
        if f.is_file():
            data = f.read_bytes()
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    return snap


def test_hf_cache_and_modelscope_cache_are_listed(monkeypatch, tmp_path, tiny_model_dir):
    hf = tmp_path / "hf-cache"
    snap = _make_hf_cache(hf, "acme/tiny-llama", tiny_model_dir)
    ms = tmp_path / "ms-cache"
    shutil.copytree(tiny_model_dir, ms / "models" / "acme" / "tiny___llama-ms")
    monkeypatch.setenv("HF_HUB_CACHE", str(hf))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(ms))
    out = discovery.search("tiny", ["local"])
    got = {(r.source, r.id) for r in out.results}
    assert ("hf-cache", "acme/tiny-llama") in got
    assert ("modelscope-cache", "acme/tiny.llama-ms") in got
    hf_hit = next(r for r in out.results if r.source == "hf-cache")
    assert hf_hit.path == str(snap)


def test_details_fall_back_to_hf_cache_when_hub_unreachable(monkeypatch, tmp_path, tiny_model_dir):
    hf = tmp_path / "hf-cache"
    _make_hf_cache(hf, "acme/tiny-llama", tiny_model_dir, sha="b" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(hf))
    monkeypatch.setenv("HF_ENDPOINT", UNREACHABLE)
    d = discovery.model_details("acme/tiny-llama")
    assert d.source == "hf-cache" and d.revision == "b" * 40
    assert any("not reachable" in n for n in d.notes)
    # not cached and unreachable: an error (exit 1, not bad input) naming the model and the reason
    with pytest.raises(EzError) as e:
        discovery.model_details("acme/other")
    assert not isinstance(e.value, UsageError) and e.value.exit_code == 1
    assert "acme/other" in e.value.message and "not reachable" in e.value.message


def test_modelscope_unknown_model_is_usage_error(hub_env):
    with pytest.raises(UsageError) as e:
        discovery.model_details("nobody/no-such-model", source="modelscope")
    assert "nobody/no-such-model" in e.value.message and "ModelScope" in e.value.message


def test_unknown_source_names_the_flag():
    with pytest.raises(UsageError, match="--source"):
        discovery.search("x", ["civitai"])


def test_modelscope_search_keeps_torch_out(hub_server, tmp_path):
    # modelscope.hub.api imports torch through its logger; the TUI process must not pay for that.
    # transformers is made unimportable, as in the light install: the details then count
    # config.json with the structural estimate, and nothing pulls torch in.
    code = (
        "import sys\n"
        "sys.modules['transformers'] = None\n"
        "from ezrunner.core import discovery\n"
        "out = discovery.search('qwen2.5-0.5b', ['modelscope'], 5)\n"
        "d = discovery.model_details('ms:Qwen/Qwen2.5-0.5B-Instruct')\n"
        "print(len(out.results), sorted(out.errors), d.parameters, d.parameters_source, 'torch' in sys.modules)\n"
    )
    env = dict(os.environ, MODELSCOPE_ENDPOINT=hub_server, MODELSCOPE_CACHE=str(tmp_path), EZRUNNER_HOME=str(tmp_path))
    import sys

    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["2", "[]", "494032768", "config-estimate", "False"]


@pytest.mark.parametrize("layout", ["hub/acme/tiny___llama", "models/acme--tiny___llama", "acme/tiny___llama"])
def test_modelscope_cache_layouts(monkeypatch, tmp_path, tiny_model_dir, layout):
    shutil.copytree(tiny_model_dir, tmp_path / "ms" / layout)
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "none"))
    out = discovery.search("tiny.llama", ["local"])
    assert [(r.source, r.id) for r in out.results] == [("modelscope-cache", "acme/tiny.llama")]


def test_hub_that_keeps_failing_hits_the_deadline_quietly(hub_env, capfd):
    # 503s make the hub client retry with back-off (about 23 s); the deadline cuts it,
    # and its "Retrying in ..." log lines stay off stderr (they would tear through the TUI).
    t0 = time.monotonic()
    out = discovery.search("server-error", ["hf"], cfg=HubConfig(timeout=2))
    assert time.monotonic() - t0 < 6
    assert "within 2s" in out.errors["hf"]
    time.sleep(1.2)  # let the abandoned worker log its next retry, if it would
    err = capfd.readouterr().err
    assert "Retrying" not in err and "thrown while requesting" not in err


# ------------------------------------------------------------ ModelRef, HubConfig

def test_parse_model_ref(tmp_path, tiny_model_dir):
    from ezrunner.core.hubs import ModelRef, parse_model_ref

    assert parse_model_ref("Qwen/Qwen2.5-0.5B") == ModelRef("hf", "Qwen/Qwen2.5-0.5B")
    assert parse_model_ref(" gpt2 ", revision="main") == ModelRef("hf", "gpt2", "main")
    for text in ("modelscope:Qwen/Qwen2.5-0.5B", "ms:Qwen/Qwen2.5-0.5B", "MS://Qwen/Qwen2.5-0.5B"):
        assert parse_model_ref(text) == ModelRef("modelscope", "Qwen/Qwen2.5-0.5B")
    assert parse_model_ref("Qwen/Qwen2.5-0.5B", "modelscope").source == "modelscope"
    assert parse_model_ref(str(tiny_model_dir)) == ModelRef("local", str(tiny_model_dir.resolve()))
    ref = ModelRef("modelscope", "Qwen/Qwen2.5-0.5B")
    assert str(ref) == "Qwen/Qwen2.5-0.5B" and parse_model_ref(ref.text) == ref
    assert parse_model_ref(ref) is ref


@pytest.mark.parametrize(("text", "source", "message"), [
    ("", "auto", "no model given"),
    ("./nope", "auto", "model folder not found: ./nope"),
    ("Qwen/Qwen2.5", "local", "model folder not found"),
    ("org/model$(id)", "auto", "not a model id or folder"),
    ("org/a--b", "auto", "not a valid model id: 'org/a--b'"),
    ("Qwen/Qwen2.5", "civitai", "--source: unknown source 'civitai'"),
])
def test_bad_model_refs_are_usage_errors(text, source, message):
    from ezrunner.core.hubs import parse_model_ref

    with pytest.raises(UsageError) as e:
        parse_model_ref(text, source)
    assert message in e.value.message and e.value.exit_code == 2


def test_model_ref_validates_on_construction():
    from ezrunner.core.hubs import ModelRef

    with pytest.raises(UsageError, match="not a valid model id"):
        ModelRef("modelscope", "modelscope:Qwen/Qwen2.5-0.5B")
    with pytest.raises(UsageError, match="--revision: not a valid revision"):
        ModelRef("hf", "gpt2", "main\nRUN id")


def test_hub_config_reads_the_environment_at_call_time(monkeypatch):
    cfg = HubConfig()
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.example/")
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", "ms.example")
    assert (cfg.hf_url(), cfg.hf_token(), cfg.ms_url()) == ("http://mirror.example", "hf_x", "https://ms.example")
    given = HubConfig(hf_endpoint="http://a", ms_endpoint="http://b", token="t")
    assert (given.hf_url(), given.hf_token(), given.ms_url()) == ("http://a", "t", "http://b")


def test_search_results_carry_their_ref(hub_env, tiny_model_dir):
    from ezrunner.core.hubs import ModelRef

    out = discovery.search("qwen2.5-0.5b", ["hf", "modelscope"], limit=10)
    refs = {r.ref for r in out.results}
    assert ModelRef("hf", "Qwen/Qwen2.5-0.5B-Instruct") in refs
    assert ModelRef("modelscope", "Qwen/Qwen2.5-0.5B-Instruct") in refs
    local = discovery.search(str(tiny_model_dir), ["local"]).results
    assert [r.ref for r in local] == [ModelRef("local", str(tiny_model_dir.resolve()))]
    # a ref is what model_details takes
    assert discovery.model_details(ModelRef("modelscope", "Qwen/Qwen2.5-0.5B-Instruct")).source == "modelscope"


def test_fetching_a_local_folder(tmp_path, tiny_model_dir):
    from ezrunner.core.hubs import ModelRef, fetch

    gen = fetch(ModelRef("local", str(tiny_model_dir)), check=lambda: None)
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value.folder == tiny_model_dir.resolve() and stop.value.value.label_id == tiny_model_dir.name
    with pytest.raises(UsageError, match="--revision applies to hub ids"):
        next(fetch(ModelRef("local", str(tiny_model_dir), "main"), check=lambda: None))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no config.json"):
        next(fetch(ModelRef("local", str(tmp_path / "empty")), check=lambda: None))
