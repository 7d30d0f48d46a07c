"""The official `openai` SDK as the client of trioproxy, against the emulated providers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import attrs
import openai
import pytest
import trio
from openai.types.chat import ChatCompletionChunk

from support.proxies import Providers, Proxy, proxy_config
from trioproxy.process.supervisor import run_proxy
from trioproxy.testing.emulator import Faults, completion_text

MODEL = "qwen-3-coder"
MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "Say hello."}]
READ_FILE_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "read_file",
        "description": "Read a file from the workspace",
        "parameters": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "encoding": {"type": "string"}},
            "required": ["path", "encoding"],
        },
    },
}


async def start_chutes_only_proxy(nursery: trio.Nursery, providers: Providers) -> Proxy:
    """A proxy whose Cerebras has no key, so run_proxy leaves it out and Chutes serves all."""
    config = proxy_config(providers)
    config = attrs.evolve(config, cerebras=attrs.evolve(config.cerebras, api_key=""))
    shutdown = trio.Event()
    base_url = await nursery.start(run_proxy, config, shutdown)
    return Proxy(base_url, config, shutdown)


def async_client(proxy: Proxy) -> openai.AsyncOpenAI:
    """An SDK client for the proxy that never retries, so each call is one request."""
    return openai.AsyncOpenAI(base_url=proxy.base_url, api_key="sk-anything", max_retries=0, timeout=10.0)


async def collect(stream: AsyncIterator[ChatCompletionChunk]) -> list[ChatCompletionChunk]:
    return [chunk async for chunk in stream]


def streamed_text(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def streamed_tool_calls(chunks: list[ChatCompletionChunk]) -> dict[int, dict[str, str]]:
    """Tool calls reassembled from their deltas the way SDK users do it: by index."""
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += delta.id or ""
                if delta.function is not None:
                    call["name"] += delta.function.name or ""
                    call["arguments"] += delta.function.arguments or ""
    return calls


async def test_models_list_offers_proxy_model(proxy: Proxy) -> None:
    """`client.models.list()` shows exactly the proxy's model id, as Roo Code reads it."""
    async with async_client(proxy) as client:
        page = await client.models.list()
        assert [model.id for model in page.data] == [MODEL]
        retrieved = await client.models.retrieve(MODEL)
    assert retrieved.id == MODEL
    assert retrieved.object == "model"


async def test_non_streaming_completion(proxy: Proxy, providers: Providers) -> None:
    """A plain completion returns the emulator's text, the proxy's model name and usage."""
    async with async_client(proxy) as client:
        completion = await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert completion.model == MODEL
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == completion_text("cerebras")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(completion_text("cerebras").split())
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert providers.cerebras.served == 1 and providers.chutes.received == []
    assert providers.cerebras.received[0]["model"] == providers.cerebras.model


async def test_sync_client_in_thread(proxy: Proxy, providers: Providers) -> None:
    """The synchronous SDK client, run in a worker thread, gets the same completion."""

    def call() -> Any:
        with openai.OpenAI(base_url=proxy.base_url, api_key="sk-sync", max_retries=0, timeout=10.0) as client:
            models = [model.id for model in client.models.list()]
            completion = client.chat.completions.create(model=MODEL, messages=MESSAGES)
            chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
            return models, completion, chunks

    models, completion, chunks = await trio.to_thread.run_sync(call)
    assert models == [MODEL]
    assert completion.model == MODEL
    assert completion.choices[0].message.content == completion_text("cerebras")
    assert streamed_text(chunks) == completion_text("cerebras")
    assert {chunk.model for chunk in chunks} == {MODEL}
    assert providers.cerebras.served == 2


async def test_streaming_without_usage(proxy: Proxy, providers: Providers) -> None:
    """A stream reassembles to the emulator's text, every chunk names qwen-3-coder, no usage."""
    async with async_client(proxy) as client:
        stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        chunks = await collect(stream)
    assert len(chunks) > 2
    assert streamed_text(chunks) == completion_text("cerebras")
    assert {chunk.model for chunk in chunks} == {MODEL}
    assert all(chunk.usage is None for chunk in chunks)
    assert chunks[-1].choices and chunks[-1].choices[0].finish_reason == "stop"
    assert providers.cerebras.served == 1


