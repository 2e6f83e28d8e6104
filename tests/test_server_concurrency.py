"""Concurrency: requests share forward passes, a disconnect cancels, the queue is bounded."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import openai
from support_server import API_KEY, assert_openai_error

MSG = [{"role": "user", "content": "Tell me about the bundle."}]


def _multi_sequence_passes(m: dict) -> float:
    """Forward passes that held more than one sequence, from the batch-size histogram."""
    return m["ezrunner_batch_sequences_count"] - m['ezrunner_batch_sequences_bucket{le="1.0"}']


async def _sixteen_streams(base_url: str) -> list[tuple[int, str, int]]:
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=API_KEY, max_retries=0, timeout=120)

    async def one(i: int):
        stream = await client.chat.completions.create(
            model="tiny-chat", messages=[{"role": "user", "content": f"request {i}: {MSG[0]['content']}"}],
            max_tokens=24, stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
        n_chunks, finish, usage = 0, None, None
        async for chunk in stream:
            if chunk.choices:
                n_chunks += 1
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage:
                usage = chunk.usage.completion_tokens
        return n_chunks, finish, usage

    try:
        return await asyncio.gather(*(one(i) for i in range(16)))
    finally:
        await client.close()


def test_sixteen_streams_complete_and_share_forward_passes(gen_server):
    before = gen_server.metrics()
    results = asyncio.run(_sixteen_streams(gen_server.base_url))
    after = gen_server.metrics()
    assert len(results) == 16
    for n_chunks, finish, usage in results:
        assert finish == "length" and usage == 24 and n_chunks >= 2
    multi = _multi_sequence_passes(after) - _multi_sequence_passes(before)
    assert multi > 0, "no forward pass held more than one sequence"
    assert after["ezrunner_batch_sequences_max"] > 1
    # 16 x 24 tokens took far fewer forward passes than 16 x 24 one-sequence steps
    passes = after["ezrunner_batch_sequences_count"] - before["ezrunner_batch_sequences_count"]
    assert passes < 16 * 24 / 2, passes
    assert after["ezrunner_requests_running"] == 0 and after["ezrunner_requests_waiting"] == 0


def _wait_for(predicate, timeout: float = 20.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


def test_client_disconnect_cancels_the_generation(gen_server):
    before = gen_server.metrics()
    max_tokens = 2000
    body = {"model": "tiny-chat", "messages": MSG, "max_tokens": max_tokens, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", f"{gen_server.base_url}/v1/chat/completions", json=body,
                      headers=gen_server.headers, timeout=60) as r:
        assert r.status_code == 200
        got = 0
        for line in r.iter_lines():
            if line.startswith("data: "):
                got += 1
                if got == 3:
                    break
    # the connection is closed: the server must notice, cancel and free the slot
    after = _wait_for(lambda: (m := gen_server.metrics())["ezrunner_requests_cancelled_total"]
                      > before["ezrunner_requests_cancelled_total"] and m["ezrunner_requests_running"] == 0 and m)
    generated = after["ezrunner_completion_tokens_total"] - before["ezrunner_completion_tokens_total"]
    assert 0 < generated < max_tokens
    # and it stays stopped: no more forward passes happen while nothing is running
    passes = gen_server.metrics()["ezrunner_batch_sequences_count"]
    time.sleep(1.0)
    assert gen_server.metrics()["ezrunner_batch_sequences_count"] == passes
    assert "cancelled after" in gen_server.log()


def test_full_queue_answers_429_with_retry_after(queue_server):
    url = f"{queue_server.base_url}/v1/chat/completions"
    long_body = {"model": "tiny-q", "messages": MSG, "max_tokens": 2000, "stream": True, "ignore_eos": True}
    stop = threading.Event()
    waiting_result: dict = {}

    def hold_stream(result: dict | None):
        try:
            with httpx.stream("POST", url, json=long_body, timeout=120) as r:
                if result is not None:
                    result["status"] = r.status_code
                for _ in r.iter_lines():
                    if stop.is_set():
                        break
        except httpx.HTTPError as exc:
            if result is not None:
                result["error"] = repr(exc)

    running = {}
    a = threading.Thread(target=hold_stream, args=(running,), daemon=True)
    a.start()
    _wait_for(lambda: queue_server.metrics()["ezrunner_requests_running"] == 1)
    b = threading.Thread(target=hold_stream, args=(waiting_result,), daemon=True)
    b.start()
    _wait_for(lambda: queue_server.metrics()["ezrunner_requests_waiting"] == 1)
    try:
        r = httpx.post(url, json={"model": "tiny-q", "messages": MSG, "max_tokens": 2}, timeout=30)
        assert_openai_error(r, 429, "server_busy")
        assert int(r.headers["Retry-After"]) >= 1
        assert queue_server.metrics()["ezrunner_requests_rejected_total"] >= 1
    finally:
        stop.set()
        a.join(timeout=60)
        b.join(timeout=60)
    assert running.get("status") == 200
    assert waiting_result.get("status") == 200  # the waiting request was served once the slot freed
    _wait_for(lambda: (m := queue_server.metrics())["ezrunner_requests_running"] == 0
              and m["ezrunner_requests_waiting"] == 0)


def test_non_streaming_client_that_gives_up_is_cancelled_too(gen_server):
    before = gen_server.metrics()
    body = {"model": "tiny-chat", "messages": MSG, "max_tokens": 2000, "ignore_eos": True}
    _wait_for(lambda: gen_server.metrics()["ezrunner_requests_running"] == 0)
    try:
        httpx.post(f"{gen_server.base_url}/v1/chat/completions", json=body, headers=gen_server.headers,
                   timeout=httpx.Timeout(30, read=0.3))
        raise AssertionError("expected the client to time out")
    except httpx.ReadTimeout:
        pass
    after = _wait_for(lambda: (m := gen_server.metrics())["ezrunner_requests_cancelled_total"]
                      > before["ezrunner_requests_cancelled_total"] and m["ezrunner_requests_running"] == 0 and m)
    assert after.get('ezrunner_requests_total{endpoint="/v1/chat/completions",status="499"}', 0) >= 1
    generated = after["ezrunner_completion_tokens_total"] - before["ezrunner_completion_tokens_total"]
    assert generated < 2000
