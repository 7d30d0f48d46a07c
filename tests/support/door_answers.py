"""One streamed answer through each front door, spoken by that door's official SDK, read back
into one comparable shape (text, tool calls, finish, usage, or the door's error event)."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
from attrs import define, field

from support.proxies import Proxy

MODEL = "qwen-3-coder"
DOORS = ("chat", "responses", "messages")
PROMPT = "Say hello."
_TOOLS = [("read_file", "path"), ("list_files", "dir")]


@define
class DoorAnswer:
    """What a client saw of one streamed answer; `error` is the door's error event, if any."""

    text: str = ""
    calls: list[tuple[str, str, Any]] = field(factory=list)  # (id, name, parsed arguments)
    finish: str | None = None
    output_tokens: int | None = None
    error: str | None = None

    def without_ids(self) -> tuple[str, list[tuple[str, Any]], str | None]:
        """The answer as the model said it (tool-call ids are the provider's numbering)."""
        return self.text, [(name, arguments) for _, name, arguments in self.calls], self.finish


def _chat_tools() -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": name, "parameters": _schema(key)}} for name, key in _TOOLS]


def _schema(key: str) -> dict[str, Any]:
    return {"type": "object", "properties": {key: {"type": "string"}}, "required": [key]}


async def door_answer(door: str, proxy: Proxy, tools: bool = False, max_tokens: int = 4000) -> DoorAnswer:
    """Ask `door` for one streamed answer (two tool calls when `tools`) and read it to its end."""
    if door == "chat":
        return await _chat(proxy, tools, max_tokens)
    if door == "responses":
        return await _responses(proxy, tools, max_tokens)
    return await _messages(proxy, tools, max_tokens)


def _openai(proxy: Proxy) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=proxy.base_url, api_key="sk-anything", max_retries=0, timeout=20.0)


async def _chat(proxy: Proxy, tools: bool, max_tokens: int) -> DoorAnswer:
    extra: dict[str, Any] = {"tools": _chat_tools(), "parallel_tool_calls": True} if tools else {}
    answer = DoorAnswer()
    calls: dict[int, list[str]] = {}
    try:
        stream = await _openai(proxy).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": PROMPT}], stream=True, max_tokens=max_tokens,
            stream_options={"include_usage": True}, **extra)
        async for chunk in stream:
            if chunk.usage is not None:
                answer.output_tokens = chunk.usage.completion_tokens
            for choice in chunk.choices:
                answer.text += choice.delta.content or ""
                for call in choice.delta.tool_calls or ():
                    entry = calls.setdefault(call.index, ["", "", ""])
                    entry[0] += call.id or ""
                    entry[1] += (call.function and call.function.name) or ""
                    entry[2] += (call.function and call.function.arguments) or ""
                answer.finish = choice.finish_reason or answer.finish
    except openai.APIError as error:
        answer.error = error.message
    answer.calls = [(id_, name, json.loads(arguments)) for id_, name, arguments in
                    (calls[index] for index in sorted(calls))]
    return answer


async def _responses(proxy: Proxy, tools: bool, max_tokens: int) -> DoorAnswer:
    extra: dict[str, Any] = {}
    if tools:
        extra = {"tools": [{"type": "function", "name": name, "parameters": _schema(key)} for name, key in _TOOLS],
                 "parallel_tool_calls": True}
    answer = DoorAnswer()
    stream = await _openai(proxy).responses.create(model=MODEL, input=PROMPT, stream=True,
                                                   max_output_tokens=max_tokens, **extra)
    last = None
    async for event in stream:
        last = event
    assert last is not None
    if last.type == "response.failed":
        answer.error = last.response.error.message if last.response.error else "failed"
        return answer
    response = last.response
    answer.text = response.output_text
    answer.calls = [(item.call_id, item.name, json.loads(item.arguments)) for item in response.output
                    if item.type == "function_call"]
    answer.finish = "tool_calls" if answer.calls else {"completed": "stop"}.get(response.status, response.status)
    answer.output_tokens = response.usage.output_tokens if response.usage else None
    return answer


async def _messages(proxy: Proxy, tools: bool, max_tokens: int) -> DoorAnswer:
    client = anthropic.AsyncAnthropic(base_url=proxy.base_url.removesuffix("/v1"), api_key="sk-anything",
                                      max_retries=0, timeout=20.0)
    extra: dict[str, Any] = {}
    if tools:
        extra = {"tools": [{"name": name, "input_schema": _schema(key)} for name, key in _TOOLS]}
    answer = DoorAnswer()
    try:
        async with client.messages.stream(model=MODEL, max_tokens=max_tokens,
                                          messages=[{"role": "user", "content": PROMPT}], **extra) as stream:
            message = await stream.get_final_message()
    except anthropic.APIStatusError as error:
        answer.error = str(error.body)
        return answer
    answer.text = "".join(block.text for block in message.content if block.type == "text")
    answer.calls = [(block.id, block.name, block.input) for block in message.content if block.type == "tool_use"]
    answer.finish = {"tool_use": "tool_calls", "end_turn": "stop"}.get(message.stop_reason or "", message.stop_reason)
    answer.output_tokens = message.usage.output_tokens
    return answer