async def test_streaming_with_include_usage(proxy: Proxy, providers: Providers) -> None:
    """With stream_options include_usage the stream carries usage, once, at its end."""
    async with async_client(proxy) as client:
        stream = await client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        chunks = await collect(stream)
    assert streamed_text(chunks) == completion_text("cerebras")
    assert {chunk.model for chunk in chunks} == {MODEL}
    with_usage = [chunk for chunk in chunks if chunk.usage is not None]
    assert len(with_usage) == 1
    assert with_usage[0] is chunks[-1]
    usage = with_usage[0].usage
    assert usage is not None
    assert usage.completion_tokens == len(completion_text("cerebras").split())
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_streaming_from_chutes(nursery: trio.Nursery, providers: Providers) -> None:
    """When Chutes serves a stream, usage still appears only when asked, model rewritten."""
    proxy = await start_chutes_only_proxy(nursery, providers)
    async with async_client(proxy) as client:
        plain = await collect(await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
        counted = await collect(
            await client.chat.completions.create(
                model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
        )
    assert providers.cerebras.received == [] and providers.chutes.served == 2
    for chunks in (plain, counted):
        assert streamed_text(chunks) == completion_text("chutes")
        assert {chunk.model for chunk in chunks} == {MODEL}
    assert all(chunk.usage is None for chunk in plain)
    assert [chunk.usage is not None for chunk in counted].count(True) == 1
    assert counted[-1].usage is not None and counted[-1].choices == []


async def test_tool_call_non_streaming_then_follow_up(proxy: Proxy, providers: Providers) -> None:
    """A tools request returns a tool call with valid JSON arguments; the tool result turn returns text."""
    async with async_client(proxy) as client:
        first = await client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=[READ_FILE_TOOL])
        message = first.choices[0].message
        assert first.model == MODEL
        assert first.choices[0].finish_reason == "tool_calls"
        assert message.tool_calls is not None and len(message.tool_calls) == 1
        call = message.tool_calls[0]
        assert call.type == "function"
        assert call.function.name == "read_file"
        arguments = json.loads(call.function.arguments)
        assert set(arguments) >= {"path", "encoding"}
        follow_up = await client.chat.completions.create(
            model=MODEL,
            tools=[READ_FILE_TOOL],
            messages=[
                *MESSAGES,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": call.id, "type": "function", "function": {"name": "read_file", "arguments": call.function.arguments}}
                    ],
                },
                {"role": "tool", "tool_call_id": call.id, "content": "hello world"},
            ],
        )
    assert follow_up.model == MODEL
    assert follow_up.choices[0].message.content == completion_text("cerebras")
    assert not follow_up.choices[0].message.tool_calls
    assert providers.cerebras.received[1]["messages"][-1]["tool_call_id"] == call.id
    assert providers.cerebras.served == 2


async def test_tool_call_streaming(proxy: Proxy, providers: Providers) -> None:
    """A streamed tool call arrives whole, in one delta (the provider sent it in pieces: trioproxy
    holds them until the call is complete), with valid JSON arguments and the required keys."""
    async with async_client(proxy) as client:
        chunks = await collect(
            await client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=[READ_FILE_TOOL], stream=True)
        )
    assert {chunk.model for chunk in chunks} == {MODEL}
    calls = streamed_tool_calls(chunks)
    assert list(calls) == [0]
    assert calls[0]["name"] == "read_file"
    assert calls[0]["id"]
    argument_deltas = [
        d for c in chunks for ch in c.choices for d in ch.delta.tool_calls or [] if d.function and d.function.arguments
    ]
    assert len(argument_deltas) == 1 and argument_deltas[0].id == calls[0]["id"]  # whole, never half
    assert set(json.loads(calls[0]["arguments"])) >= {"path", "encoding"}
    assert [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason] == ["tool_calls"]
    assert providers.cerebras.served == 1


LIST_FILES_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "list_files",
        "description": "List a directory of the workspace",
        "parameters": {"type": "object", "properties": {"directory": {"type": "string"}}, "required": ["directory"]},
    },
}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_parallel_tool_calls(proxy: Proxy, providers: Providers, stream: bool) -> None:
    """Two tool calls in one answer: separate ids, indices 0 and 1, arguments reassembled per call."""
    async with async_client(proxy) as client:
        request = {"model": MODEL, "messages": MESSAGES, "tools": [READ_FILE_TOOL, LIST_FILES_TOOL],
                   "parallel_tool_calls": True}
        if stream:
            chunks = await collect(await client.chat.completions.create(**request, stream=True))
            calls = [streamed_tool_calls(chunks)[index] for index in sorted(streamed_tool_calls(chunks))]
            assert sorted(streamed_tool_calls(chunks)) == [0, 1]
            finish = [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason]
        else:
            answer = await client.chat.completions.create(**request)
            calls = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
                     for c in answer.choices[0].message.tool_calls or []]
            finish = [answer.choices[0].finish_reason]
    assert [call["name"] for call in calls] == ["read_file", "list_files"]
    assert len({call["id"] for call in calls}) == 2 and all(call["id"] for call in calls)
    assert set(json.loads(calls[0]["arguments"])) == {"path", "encoding"}
    assert set(json.loads(calls[1]["arguments"])) == {"directory"}
    assert finish == ["tool_calls"]
    assert providers.cerebras.received[-1]["parallel_tool_calls"] is True


