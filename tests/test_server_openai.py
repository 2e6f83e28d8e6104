"""The embedded server against the official ``openai`` client (real processes, real models)."""

from __future__ import annotations

import math

import httpx
import openai
import pytest
from support_server import API_KEY, sse_events

GREEDY = {"temperature": 0}
NO_EOS = {"ignore_eos": True}  # vLLM-compatible extra: generate exactly max_tokens


@pytest.fixture(scope="module")
def client(gen_server):
    with openai.OpenAI(base_url=f"{gen_server.base_url}/v1", api_key=API_KEY, max_retries=0, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def chat_prompt_tokens(tokenizer, messages) -> int:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello to the bundle."}]


def test_models_lists_the_served_model(client):
    ids = [m.id for m in client.models.list()]
    assert ids == ["tiny-chat"]
    assert client.models.retrieve("tiny-chat").id == "tiny-chat"
    with pytest.raises(openai.NotFoundError) as exc:
        client.models.retrieve("gpt-4o")
    assert exc.value.body["code"] == "model_not_found"


def test_chat_counts_real_tokens_and_stops_at_length(client, tokenizer):
    r = client.chat.completions.create(model="tiny-chat", messages=MESSAGES, max_tokens=7,
                                       extra_body=NO_EOS, **GREEDY)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 7
    assert r.usage.prompt_tokens == chat_prompt_tokens(tokenizer, MESSAGES)
    assert r.usage.total_tokens == r.usage.prompt_tokens + 7


def test_max_completion_tokens_is_honoured(client):
    r = client.chat.completions.create(model="tiny-chat", messages=MESSAGES, max_completion_tokens=3,
                                       extra_body=NO_EOS)
    assert r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length"


def test_greedy_chat_matches_transformers_generate(client, tiny_model_dir, tokenizer):
    """The batched engine produces what plain model.generate() produces (greedy, same dtype)."""
    import torch
    from transformers import AutoModelForCausalLM

    r = client.chat.completions.create(model="tiny-chat", messages=MESSAGES, max_tokens=12,
                                       extra_body=NO_EOS, **GREEDY)
    dtype = client.models.retrieve("tiny-chat").model_extra["dtype"]  # the server's resolved dtype
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=getattr(torch, dtype)).eval()
    text = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    enc = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=12, min_new_tokens=12, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    expected = tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert r.choices[0].message.content == expected


def test_greedy_is_repeatable_and_eos_finishes_with_stop(client):
    a = client.chat.completions.create(model="tiny-chat", messages=MESSAGES, max_tokens=20, **GREEDY)
    b = client.chat.completions.create(model="tiny-chat", messages=MESSAGES, max_tokens=20, **GREEDY)
    assert a.choices[0].message.content == b.choices[0].message.content
    n = a.usage.completion_tokens
    assert a.choices[0].finish_reason == ("length" if n == 20 else "stop")


def test_stop_sequence_cuts_the_text(client):
    full = client.chat.completions.create(model="tiny-chat", messages=MESSAGES, max_tokens=24,
                                          extra_body=NO_EOS, **GREEDY).choices[0].message.content
    assert full, "the greedy continuation is empty"
    stop = full[len(full) // 2]
    cut = client.chat.completions.create(model="tiny-chat", messages=MESSAGES, max_tokens=24, stop=[stop, "zzzz"],
                                         extra_body=NO_EOS, **GREEDY)
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == full[: full.index(stop)]
    assert cut.usage.completion_tokens < 24


def test_sampling_parameters_are_accepted(client):
    r = client.chat.completions.create(model="tiny-chat", messages=MESSAGES, max_tokens=5, temperature=1.3,
                                       top_p=0.8, seed=7, presence_penalty=0, frequency_penalty=0, n=1,
                                       extra_body=NO_EOS)
    assert r.usage.completion_tokens == 5


def test_seed_repeats_and_penalties_change_the_answer(client):
    def ask(**kw):
        return client.chat.completions.create(model="tiny-chat", messages=MESSAGES, max_tokens=24,
                                              extra_body=NO_EOS, **kw).choices[0].message.content

    seeded = {"temperature": 1.0, "seed": 1234}
    assert ask(**seeded) == ask(**seeded)
    plain = ask(**GREEDY)
    penalized = ask(**GREEDY, frequency_penalty=2.0, presence_penalty=2.0)
    assert penalized != plain
    assert len(set(penalized)) >= len(set(plain))


def test_chat_stream_roles_chunks_usage_and_done(client, gen_server, tokenizer):
    stream = client.chat.completions.create(model="tiny-chat", messages=MESSAGES, max_tokens=9, stream=True,
                                            stream_options={"include_usage": True}, extra_body=NO_EOS, **GREEDY)
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role in (None, "assistant") for c in with_choices[1:])
    assert with_choices[-1].choices[0].finish_reason == "length"
    assert all(c.choices[0].finish_reason is None for c in with_choices[:-1])
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert usage.completion_tokens == 9
    assert usage.prompt_tokens == chat_prompt_tokens(tokenizer, MESSAGES)
    streamed = "".join(c.choices[0].delta.content or "" for c in with_choices)
    whole = client.chat.completions.create(model="tiny-chat", messages=MESSAGES, max_tokens=9,
                                           extra_body=NO_EOS, **GREEDY)
    assert streamed == whole.choices[0].message.content

    # The wire format itself: SSE data lines ending with [DONE]; no usage chunk unless asked.
    body = {"model": "tiny-chat", "messages": MESSAGES, "max_tokens": 4, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", f"{gen_server.base_url}/v1/chat/completions", json=body,
                      headers=gen_server.headers, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r.iter_lines())
    assert events[-1] == "[DONE]"
    assert all("usage" not in e for e in events[:-1])


