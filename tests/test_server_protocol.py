"""The pydantic protocol models and their one converter keep the 400 answers the hand-written
validation gave (message, param, code), and the routers check in the same order as before.

The expected bodies below were recorded from the field-by-field validator these models
replaced. Runs in-process without a model (a fake engine stands in where one is needed).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import pytest
from ezrunner.images.server import protocol as P
from ezrunner.images.server.app import create_app
from ezrunner.images.server.config import ServerConfig
from ezrunner.images.server.engine import EMBED, GENERATE
from ezrunner.images.server.errors import APIError, parse

M = [{"role": "user", "content": "hi"}]
ROLE_MSG = "must be one of system, developer, user, assistant, tool"
MODELS = {"chat": P.ChatCompletionRequest, "comp": P.CompletionRequest, "emb": P.EmbeddingRequest}

CASES = [
    ("chat", {"messages": M, "max_tokens": 1.5}, "'max_tokens' must be an integer, got float", "max_tokens",
     "invalid_type"),
    ("chat", {"messages": M, "max_tokens": True}, "'max_tokens' must be an integer, got bool", "max_tokens",
     "invalid_type"),
    ("chat", {"messages": M, "temperature": 2.5}, "'temperature' must be between 0 and 2, got 2.5", "temperature",
     "invalid_value"),
    ("chat", {"messages": M, "temperature": 9}, "'temperature' must be between 0 and 2, got 9", "temperature",
     "invalid_value"),
    ("chat", {"messages": M, "top_p": 0}, "'top_p' must be greater than 0", "top_p", "invalid_value"),
    ("chat", {"messages": M, "top_p": False}, "'top_p' must be a number, got bool", "top_p", "invalid_type"),
    ("chat", {"messages": M, "presence_penalty": -2.5}, "'presence_penalty' must be between -2 and 2, got -2.5",
     "presence_penalty", "invalid_value"),
    ("chat", {"messages": M, "n": 2}, "only n=1 is supported, got n=2", "n", "unsupported_value"),
    ("chat", {"messages": M, "n": "1"}, "'n' must be an integer, got str", "n", "invalid_type"),
    ("chat", {"messages": M, "logprobs": True}, "'logprobs' is not supported by this server", "logprobs",
     "unsupported_parameter"),
    ("chat", {"messages": M, "stop": ["a", "b", "c", "d", "e"]}, "'stop' takes at most 4 sequences, got 5", "stop",
     "invalid_value"),
    ("chat", {"messages": M, "stop": [1]}, "'stop' must be a string or a list of strings", "stop", "invalid_type"),
    ("chat", {"messages": M, "stream_options": []}, "'stream_options' must be an object", "stream_options",
     "invalid_type"),
    ("chat", {"messages": M, "stream_options": {"include_usage": "yes"}},
     "'stream_options.include_usage' must be a boolean", "stream_options.include_usage", "invalid_type"),
    ("chat", {"messages": M, "ignore_eos": 1}, "'ignore_eos' must be a boolean, got int", "ignore_eos",
     "invalid_type"),
    ("chat", {"messages": M, "max_completion_tokens": 0}, "'max_completion_tokens' must be at least 1, got 0",
     "max_completion_tokens", "invalid_value"),
    ("chat", {}, "'messages' is a required property", "messages", "missing_required_parameter"),
    ("chat", {"messages": None}, "'messages' must be an array, got NoneType", "messages", "invalid_type"),
    ("chat", {"messages": []}, "'messages' must contain at least one message", "messages", "invalid_value"),
    ("chat", {"messages": ["hi"]}, "'messages[0]' must be an object", "messages[0]", "invalid_type"),
    ("chat", {"messages": [{"content": "x"}]}, f"'messages[0].role' {ROLE_MSG}", "messages[0].role",
     "invalid_value"),
    ("chat", {"messages": [{"role": "wizard", "content": "x"}]}, f"'messages[0].role' {ROLE_MSG}",
     "messages[0].role", "invalid_value"),
    ("chat", {"messages": [M[0], {"role": "user", "content": {"a": 1}}]},
     "'messages[1].content' must be a string or an array of parts", "messages[1].content", "invalid_type"),
    ("chat", {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]}]},
     "'messages[0].content[1]' must be a text part; this server serves a text-only model", "messages[0].content",
     "unsupported_content"),
    # several problems: the first in the old checking order wins (messages, then the sampling fields in order)
    ("chat", {"messages": [{"role": "wizard"}], "max_tokens": "ten", "stop": 5}, f"'messages[0].role' {ROLE_MSG}",
     "messages[0].role", "invalid_value"),
    ("chat", {"messages": M, "max_tokens": "ten", "stop": 5}, "'max_tokens' must be an integer, got str",
     "max_tokens", "invalid_type"),
    ("comp", {}, "'prompt' is a required property", "prompt", "missing_required_parameter"),
    ("comp", {"prompt": ["a", "b"]}, "'prompt' must be a string (a single prompt per request)", "prompt",
     "invalid_type"),
    ("comp", {"prompt": "a", "echo": True}, "'echo' is not supported by this server", "echo",
     "unsupported_parameter"),
    ("comp", {"prompt": 3, "echo": True}, "'prompt' must be a string (a single prompt per request)", "prompt",
     "invalid_type"),
    ("comp", {"prompt": "a", "suffix": "z", "max_tokens": 0}, "'suffix' is not supported by this server", "suffix",
     "unsupported_parameter"),
    ("emb", {}, "'input' is a required property", "input", "missing_required_parameter"),
    ("emb", {"input": []}, "'input' must not be empty", "input", "invalid_value"),
    ("emb", {"input": [1, 2]}, "'input' must be a string or a list of strings", "input", "invalid_type"),
    ("emb", {"input": ["a"] * 2049}, "'input' takes at most 2048 items, got 2049", "input", "invalid_value"),
    ("emb", {"input": "a", "encoding_format": "int8"}, "'encoding_format' must be 'float' or 'base64'",
     "encoding_format", "invalid_value"),
    ("emb", {"input": "a", "dimensions": 8}, "'dimensions' is not supported by this model", "dimensions",
     "unsupported_parameter"),
]


@pytest.mark.parametrize(("kind", "body", "message", "param", "code"), CASES,
                         ids=[f"{c[0]}-{c[3]}-{i}" for i, c in enumerate(CASES)])
def test_validation_errors_keep_the_openai_400(kind, body, message, param, code):
    with pytest.raises(APIError) as exc:
        parse(MODELS[kind], body)
    assert exc.value.status == 400
    assert exc.value.body() == {"error": {"message": message, "type": "invalid_request_error", "param": param,
                                          "code": code}}


def test_valid_requests_normalise_as_before():
    chat = parse(P.ChatCompletionRequest, {
        "messages": [{"role": "developer", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                     {"role": "assistant", "content": None, "name": "x"}],
        "max_tokens": 9, "max_completion_tokens": 3, "presence_penalty": None, "stop": ["", "x"], "logprobs": 0,
        "stream_options": {"include_usage": True}, "unknown": {"ignored": True}})
    assert [m.for_template() for m in chat.messages] == [{"role": "system", "content": "ab"},
                                                         {"role": "assistant", "content": ""}]
    assert (chat.token_limit, chat.presence_penalty, chat.stop, chat.include_usage) == (3, 0.0, ["x"], True)
    assert chat.temperature is None and chat.stream is None
    # the legacy API has no max_completion_tokens: ignored, even when it is nonsense
    comp = parse(P.CompletionRequest, {"prompt": ["one"], "max_tokens": 4, "max_completion_tokens": "x",
                                       "temperature": 1, "stop": "s"})
    assert (comp.prompt, comp.token_limit, comp.temperature, comp.stop) == ("one", 4, 1.0, ["s"])
    emb = parse(P.EmbeddingRequest, {"input": "a", "encoding_format": "base64"})
    assert (emb.input, emb.encoding_format) == (["a"], "base64")


# ------------------------------------------------------------------------------------------ through the app

def _fake_engine(capability: str):
    return SimpleNamespace(capability=capability, max_model_len=64, device="cpu",
                           model=SimpleNamespace(dtype="torch.float32"), is_alive=lambda: True)


def _client(*, engine=None, api_key: str | None = None, served: str = "fake"):
    app = create_app(ServerConfig(model_dir="/nonexistent", served_model_name=served, api_key=api_key), load=False)
    if engine is not None:
        app.state.engine, app.state.ready = engine, True
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_routers_check_auth_then_readiness_then_model_capability_and_fields():
    chat = "/v1/chat/completions"
    async with _client(api_key="k") as c:  # no engine yet: auth first, then 503 while loading
        r = await c.post(chat, json={})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = await c.post(chat, json={}, headers={"X-Api-Key": "k"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_loading"
        assert r.headers["retry-after"] == "2"
        assert (await c.get("/health")).json() == {"status": "ok", "phase": "starting"}
    async with _client(engine=_fake_engine(EMBED)) as c:
        r = await c.post(chat, json={"model": "other"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        r = await c.post(chat, json={"model": 7})
        assert r.status_code == 400 and r.json()["error"]["param"] == "model"
        # the capability is checked before the fields
        r = await c.post(chat, json={"model": "fake", "messages": "nonsense"})
        assert r.json()["error"] == {
            "message": "/v1/chat/completions needs text generation, but 'fake' is an embedding model.",
            "type": "invalid_request_error", "param": "model", "code": "capability_not_supported"}
        r = await c.post("/v1/embeddings", json={"input": [], "dimensions": 3})
        assert r.status_code == 400 and r.json()["error"]["param"] == "input"
    async with _client(engine=_fake_engine(GENERATE)) as c:
        r = await c.post("/v1/completions", content=json.dumps({"prompt": "x", "top_p": 0}).encode())
        assert r.status_code == 400
        assert r.content == (b'{"error":{"message":"\'top_p\' must be greater than 0",'
                             b'"type":"invalid_request_error","param":"top_p","code":"invalid_value"}}')


async def test_model_cards_and_readiness_without_a_model():
    async with _client(engine=_fake_engine(GENERATE)) as c:
        cards = (await c.get("/v1/models")).json()
        assert cards["object"] == "list"
        assert cards["data"][0] | {"created": 0} == {
            "id": "fake", "object": "model", "created": 0, "owned_by": "ezrunner", "capability": "generate",
            "max_model_len": 64, "device": "cpu", "dtype": "float32"}
        assert (await c.get("/v1/models/fake")).json()["id"] == "fake"
        assert (await c.get("/ready")).json() == {"status": "ready", "model": "fake"}
    async with _client() as c:
        card = (await c.get("/v1/models")).json()["data"][0]
        assert set(card) == {"id", "object", "created", "owned_by"}  # nothing about an engine not loaded yet
