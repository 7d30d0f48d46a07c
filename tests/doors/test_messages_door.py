"""The Anthropic Messages API door, spoken by the official `anthropic` SDK (what Claude Code sends)."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import pytest

from support.proxies import Providers, Proxy, StartProxy
from trioproxy.testing.emulator import Faults, completion_text

MODEL = "qwen-3-coder"
READ_FILE: dict[str, Any] = {
    "name": "read_file",
    "description": "Read a file from the workspace",
    "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    "cache_control": {"type": "ephemeral"},
}
HELLO = [{"role": "user", "content": "Say hello."}]


def client(proxy: Proxy, key: str = "sk-anything") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=proxy.base_url.removesuffix("/v1"), api_key=key, max_retries=0,
                                    timeout=10.0)


async def test_plain_answer_is_a_message(proxy: Proxy, providers: Providers) -> None:
    message = await client(proxy).messages.create(
        model=MODEL, max_tokens=300, system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=HELLO, thinking={"type": "enabled", "budget_tokens": 1024}, metadata={"user_id": "u1"})

    assert message.type == "message" and message.role == "assistant" and message.model == MODEL
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == completion_text("cerebras")
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == len(completion_text("cerebras").split()) and message.usage.input_tokens > 0
    sent = providers.cerebras.received[-1]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."} and sent["max_tokens"] == 300
    assert "thinking" not in sent and "metadata" not in sent


async def test_stream_delivers_text_and_final_usage(proxy: Proxy) -> None:
    async with client(proxy).messages.stream(model=MODEL, max_tokens=300, messages=HELLO) as stream:
        text = "".join([chunk async for chunk in stream.text_stream])
        final = await stream.get_final_message()

    assert text == completion_text("cerebras")
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


async def test_raw_stream_events_are_in_order(proxy: Proxy) -> None:
    stream = await client(proxy).messages.create(model=MODEL, max_tokens=300, messages=HELLO, stream=True)
    kinds = [event.type async for event in stream]

    assert kinds[:3] == ["message_start", "content_block_start", "content_block_delta"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]


async def test_tool_use_and_tool_result_turn(proxy: Proxy, providers: Providers) -> None:
    first = await client(proxy).messages.create(model=MODEL, max_tokens=300, tools=[READ_FILE],
                                                messages=[{"role": "user", "content": "Read a.txt"}])
    assert first.stop_reason == "tool_use"
    use = next(block for block in first.content if block.type == "tool_use")
    assert use.name == "read_file" and isinstance(use.input, dict) and "path" in use.input

    second = await client(proxy).messages.create(model=MODEL, max_tokens=300, tools=[READ_FILE], messages=[
        {"role": "user", "content": "Read a.txt"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                                          {"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "no such file", "is_error": True}]},
    ])

    assert second.stop_reason == "end_turn" and second.content[0].text == completion_text("cerebras")
    sent = providers.cerebras.received[-1]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == use.id and sent[1]["content"] is None  # thinking left out
    assert sent[2] == {"role": "tool", "tool_call_id": use.id, "content": "Error: no such file"}


async def test_tool_results_go_before_the_text_that_follows_them(proxy: Proxy, providers: Providers) -> None:
    await client(proxy).messages.create(model=MODEL, max_tokens=300, messages=[
        {"role": "user", "content": "Read a.txt"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "read_file", "input": {"path": "a"}}]},
        {"role": "user", "content": [{"type": "text", "text": "Here:"},
                                     {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "A"}]}]},
    ])

    sent = providers.cerebras.received[-1]["messages"]
    assert sent[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "A"}
    assert sent[3] == {"role": "user", "content": [{"type": "text", "text": "Here:"}]}


async def test_streamed_tool_input_arrives_as_json_deltas(proxy: Proxy) -> None:
    async with client(proxy).messages.stream(model=MODEL, max_tokens=300, tools=[READ_FILE],
                                             messages=[{"role": "user", "content": "Read it"}]) as stream:
        final = await stream.get_final_message()

    use = final.content[-1]
    assert final.stop_reason == "tool_use" and use.type == "tool_use" and "path" in use.input


async def test_tool_choice_any_and_no_parallel_calls(proxy: Proxy, providers: Providers) -> None:
    await client(proxy).messages.create(
        model=MODEL, max_tokens=300, tools=[READ_FILE], messages=HELLO,
        tool_choice={"type": "tool", "name": "read_file", "disable_parallel_tool_use": True})

    sent = providers.chutes.received[-1]  # Cerebras refuses a named tool_choice: Chutes serves it
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "read_file"}}
    assert sent["parallel_tool_calls"] is False


async def test_count_tokens_asks_no_provider(proxy: Proxy, providers: Providers) -> None:
    counted = await client(proxy).messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "x" * 400}])

    assert 90 <= counted.input_tokens <= 130
    assert providers.cerebras.received == [] and providers.chutes.received == []


async def test_a_cerebras_503_is_served_by_chutes_unnoticed(proxy: Proxy, providers: Providers) -> None:
    providers.cerebras.faults = Faults(status=503, remaining=1)
    async with client(proxy).messages.stream(model=MODEL, max_tokens=300, messages=HELLO) as stream:
        final = await stream.get_final_message()

    assert final.content[0].text == completion_text("chutes")


async def test_quota_is_reserved_through_this_door_too(start_proxy: StartProxy, providers: Providers) -> None:
    proxy = await start_proxy(cerebras={"requests_per_minute": 1})
    first = await client(proxy).messages.create(model=MODEL, max_tokens=50, messages=HELLO)
    second = await client(proxy).messages.create(model=MODEL, max_tokens=50, messages=HELLO)

    assert (first.content[0].text, second.content[0].text) == (completion_text("cerebras"), completion_text("chutes"))


async def test_claude_model_names_are_served_through_an_alias(start_proxy: StartProxy) -> None:
    proxy = await start_proxy(model_aliases=("claude-*",))
    message = await client(proxy).messages.create(model="claude-sonnet-4-5", max_tokens=50, messages=HELLO)

    assert message.model == "claude-sonnet-4-5" and message.content[0].text == completion_text("cerebras")


async def test_unknown_model_is_a_not_found_error(proxy: Proxy) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        await client(proxy).messages.create(model="claude-opus-4", max_tokens=50, messages=HELLO)

    assert caught.value.body["type"] == "error" and caught.value.body["error"]["type"] == "not_found_error"


async def test_client_keys_are_read_from_x_api_key(start_proxy: StartProxy) -> None:
    proxy = await start_proxy(client_api_keys=("team-key",))
    message = await client(proxy, key="team-key").messages.create(model=MODEL, max_tokens=50, messages=HELLO)
    assert message.content[0].text

    with pytest.raises(anthropic.AuthenticationError) as caught:
        await client(proxy, key="wrong").messages.create(model=MODEL, max_tokens=50, messages=HELLO)
    assert caught.value.body["error"]["type"] == "authentication_error"


async def test_a_failure_after_the_first_byte_ends_in_an_error_event(start_proxy: StartProxy, providers: Providers) -> None:
    providers.cerebras.faults = Faults(break_after_events=2, remaining=1)
    proxy = await start_proxy(max_continuations=0)
    with pytest.raises(anthropic.APIStatusError) as caught:
        async with client(proxy).messages.stream(model=MODEL, max_tokens=300, messages=HELLO) as stream:
            async for _ in stream:
                pass

    assert caught.value.body["type"] == "error"


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        pytest.param({"model": MODEL, "messages": HELLO}, 400, "invalid_request_error", id="max-tokens-missing"),
        pytest.param({"model": MODEL, "max_tokens": 0, "messages": HELLO}, 400, "invalid_request_error", id="max-tokens-zero"),
        pytest.param({"model": MODEL, "max_tokens": 5, "messages": []}, 400, "invalid_request_error", id="messages-empty"),
        pytest.param({"model": MODEL, "max_tokens": 5, "messages": [{"role": "tool", "content": "x"}]}, 400, "invalid_request_error", id="role-tool"),
        pytest.param({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "document"}]}]}, 400, "invalid_request_error", id="document-block"),
        pytest.param({"model": MODEL, "max_tokens": 5, "messages": HELLO, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, 400, "invalid_request_error", id="server-tool"),
        pytest.param({"model": MODEL, "max_tokens": 5, "messages": HELLO, "system": 7}, 400, "invalid_request_error", id="system-number"),
        pytest.param({"model": MODEL, "max_tokens": 5, "messages": HELLO, "bogus": 1}, 400, "invalid_request_error", id="extra-field"),
        pytest.param({"model": "gpt-4o", "max_tokens": 5, "messages": HELLO}, 404, "not_found_error", id="unknown-model"),
        pytest.param([1, 2], 400, "invalid_request_error", id="not-an-object"),
    ],
)
async def test_bad_requests_get_anthropic_shaped_errors(proxy: Proxy, providers: Providers, body: Any, status: int,
                                                        kind: str) -> None:
    async with httpx.AsyncClient(base_url=proxy.base_url) as http:
        response = await http.post("/messages", json=body)

    assert response.status_code == status
    assert response.json()["type"] == "error" and response.json()["error"]["type"] == kind
    assert response.json()["error"]["message"]
    assert providers.cerebras.received == []


async def test_oversized_and_broken_bodies_keep_anthropic_shape(start_proxy: StartProxy) -> None:
    proxy = await start_proxy(max_body_bytes=1000)
    async with httpx.AsyncClient(base_url=proxy.base_url) as http:
        too_large = await http.post("/messages", content=b"{" + b" " * 2000 + b"}", headers={"content-type": "application/json"})
        broken = await http.post("/messages", content=b"{not json", headers={"content-type": "application/json"})

    assert too_large.status_code == 413 and too_large.json()["error"]["type"] == "request_too_large"
    assert broken.status_code == 400 and broken.json()["error"]["type"] == "invalid_request_error"


async def test_claude_code_system_messages_and_output_config_are_understood(proxy: Proxy, providers: Providers) -> None:
    """Claude Code sends `output_config`, puts system-role turns among the messages and adds `?beta=true`."""
    body = {"model": MODEL, "max_tokens": 50, "system": "You are Claude Code.", "output_config": {"effort": "high"},
            "messages": [{"role": "user", "content": "hi"}, {"role": "system", "content": [{"type": "text", "text": "Be terse."}]}]}
    async with httpx.AsyncClient(base_url=proxy.base_url) as http:
        response = await http.post("/messages?beta=true", json=body)

    assert response.status_code == 200, response.text
    sent = providers.cerebras.received[-1]["messages"]
    assert sent == [{"role": "system", "content": "You are Claude Code.\n\nBe terse."}, {"role": "user", "content": "hi"}]