def test_completions_plain_and_stream(client, tokenizer):
    prompt = "The operator carries the bundle to"
    r = client.completions.create(model="tiny-chat", prompt=prompt, max_tokens=6, extra_body=NO_EOS, **GREEDY)
    assert r.object == "text_completion"
    assert r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == len(tokenizer(prompt)["input_ids"])
    assert r.usage.completion_tokens == 6
    chunks = list(client.completions.create(model="tiny-chat", prompt=prompt, max_tokens=6, stream=True,
                                            stream_options={"include_usage": True}, extra_body=NO_EOS, **GREEDY))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == r.choices[0].text
    assert chunks[-1].usage.completion_tokens == 6
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_embeddings_on_a_chat_model_are_refused(client):
    with pytest.raises(openai.BadRequestError) as exc:
        client.embeddings.create(model="tiny-chat", input="hello")
    assert exc.value.body["code"] == "capability_not_supported"


# ------------------------------------------------------------------------------------------ embeddings


@pytest.fixture(scope="module")
def embed_client(embed_server):
    with openai.OpenAI(base_url=f"{embed_server.base_url}/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c


def _reference_embeddings(model_dir, texts):
    """Independent reference: transformers + the pooling sentence-transformers documents for MiniLM."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    enc = tok(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=1).tolist(), int(enc["attention_mask"].sum())


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_embeddings_match_sentence_transformers_pooling(embed_client, minilm_dir):
    texts = ["The bundle is one tar file.", "Air-gapped servers have no network.", "hello"]
    r = embed_client.embeddings.create(model="minilm", input=texts)  # the client asks for base64
    assert [d.index for d in r.data] == [0, 1, 2]
    assert all(len(d.embedding) == 384 for d in r.data)
    ref, n_tokens = _reference_embeddings(minilm_dir, texts)
    for got, want in zip(r.data, ref, strict=True):
        assert _cos(got.embedding, want) > 0.9999
        assert abs(math.sqrt(sum(x * x for x in got.embedding)) - 1.0) < 1e-4  # Normalize module honoured
    assert r.usage.prompt_tokens == n_tokens
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return
    st = SentenceTransformer(str(minilm_dir), device="cpu").encode(texts)
    for got, want in zip(r.data, st.tolist(), strict=True):
        assert _cos(got.embedding, want) > 0.9999


def test_embeddings_single_string_and_float_format(embed_server, embed_client):
    r = embed_client.embeddings.create(model="minilm", input="just one")
    assert len(r.data) == 1
    raw = httpx.post(f"{embed_server.base_url}/v1/embeddings", timeout=30,
                     json={"model": "minilm", "input": "just one", "encoding_format": "float"}).json()
    assert raw["object"] == "list" and raw["data"][0]["object"] == "embedding"
    assert _cos(raw["data"][0]["embedding"], r.data[0].embedding) > 0.99999


def test_chat_on_an_embedding_model_is_refused(embed_client):
    with pytest.raises(openai.BadRequestError) as exc:
        embed_client.chat.completions.create(model="minilm", messages=MESSAGES)
    assert exc.value.body["code"] == "capability_not_supported"


# ------------------------------------------------------------------------------------------ health & metrics


def test_ready_was_503_until_warm_then_200(gen_server, embed_server):
    for server, name in ((gen_server, "tiny-chat"), (embed_server, "minilm")):
        assert 503 in server.ready_statuses, server.ready_statuses
        assert server.ready_statuses.index(503) < server.ready_statuses.index(200)
        assert set(server.first_not_ready_body["error"]) == {"message", "type", "param", "code"}
        r = httpx.get(f"{server.base_url}/ready", timeout=10)
        assert r.status_code == 200 and r.json()["model"] == name
        assert httpx.get(f"{server.base_url}/health", timeout=10).status_code == 200


def test_metrics_expose_the_required_series(gen_server, client):
    client.chat.completions.create(model="tiny-chat", messages=MESSAGES, max_tokens=3, extra_body=NO_EOS)
    m = gen_server.metrics()
    assert m['ezrunner_requests_total{endpoint="/v1/chat/completions",status="200"}'] >= 1
    assert m["ezrunner_prompt_tokens_total"] > 0
    assert m["ezrunner_completion_tokens_total"] >= 3
    assert m["ezrunner_time_to_first_token_seconds_count"] >= 1
    assert m['ezrunner_e2e_request_latency_seconds_count{endpoint="/v1/chat/completions"}'] >= 1
    assert "ezrunner_requests_running" in m and "ezrunner_requests_waiting" in m
    assert m["ezrunner_batch_sequences_count"] >= 1


def test_many_embedding_inputs_keep_their_order(embed_client):
    texts = [f"sentence number {i}" for i in range(70)]  # more than one internal batch of 64
    r = embed_client.embeddings.create(model="minilm", input=texts)
    assert [d.index for d in r.data] == list(range(70))
    single = embed_client.embeddings.create(model="minilm", input=texts[66]).data[0].embedding
    assert _cos(r.data[66].embedding, single) > 0.9999