async def test_legacy_functions_give_function_call(proxy: Proxy) -> None:
    """The deprecated `functions` field gets a `function_call` back, plain and streamed."""
    functions = [READ_FILE_TOOL["function"]]
    async with async_client(proxy) as client:
        completion = await client.chat.completions.create(model=MODEL, messages=MESSAGES, functions=functions)
        chunks = await collect(
            await client.chat.completions.create(model=MODEL, messages=MESSAGES, functions=functions, stream=True)
        )
    call = completion.choices[0].message.function_call
    assert completion.choices[0].finish_reason == "function_call"
    assert call is not None and call.name == "read_file"
    assert set(json.loads(call.arguments)) >= {"path", "encoding"}
    name = "".join(c.choices[0].delta.function_call.name or "" for c in chunks if c.choices and c.choices[0].delta.function_call)
    arguments = "".join(
        c.choices[0].delta.function_call.arguments or "" for c in chunks if c.choices and c.choices[0].delta.function_call
    )
    assert name == "read_file"
    assert json.loads(arguments) == json.loads(call.arguments)


async def test_max_completion_tokens_caps_the_answer(proxy: Proxy, providers: Providers) -> None:
    """`max_completion_tokens` reaches the provider and truncates the answer (finish_reason length)."""
    async with async_client(proxy) as client:
        completion = await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_completion_tokens=3)
    expected = " ".join(completion_text("cerebras").split()[:3])
    assert completion.choices[0].message.content == expected
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 3
    assert providers.cerebras.received[0]["max_completion_tokens"] == 3


async def test_unknown_model_is_not_found_error(proxy: Proxy, providers: Providers) -> None:
    """An unknown model surfaces as openai.NotFoundError with code model_not_found, no upstream call."""
    async with async_client(proxy) as client:
        with pytest.raises(openai.NotFoundError) as caught:
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        with pytest.raises(openai.NotFoundError) as caught_models:
            await client.models.retrieve("gpt-4o")
    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"
    assert "gpt-4o" in caught.value.message
    assert caught_models.value.code == "model_not_found"
    assert providers.cerebras.received == [] and providers.chutes.received == []


@pytest.mark.parametrize("stream", [False, True])
async def test_both_providers_failing_is_server_error(proxy: Proxy, providers: Providers, stream: bool) -> None:
    """When both providers answer 500, the SDK raises InternalServerError with the proxy's 502."""
    providers.cerebras.faults = Faults(status=500)
    providers.chutes.faults = Faults(status=500)
    async with async_client(proxy) as client:
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=stream)
    error = caught.value
    assert isinstance(error, openai.APIStatusError)
    assert error.status_code == 502
    assert error.response.headers.get("x-request-id")
    assert isinstance(error.body, dict) and set(error.body) >= {"message", "type", "code"}
    assert len(providers.cerebras.received) == 1 and len(providers.chutes.received) == 1
    assert providers.cerebras.served == 0 and providers.chutes.served == 0


async def test_roo_code_request_is_served_by_cerebras(proxy: Proxy, providers: Providers) -> None:
    """A Roo Code shaped request (parallel_tool_calls false, cache_control, include_usage) works via Cerebras."""
    messages: list[dict[str, Any]] = [
        {
            "role": "system",
            "content": [{"type": "text", "text": "You are Roo, a coding agent.", "cache_control": {"type": "ephemeral"}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<task>Read the file</task>"},
                {"type": "text", "text": "<environment_details>...</environment_details>", "cache_control": {"type": "ephemeral"}},
            ],
        },
    ]
    async with async_client(proxy) as client:
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
            temperature=0,
            tools=[READ_FILE_TOOL],
            tool_choice="auto",
            parallel_tool_calls=False,
        )
        chunks = await collect(stream)
    calls = streamed_tool_calls(chunks)
    assert calls[0]["name"] == "read_file"
    assert set(json.loads(calls[0]["arguments"])) >= {"path", "encoding"}
    assert {chunk.model for chunk in chunks} == {MODEL}
    assert [chunk.usage is not None for chunk in chunks].count(True) == 1
    assert providers.cerebras.served == 1
    assert providers.chutes.received == []
    sent = providers.cerebras.received[0]
    assert "parallel_tool_calls" not in sent  # Cerebras refuses `false`; the proxy drops it
    assert sent["temperature"] == 0 and sent["tool_choice"] == "auto"
    assert sent["messages"] == messages
