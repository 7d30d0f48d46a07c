"""The emulator's stream breaks and its prefill: a continued answer equals the uninterrupted one."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio

from trioproxy.testing.emulator import EmulatedProvider, Faults, cerebras, chutes, completion_text, serve

MESSAGES = [{"role": "user", "content": "Say hello."}]
TOOLS = [{"type": "function", "function": {"name": name, "parameters": {
    "type": "object", "properties": {key: {"type": "string"}}, "required": [key]}}}
    for name, key in (("read_file", "path"), ("list_files", "dir"))]


async def start(nursery: trio.Nursery, provider: EmulatedProvider) -> httpx.AsyncClient:
    base_url = await nursery.start(serve, provider)
    return httpx.AsyncClient(base_url=base_url, timeout=5.0, headers={"authorization": f"Bearer {provider.api_key}"})


async def events_until_break(client: httpx.AsyncClient, body: dict[str, Any]) -> tuple[list[Any], bool]:
    """The parsed events of a stream, and whether it ended in a reset instead of its end."""
    events: list[Any] = []
    try:
        async with client.stream("POST", "/chat/completions", json=body) as response:
            assert response.status_code == 200, await response.aread()
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    data = line.removeprefix("data: ")
                    events.append(data if data == "[DONE]" else json.loads(data))
    except httpx.ReadError:
        return events, True
    return events, False


def text_of(events: list[Any]) -> str:
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events if isinstance(e, dict) and e["choices"])


def calls_of(events: list[Any]) -> list[dict[str, str]]:
    calls: dict[int, dict[str, str]] = {}
    for event in events:
        for call in (event["choices"][0]["delta"].get("tool_calls") or []) if isinstance(event, dict) and event["choices"] else []:
            entry = calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
            entry["id"] += call.get("id") or ""
            entry["name"] += call["function"].get("name") or ""
            entry["arguments"] += call["function"].get("arguments") or ""
    return [calls[index] for index in sorted(calls)]


async def test_a_break_after_n_events(nursery: trio.Nursery) -> None:
    provider = cerebras(faults=Faults(break_after_events=3))
    async with await start(nursery, provider) as client:
        events, broken = await events_until_break(client, {"model": provider.model, "messages": MESSAGES, "stream": True})
    assert broken and len(events) == 3
    assert text_of(events) == "Hello from"
    assert provider.served == 0


async def test_a_break_after_n_bytes_of_arguments(nursery: trio.Nursery) -> None:
    provider = cerebras(faults=Faults(break_after_argument_bytes=5))
    body = {"model": provider.model, "messages": MESSAGES, "stream": True, "tools": TOOLS[:1]}
    async with await start(nursery, provider) as client:
        events, broken = await events_until_break(client, body)
    assert broken
    assert len(calls_of(events)[0]["arguments"].encode()) == 5


@pytest.mark.parametrize("switch", ["vllm", "prefix"])
@pytest.mark.parametrize("cut", [0, 1, 7, 20, len(completion_text("cerebras"))])
async def test_a_prefill_continues_the_same_text(nursery: trio.Nursery, switch: str, cut: int) -> None:
    """Chutes speaking as Cerebras continues Cerebras's answer from any point, byte for byte."""
    provider = chutes(speaks_as="cerebras")
    whole = completion_text("cerebras")
    prefill: dict[str, Any] = {"role": "assistant", "content": whole[:cut]}
    body: dict[str, Any] = {"model": provider.model, "stream": True, "messages": [*MESSAGES, prefill]}
    if switch == "vllm":
        body.update(continue_final_message=True, add_generation_prompt=False)
    else:
        prefill["prefix"] = True
    async with await start(nursery, provider) as client:
        events, broken = await events_until_break(client, body)
    assert not broken
    assert whole[:cut] + text_of(events) == whole


async def test_a_prefill_with_a_finished_call_continues_with_the_next(nursery: trio.Nursery) -> None:
    provider = chutes(parallel_tool_calls_by_default=True)
    plain = {"model": provider.model, "stream": True, "messages": MESSAGES, "tools": TOOLS}
    async with await start(nursery, provider) as client:
        whole = calls_of((await events_until_break(client, plain))[0])
        said = {"role": "assistant", "content": None, "tool_calls": [
            {"id": whole[0]["id"], "type": "function",
             "function": {"name": whole[0]["name"], "arguments": whole[0]["arguments"]}}]}
        body = {**plain, "messages": [*MESSAGES, said], "continue_final_message": True, "add_generation_prompt": False}
        rest = calls_of((await events_until_break(client, body))[0])
    assert len(whole) == 2
    assert rest == [whole[1]]  # the same call, numbered from 0 as a new message's calls are


@pytest.mark.parametrize("faults, needle", [(Faults(refuse_prefill=True), "not supported"),
                                            (Faults(), "does not begin")])
async def test_a_prefill_can_be_refused(nursery: trio.Nursery, faults: Faults, needle: str) -> None:
    provider = cerebras(faults=faults)
    prefill = {"role": "assistant", "content": "Something else entirely", "prefix": True}
    async with await start(nursery, provider) as client:
        response = await client.post("/chat/completions", json={"model": provider.model, "messages": [*MESSAGES, prefill]})
    assert response.status_code == 400 and needle in response.json()["message"]
    assert provider.served == 0


async def test_every_second_stream_breaks(nursery: trio.Nursery) -> None:
    provider = cerebras(break_every_nth_stream=2, break_stream_after_events=2)
    body = {"model": provider.model, "messages": MESSAGES, "stream": True}
    async with await start(nursery, provider) as client:
        broken = [(await events_until_break(client, body))[1] for _ in range(4)]
    assert broken == [False, True, False, True]
