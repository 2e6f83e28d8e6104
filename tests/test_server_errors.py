"""Every error case over raw HTTP: the OpenAI error shape, the right status, never a traceback."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from support_server import FAULT_PROMPT, assert_openai_error

CHAT = "/v1/chat/completions"
MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def http(gen_server):
    with httpx.Client(base_url=gen_server.base_url, headers=gen_server.headers, timeout=60) as c:
        yield c


def test_malformed_json_is_400(http):
    r = http.post(CHAT, content=b'{"model": "tiny-chat", "messages": [', headers={"content-type": "application/json"})
    assert_openai_error(r, 400, "invalid_json")
    r = http.post(CHAT, content=b"[1, 2]", headers={"content-type": "application/json"})
    assert_openai_error(r, 400, "invalid_json")


def test_missing_messages_is_400(http):
    err = assert_openai_error(http.post(CHAT, json={"model": "tiny-chat"}), 400, "missing_required_parameter")
    assert err["param"] == "messages"
    err = assert_openai_error(http.post("/v1/completions", json={"model": "tiny-chat"}), 400)
    assert err["param"] == "prompt"


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"messages": "hello"}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 42}]}, "messages[0].content"),
        ({"max_tokens": "ten"}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": 9}, "temperature"),
        ({"top_p": [1]}, "top_p"),
        ({"stop": 5}, "stop"),
        ({"stream": "yes"}, "stream"),
        ({"seed": 1.5}, "seed"),
        ({"n": 2}, "n"),
        ({"model": 7}, "model"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"frequency_penalty": "high"}, "frequency_penalty"),
    ],
)
def test_wrong_types_and_values_are_400(http, patch, param):
    body = {"model": "tiny-chat", "messages": MSG, "max_tokens": 2, **patch}
    err = assert_openai_error(http.post(CHAT, json=body), 400)
    assert err["param"] == param


def test_prompt_plus_max_tokens_beyond_context_is_400_with_counts(http):
    err = assert_openai_error(http.post(CHAT, json={"model": "tiny-chat", "messages": MSG, "max_tokens": 5000}),
                              400, "context_length_exceeded")
    numbers = [int(n) for n in re.findall(r"\d+", err["message"])]
    assert 2048 in numbers and 5000 in numbers
    # the prompt's token count and the total (prompt + 5000) are both named
    assert any(0 < n < 100 and n + 5000 in numbers for n in numbers), err["message"]
    long_prompt = "bundle " * 3000
    err = assert_openai_error(http.post("/v1/completions", json={"model": "tiny-chat", "prompt": long_prompt}),
                              400, "context_length_exceeded")
    assert "2048" in err["message"]


def test_unknown_model_is_404(http):
    err = assert_openai_error(http.post(CHAT, json={"model": "gpt-4o", "messages": MSG}), 404, "model_not_found")
    assert err["param"] == "model"
    assert_openai_error(http.get("/v1/models/gpt-4o"), 404, "model_not_found")
    assert_openai_error(http.post("/v1/embeddings", json={"model": "nope", "input": "x"}), 404, "model_not_found")


def test_body_over_4_mib_is_413(http):
    big = json.dumps({"model": "tiny-chat", "messages": [{"role": "user", "content": "x" * (4 * 1024 * 1024)}]})
    assert_openai_error(http.post(CHAT, content=big, headers={"content-type": "application/json"}), 413,
                        "request_too_large")

    def chunks():  # no Content-Length: the limit still holds while reading
        for _ in range(5):
            yield b"x" * (1024 * 1024)

    assert_openai_error(http.post(CHAT, content=chunks(), headers={"content-type": "application/json"}), 413,
                        "request_too_large")


def test_missing_or_wrong_api_key_is_401(gen_server):
    url = f"{gen_server.base_url}{CHAT}"
    body = {"model": "tiny-chat", "messages": MSG, "max_tokens": 1}
    assert_openai_error(httpx.post(url, json=body, timeout=30), 401, "invalid_api_key")
    assert_openai_error(httpx.post(url, json=body, headers={"Authorization": "Bearer wrong"}, timeout=30), 401,
                        "invalid_api_key")
    assert_openai_error(httpx.get(f"{gen_server.base_url}/v1/models", timeout=30), 401, "invalid_api_key")
    # health, readiness and metrics stay open for probes
    for path in ("/health", "/ready", "/metrics"):
        assert httpx.get(f"{gen_server.base_url}{path}", timeout=30).status_code == 200


def test_engine_failure_is_500_with_a_request_id_in_the_log(http, gen_server):
    for stream in (False, True):
        body = {"model": "tiny-chat", "messages": [{"role": "user", "content": FAULT_PROMPT}], "max_tokens": 4,
                "stream": stream}
        err = assert_openai_error(http.post(CHAT, json=body), 500, "engine_error")
        rid = re.search(r"request id (\S+?)\)", err["message"]).group(1)
        assert rid.startswith("chatcmpl-")
        log = gen_server.log()
        assert f"request {rid} failed in the engine" in log
    # and the server keeps serving
    ok = http.post(CHAT, json={"model": "tiny-chat", "messages": MSG, "max_tokens": 2})
    assert ok.status_code == 200


def test_unknown_routes_and_methods_use_the_error_shape(http):
    assert_openai_error(http.get("/v1/nothing-here"), 404)
    assert_openai_error(http.get(CHAT), 405)
