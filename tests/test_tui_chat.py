"""The chat screen: streaming from the real embedded server, stats, regenerate,
clear, transcript, and server errors shown in the conversation (never a crash)."""

from __future__ import annotations

import json

import pytest
from ezrunner.tui.app import EzRunnerApp
from ezrunner.tui.screens.chat import ChatScreen
from support_server import API_KEY, FAULT_PROMPT
from support_tui import chat_url
from textual.widgets import Input, Markdown, Static


async def _open_chat(pilot, app, url, key="", model=""):
    app.action_open_chat(url, key, model)
    await pilot.pause()
    assert isinstance(app.screen, ChatScreen)
    return app.screen


async def _say(pilot, app, text):
    app.screen.query_one("#chat-input", Input).focus()
    await pilot.press(*text, "enter")
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_chat_streams_a_markdown_reply_with_stats(gen_server, size):
    app = EzRunnerApp(show_version=False)
    async with app.run_test(size=size) as pilot:
        screen = await _open_chat(pilot, app, chat_url(gen_server), API_KEY)
        screen.query_one("#chat-max-tokens", Input).value = "12"
        await _say(pilot, app, "Hello")
        roles = [t.role for t in screen.turns]
        assert roles == ["user", "assistant"], [(t.role, t.content) for t in screen.turns]
        reply = screen.turns[-1]
        assert reply.content
        stats = reply.stats
        assert stats.ttft_s is not None and stats.ttft_s > 0
        assert stats.completion_tokens and 0 < stats.completion_tokens <= 12
        assert stats.prompt_tokens and stats.prompt_tokens > 0
        assert stats.tokens_per_s and stats.tokens_per_s > 0
        assert stats.finish_reason in ("stop", "length")
        # the model was discovered from /v1/models and shown
        assert screen.query_one("#chat-model", Input).value == "tiny-chat"
        md = screen.query(".msg-assistant").first(Markdown)
        assert md.source == reply.content
        line = screen.query(".msg-stats").first(Static)
        assert "TTFT" in str(line.render()) and "completion tokens" in str(line.render())
        # the input is unlocked again
        assert not screen.query_one("#chat-input", Input).disabled


async def test_regenerate_clear_and_save_transcript(gen_server, tmp_path):
    app = EzRunnerApp(show_version=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open_chat(pilot, app, chat_url(gen_server), API_KEY, "tiny-chat")
        screen.query_one("#chat-max-tokens", Input).value = "8"
        screen.query_one("#chat-temperature", Input).value = "0"
        await _say(pilot, app, "Hi")
        assert [t.role for t in screen.turns] == ["user", "assistant"]
        first = screen.turns[-1].content

        await pilot.press("ctrl+r")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert [t.role for t in screen.turns] == ["user", "assistant"]
        assert len(screen.query(".msg-assistant")) == 1
        # temperature 0: greedy, so the regenerated reply is the same text
        assert screen.turns[-1].content == first

        target = tmp_path / "out" / "chat.json"
        await pilot.press("ctrl+s")
        await pilot.pause()
        box = app.screen.query_one("#path-input", Input)
        box.value = str(target)
        await pilot.press("enter")
        await pilot.pause()
        data = json.loads(target.read_text())
        assert data["format"] == "ezrunner-chat/1"
        assert data["model"] == "tiny-chat"
        assert data["settings"]["temperature"] == 0.0 and data["settings"]["max_tokens"] == 8
        assert [m["role"] for m in data["messages"]] == ["user", "assistant"]
        assert data["messages"][1]["stats"]["completion_tokens"] > 0
        assert not list(target.parent.glob(".*.part")), "atomic write left a temporary"

        await pilot.press("ctrl+l")
        await pilot.pause()
        assert screen.turns == []
        assert not screen.query(".msg-assistant")


async def test_system_prompt_reaches_the_server(gen_server):
    """A long system prompt makes the prompt token count grow: the setting is sent."""
    app = EzRunnerApp(show_version=False)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _open_chat(pilot, app, chat_url(gen_server), API_KEY, "tiny-chat")
        screen.query_one("#chat-max-tokens", Input).value = "4"
        await _say(pilot, app, "Hi")
        without = screen.turns[-1].stats.prompt_tokens
        await pilot.press("ctrl+l")
        await pilot.pause()
        screen.query_one("#chat-system").text = "You are a terse assistant. " * 8
        await _say(pilot, app, "Hi")
        assert screen.turns[-1].stats.prompt_tokens > without


async def test_wrong_api_key_shows_the_openai_error(gen_server):
    app = EzRunnerApp(show_version=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open_chat(pilot, app, chat_url(gen_server), "wrong-key", "tiny")
        await _say(pilot, app, "Hello")
        assert [t.role for t in screen.turns] == ["user", "error"]
        assert "401" in screen.turns[-1].content
        assert app.errors_shown == []  # shown in the conversation, not as a crash modal
        assert not screen.query_one("#chat-input", Input).disabled


async def test_engine_failure_shows_the_openai_error_and_the_chat_goes_on(gen_server):
    app = EzRunnerApp(show_version=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open_chat(pilot, app, chat_url(gen_server), API_KEY, "tiny-chat")
        screen.query_one("#chat-max-tokens", Input).value = "4"
        await _say(pilot, app, FAULT_PROMPT)
        assert [t.role for t in screen.turns] == ["user", "error"]
        assert "server error 500" in screen.turns[-1].content
        assert "engine_error" in screen.turns[-1].content
        await _say(pilot, app, "hello")
        assert [t.role for t in screen.turns][-2:] == ["user", "assistant"]
        assert screen.turns[-1].content


async def test_server_error_mid_stream_keeps_the_partial_reply(broken_stream_server):
    app = EzRunnerApp(show_version=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open_chat(pilot, app, broken_stream_server)
        await _say(pilot, app, "Hello")
        roles = [t.role for t in screen.turns]
        assert roles == ["user", "assistant", "error"], roles
        assert screen.turns[1].content == "Hello there"
        assert "CUDA out of memory" in screen.turns[2].content
        assert "engine_error" in screen.turns[2].content
        assert app.is_running
        # the conversation goes on after the failure
        await _say(pilot, app, "again")
        assert [t.role for t in screen.turns][-2:] == ["assistant", "error"]


async def test_unreachable_server_is_reported_not_raised():
    app = EzRunnerApp(show_version=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open_chat(pilot, app, "http://127.0.0.1:9/v1", "", "m")
        await _say(pilot, app, "Hello")
        assert [t.role for t in screen.turns] == ["user", "error"]
        assert "cannot reach http://127.0.0.1:9/v1" in screen.turns[-1].content


async def test_bad_temperature_is_refused_without_a_request():
    app = EzRunnerApp(show_version=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open_chat(pilot, app, "http://127.0.0.1:9/v1", "", "m")
        screen.query_one("#chat-temperature", Input).value = "5"
        await _say(pilot, app, "Hello")
        assert [t.role for t in screen.turns] == ["user"]
        assert not screen.streaming
