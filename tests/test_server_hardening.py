"""Issue 14, server side: hostile bodies, parameters that would be silently ignored, the API
key, big prompts. Requests that a hostile client sends are 400s in the OpenAI error shape,
never a 500 with a traceback. In-process where the attack needs no model; over HTTP against
the real server (the tiny Llama) where the tokenizer or the HTTP layer is part of the attack."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from types import SimpleNamespace

import httpx
import pytest
from ezrunner.images.server import protocol as P
from ezrunner.images.server.app import create_app
from ezrunner.images.server.cli import add_arguments, config_from_args, precheck
from ezrunner.images.server.config import LoadError, ServerConfig
from ezrunner.images.server.errors import APIError, parse
from support_server import (
    RecordingTokenizer,
    app_with_engine,
    assert_openai_error,
    fake_generation_engine,
)

CHAT = "/v1/chat/completions"
M = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def http(gen_server):
    with httpx.Client(base_url=gen_server.base_url, headers=gen_server.headers, timeout=120) as c:
        yield c


# ------------------------------------------------------------------------------------------ 1. hostile JSON

SURROGATE = '"\\ud800"'  # the JSON text of a string holding one lone UTF-16 surrogate


@pytest.mark.parametrize(("path", "template"), [
    (CHAT, '{"model": "tiny-chat", "max_tokens": 2, "messages": [{"role": "user", "content": %s}]}'),
    (CHAT, '{"model": "tiny-chat", "max_tokens": 2, "messages": [{"role": "user", "content": '
           '[{"type": "text", "text": %s}]}]}'),
    ("/v1/completions", '{"model": "tiny-chat", "max_tokens": 2, "prompt": %s}'),
    (CHAT, '{"model": %s, "messages": [{"role": "user", "content": "hi"}]}'),
    ("/v1/completions", '{"model": "tiny-chat", "prompt": "hi", "stop": [%s]}'),
    ("/v1/completions", '{"model": "tiny-chat", "prompt": "hi", "user": {%s: 1}}'),
])
def test_a_lone_surrogate_is_a_400(http, path, template):
    r = http.post(path, content=(template % SURROGATE).encode(), headers={"content-type": "application/json"})
    err = assert_openai_error(r, 400, "invalid_json")
    assert "surrogate" in err["message"]


def test_a_paired_surrogate_escape_is_fine(http):
    body = '{"model": "tiny-chat", "max_tokens": 2, "prompt": "smile \\ud83d\\ude00"}'
    r = http.post("/v1/completions", content=body.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("depth", [900, 100_000])
def test_a_deeply_nested_body_is_a_400(http, depth):
    """Too deep for the parser: 400 invalid_json wherever it is. Deep but parseable: answered
    like any other value there (ignored in an unknown field, refused as content)."""
    nested = "[" * depth + "]" * depth
    head = '{"model": "tiny-chat", "max_tokens": 2, "messages": ' + json.dumps(M)
    cases = [(nested, 400), (head + ', "x": ' + nested + "}", 400 if depth > 1000 else 200),
             ('{"model": "tiny-chat", "messages": [{"role": "user", "content": ' + nested + "}]}", 400)]
    for body, status in cases:
        r = http.post(CHAT, content=body.encode(), headers={"content-type": "application/json"})
        if status == 200:
            assert r.status_code == 200, r.text
        else:
            assert_openai_error(r, 400, "invalid_json" if depth > 1000 else None)


# ------------------------------------------------------------------------------------------ 2. parameters

REFUSED = [
    ("chat", {"logit_bias": {"50256": -100}}, "logit_bias"),
    ("chat", {"logprobs": True, "top_logprobs": 2}, "logprobs"),
    ("chat", {"top_logprobs": 2}, "top_logprobs"),
    ("chat", {"response_format": {"type": "json_object"}}, "response_format"),
    ("chat", {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
     "response_format"),
    ("chat", {"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ("chat", {"tool_choice": "required"}, "tool_choice"),
    ("chat", {"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice"),
    ("chat", {"functions": [{"name": "f"}]}, "functions"),
    ("chat", {"function_call": "auto"}, "function_call"),
    ("chat", {"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ("chat", {"modalities": ["text", "audio"]}, "modalities"),
    ("chat", {"prediction": {"type": "content", "content": "x"}}, "prediction"),
    ("chat", {"reasoning_effort": "high"}, "reasoning_effort"),
    ("chat", {"verbosity": "low"}, "verbosity"),
    ("chat", {"web_search_options": {}}, "web_search_options"),
    ("chat", {"n": 3}, "n"),
    ("comp", {"best_of": 2}, "best_of"),
    ("comp", {"logprobs": 1}, "logprobs"),
    ("comp", {"logit_bias": {"1": 5}}, "logit_bias"),
    ("comp", {"echo": True}, "echo"),
    ("comp", {"suffix": "x"}, "suffix"),
]
INVALID = [
    ("chat", {"response_format": "json"}, "response_format", "invalid_type"),
    ("chat", {"response_format": {"type": "yaml"}}, "response_format.type", "invalid_value"),
    ("chat", {"response_format": {}}, "response_format.type", "invalid_value"),
    ("chat", {"logit_bias": [1, 2]}, "logit_bias", "invalid_type"),
    ("chat", {"tools": "f"}, "tools", "invalid_type"),
    ("comp", {"best_of": "two"}, "best_of", "invalid_type"),
]
ACCEPTED = [  # the defaults, spelled out, and fields that do not change the output
    {"logit_bias": {}, "logprobs": False, "top_logprobs": None, "response_format": {"type": "text"}, "tools": [],
     "tool_choice": "none", "functions": [], "function_call": "none", "parallel_tool_calls": True,
     "modalities": ["text"], "n": 1, "user": "u-1", "metadata": {"k": "v"}, "store": False,
     "service_tier": "auto", "safety_identifier": "s", "prompt_cache_key": "k", "audio": None},
]
KINDS = {"chat": (P.ChatCompletionRequest, {"messages": M}), "comp": (P.CompletionRequest, {"prompt": "hi"})}


@pytest.mark.parametrize(("kind", "extra", "param"), REFUSED, ids=[f"{c[0]}-{c[2]}" for c in REFUSED])
def test_parameters_this_server_cannot_honour_are_refused_by_name(kind, extra, param):
    model, base = KINDS[kind]
    with pytest.raises(APIError) as exc:
        parse(model, {**base, **extra})
    err = exc.value.body()["error"]
    assert exc.value.status == 400 and err["param"] == param, err
    assert err["code"] in ("unsupported_parameter", "unsupported_value"), err
    assert param in err["message"] or param == "n", err


@pytest.mark.parametrize(("kind", "extra", "param", "code"), INVALID, ids=[f"{c[0]}-{c[2]}" for c in INVALID])
def test_malformed_parameters_are_invalid(kind, extra, param, code):
    model, base = KINDS[kind]
    with pytest.raises(APIError) as exc:
        parse(model, {**base, **extra})
    assert exc.value.body()["error"]["param"] == param and exc.value.code == code


def test_defaults_and_output_neutral_fields_are_accepted():
    for extra in ACCEPTED:
        parse(P.ChatCompletionRequest, {"messages": M, **extra})
    parse(P.CompletionRequest, {"prompt": "hi", "best_of": 1, "logprobs": None, "echo": False, "user": "u"})
    parse(P.EmbeddingRequest, {"input": "x", "user": "u", "encoding_format": "float"})


def test_json_mode_over_http_is_refused_not_ignored(http):
    r = http.post(CHAT, json={"model": "tiny-chat", "messages": M, "max_tokens": 2,
                              "response_format": {"type": "json_object"}})
    err = assert_openai_error(r, 400, "unsupported_parameter")
    assert err["param"] == "response_format"


# ------------------------------------------------------------------------------------------ 3. the API key


def _config(*argv: str, stdin: str | None = None, monkeypatch=None) -> ServerConfig:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", SimpleNamespace(read=lambda: stdin))
    return config_from_args(parser.parse_args(["/nonexistent", *argv]))


@pytest.mark.parametrize("key", ["ключ-секрет", "caf\u00e9", "two words", "tab\there", "\u200bzero-width"])
def test_a_non_ascii_or_spaced_key_is_refused_at_start(key, monkeypatch, tmp_path):
    monkeypatch.delenv("EZRUNNER_API_KEY", raising=False)
    for argv, env in ((["--api-key", key], None), ([], key)):
        if env is not None:
            monkeypatch.setenv("EZRUNNER_API_KEY", env)
        with pytest.raises(LoadError, match="printable ASCII"):
            _config(*argv)
    (tmp_path / "key").write_text(key + "\n", encoding="utf-8")
    with pytest.raises(LoadError, match="printable ASCII"):
        _config("--api-key-file", str(tmp_path / "key"))


def test_a_non_ascii_key_stops_the_real_server_with_one_line(tiny_model_dir):
    r = subprocess.run([sys.executable, "-m", "ezrunner.images.server", str(tiny_model_dir), "--api-key", "clé"],
                       capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 2, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "printable ASCII" in lines[0] and "clé" not in lines[0], r.stderr


def test_ezrunner_serve_refuses_a_non_ascii_key_as_a_usage_error(tiny_model_dir, tmp_path):
    from conftest import EZRUNNER

    (tmp_path / "key").write_text("clé\n", encoding="utf-8")
    r = subprocess.run([EZRUNNER, "serve", str(tiny_model_dir), "--api-key-file", str(tmp_path / "key")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r
    assert "printable ASCII" in r.stderr and "clé" not in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_the_key_from_a_file_or_stdin(monkeypatch, tmp_path):
    monkeypatch.setenv("EZRUNNER_API_KEY", "from-env")
    (tmp_path / "key").write_text("from-file\n", encoding="utf-8")
    assert _config("--api-key-file", str(tmp_path / "key")).api_key == "from-file"
    assert _config("--api-key-file", "-", stdin="from-stdin\r\n", monkeypatch=monkeypatch).api_key == "from-stdin"
    assert _config().api_key == "from-env"
    with pytest.raises(LoadError, match="empty"):
        (tmp_path / "empty").write_text("\n", encoding="utf-8")
        _config("--api-key-file", str(tmp_path / "empty"))
    with pytest.raises(LoadError, match="cannot read"):
        _config("--api-key-file", str(tmp_path / "missing"))
    with pytest.raises(SystemExit):  # argparse: not both
        _config("--api-key", "a", "--api-key-file", str(tmp_path / "key"))


async def test_ascii_keys_still_authenticate(monkeypatch, tmp_path):
    monkeypatch.delenv("EZRUNNER_API_KEY", raising=False)
    (tmp_path / "key").write_text("sk-Abc_123.~+/=\n", encoding="utf-8")
    config = _config("--api-key-file", str(tmp_path / "key"))
    app = create_app(ServerConfig(model_dir="/x", served_model_name="fake", api_key=config.api_key), load=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        assert (await c.get("/v1/models", headers={"Authorization": "Bearer sk-Abc_123.~+/="})).status_code == 200
        assert (await c.get("/v1/models", headers={"X-Api-Key": "sk-Abc_123.~+/="})).status_code == 200
        assert (await c.get("/v1/models", headers={"Authorization": "Bearer sk-Abc_123.~+/"})).status_code == 401
        r = await c.get("/v1/models", headers=[(b"authorization", "Bearer clé".encode())])
        assert r.status_code == 401


def test_precheck_refuses_a_bad_key_given_programmatically(tiny_model_dir):
    with pytest.raises(LoadError, match="printable ASCII"):
        precheck(ServerConfig(model_dir=str(tiny_model_dir), served_model_name="t", api_key="clé"))


# ------------------------------------------------------------------------------------------ 4. big prompts


async def test_prompts_are_built_and_tokenized_off_the_event_loop():
    tok = RecordingTokenizer()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_with_engine(fake_generation_engine(tok))),
                                 base_url="http://test") as c:
        r = await c.post(CHAT, json={"messages": M, "max_tokens": 64})  # too long: refused after tokenizing
        assert_openai_error(r, 400, "context_length_exceeded")
        r = await c.post("/v1/completions", json={"prompt": "x" * 10, "max_tokens": 64})
        assert_openai_error(r, 400, "context_length_exceeded")
    loop_thread = threading.main_thread().name
    assert tok.threads and loop_thread not in tok.threads, tok.threads


@pytest.mark.parametrize(("path", "body", "param"), [
    (CHAT, {"messages": [{"role": "user", "content": "a" * 10_000}]}, "messages"),
    ("/v1/completions", {"prompt": "a" * 10_000}, "prompt"),
])
async def test_a_prompt_too_long_for_any_tokenization_is_refused_without_tokenizing(path, body, param):
    tok = RecordingTokenizer()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_with_engine(fake_generation_engine(tok))),
                                 base_url="http://test") as c:
        err = assert_openai_error(await c.post(path, json=body), 400, "context_length_exceeded")
    # 64 tokens of at most 7 characters each ('<|eot|>') cannot hold 10,000 characters
    assert tok.calls == 0
    assert err["param"] == param and "64 tokens" in err["message"] and "10000 characters" in err["message"], err


def test_a_3_9_mb_prompt_is_refused_by_its_token_bound(http, gen_server):
    """Too big for any prompt of a 2048-token context: 413 before the body is read. Small
    enough to read but longer than 2048 tokens can hold: 400 before tokenizing."""
    text = "The operator loads the bundle on the air-gapped server. " * 70_000
    for path, body in (("/v1/completions", {"prompt": text[:3_900_000]}),
                       (CHAT, {"messages": [{"role": "user", "content": text[:3_900_000]}]})):
        err = assert_openai_error(http.post(path, json={"model": "tiny-chat", **body}), 413, "request_too_large")
        assert "limit" in err["message"]
    err = assert_openai_error(http.post("/v1/completions", json={"model": "tiny-chat", "prompt": text[:200_000]}),
                              400, "context_length_exceeded")
    assert "2048" in err["message"] and err["param"] == "prompt"
    assert http.get("/health").status_code == 200
