"""The OpenAI Responses API door, spoken by the official `openai` SDK (what Codex CLI sends)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from support.proxies import Providers, Proxy, StartProxy
from trioproxy.testing.emulator import Faults, completion_text

MODEL = "qwen-3-coder"
READ_FILE: dict[str, Any] = {
    "type": "function",
    "name": "read_file",
    "description": "Read a file from the workspace",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    "strict": True,
}
LIST_FILES: dict[str, Any] = {
    "type": "function",
    "name": "list_files",
    "parameters": {"type": "object", "properties": {"dir": {"type": "string"}}, "required": ["dir"]},
}


def client(proxy: Proxy) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=proxy.base_url, api_key="sk-anything", max_retries=0, timeout=10.0)


async def test_plain_answer_is_a_response_object(proxy: Proxy, providers: Providers) -> None:
    response = await client(proxy).responses.create(model=MODEL, input="Say hello.", instructions="Be brief.",
                                                    max_output_tokens=500)

    assert response.object == "response" and response.status == "completed"
    assert response.output_text == completion_text("cerebras")
    assert response.model == MODEL
    assert response.usage is not None and response.usage.output_tokens == len(completion_text("cerebras").split())
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    sent = providers.cerebras.received[-1]
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]
    assert sent["max_completion_tokens"] == 500


async def test_streamed_events_follow_the_responses_sequence(proxy: Proxy) -> None:
    stream = await client(proxy).responses.create(model=MODEL, input="Say hello.", stream=True)
    events = [event async for event in stream]

    kinds = [event.type for event in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas == completion_text("cerebras")
    completed = events[-1].response
    assert completed.output_text == deltas and completed.usage is not None and completed.usage.output_tokens > 0


async def test_function_calls_in_parallel_keep_ids_and_arguments(proxy: Proxy) -> None:
    response = await client(proxy).responses.create(
        model=MODEL, input="Look around.", tools=[READ_FILE, LIST_FILES], parallel_tool_calls=True)

    calls = [item for item in response.output if item.type == "function_call"]
    assert [call.name for call in calls] == ["read_file", "list_files"]
    assert len({call.call_id for call in calls}) == 2
    assert set(json.loads(calls[0].arguments)) >= {"path"}


async def test_streamed_function_call_arguments_add_up(proxy: Proxy) -> None:
    stream = await client(proxy).responses.create(model=MODEL, input="Read it.", tools=[READ_FILE], stream=True)
    events = [event async for event in stream]

    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert len(done) == 1 and done[0].arguments == deltas and "path" in json.loads(deltas)
    final = events[-1].response.output
    assert final[0].type == "function_call" and final[0].arguments == deltas and final[0].call_id


async def test_function_call_output_turn_goes_upstream_as_a_tool_message(proxy: Proxy, providers: Providers) -> None:
    first = await client(proxy).responses.create(model=MODEL, input="Read a.txt", tools=[READ_FILE])
    call = next(item for item in first.output if item.type == "function_call")
    follow_up = [
        {"role": "user", "content": [{"type": "input_text", "text": "Read a.txt"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "contents of a.txt"},
    ]
    second = await client(proxy).responses.create(model=MODEL, input=follow_up, tools=[READ_FILE])

    assert second.output_text == completion_text("cerebras")
    messages = providers.cerebras.received[-1]["messages"]
    assert messages[1]["tool_calls"][0]["id"] == call.call_id  # the reasoning item was left out
    assert messages[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "contents of a.txt"}
    assert "strict" not in providers.cerebras.received[-1]["tools"][0]["function"]  # Cerebras adaptation ran


async def test_a_cerebras_429_is_served_by_chutes_unnoticed(proxy: Proxy, providers: Providers) -> None:
    providers.cerebras.faults = Faults(status=429, remaining=1)
    stream = await client(proxy).responses.create(model=MODEL, input="Say hello.", stream=True)
    events = [event async for event in stream]

    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == completion_text("chutes")


async def test_quota_is_reserved_through_this_door_too(start_proxy: StartProxy, providers: Providers) -> None:
    proxy = await start_proxy(cerebras={"requests_per_minute": 1})
    first = await client(proxy).responses.create(model=MODEL, input="one")
    second = await client(proxy).responses.create(model=MODEL, input="two")

    assert first.output_text == completion_text("cerebras")
    assert second.output_text == completion_text("chutes")
    assert providers.cerebras.served == 1


async def test_a_failure_after_the_first_byte_ends_in_response_failed(start_proxy: StartProxy, providers: Providers) -> None:
    providers.cerebras.faults = Faults(break_after_events=2, remaining=1)
    proxy = await start_proxy(max_continuations=0)
    stream = await client(proxy).responses.create(model=MODEL, input="Say hello.", stream=True)
    events = [event async for event in stream]

    assert events[-1].type == "response.failed"
    assert events[-1].response.status == "failed" and events[-1].response.error is not None


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        pytest.param({"model": MODEL, "input": "hi", "previous_response_id": "resp_1"}, 400, "no conversation state", id="previous-response"),
        pytest.param({"model": MODEL, "input": "hi", "store": True}, 400, "store", id="store-true"),
        pytest.param({"model": MODEL, "input": "hi", "background": True}, 400, "background", id="background"),
        pytest.param({"model": MODEL, "input": [{"type": "item_reference", "id": "x"}]}, 400, "item_reference", id="item-reference"),
        pytest.param({"model": MODEL}, 400, "input", id="input-missing"),
        pytest.param({"model": MODEL, "input": 3}, 400, "input", id="input-number"),
        pytest.param({"model": MODEL, "input": "hi", "max_output_tokens": "many"}, 400, "max_output_tokens", id="budget-string"),
        pytest.param({"model": MODEL, "input": "hi", "stream": "yes"}, 400, "stream", id="stream-string"),
        pytest.param({"model": MODEL, "input": "hi", "frobnicate": 1}, 400, "frobnicate", id="unknown-field"),
        pytest.param({"model": "gpt-5", "input": "hi"}, 404, "gpt-5", id="unknown-model"),
    ],
)
async def test_bad_requests_get_openai_shaped_errors(proxy: Proxy, providers: Providers, body: dict[str, Any],
                                                     status: int, needle: str) -> None:
    async with httpx.AsyncClient(base_url=proxy.base_url) as http:
        response = await http.post("/responses", json=body)

    assert response.status_code == status
    error = response.json()["error"]
    assert needle in error["message"] and error["type"] and "code" in error
    assert providers.cerebras.received == []


async def test_stored_responses_cannot_be_read(proxy: Proxy) -> None:
    async with httpx.AsyncClient(base_url=proxy.base_url) as http:
        response = await http.get("/responses/resp_123")

    assert response.status_code == 400 and "no conversation state" in response.json()["error"]["message"]


async def test_codex_namespaced_tools_and_client_metadata_are_understood(proxy: Proxy, providers: Providers) -> None:
    """Codex CLI groups function tools in a `namespace` tool and sends `client_metadata`."""
    response = await client(proxy).responses.create(
        model=MODEL, input="Look around.", store=False,
        tools=[{"type": "namespace", "name": "multi_agent_v1", "tools": [LIST_FILES]}, READ_FILE],  # type: ignore[list-item]
        extra_body={"client_metadata": {"session": "abc"}})

    assert response.status == "completed"
    sent = providers.cerebras.received[-1]["tools"]
    assert [tool["function"]["name"] for tool in sent] == ["list_files", "read_file"]
