"""The pipeline's answers as fixed data, for the doors' unit tests: a chat completion and the
chunks of its stream, with text or a tool call, as providers send them; and readers of what a
door renders (server-sent events, Google's streamed JSON array). No proxy, no sockets."""

from __future__ import annotations

import json
from typing import Any

from trioproxy.routing.limits import RouteLimits
from trioproxy.routing.models import ModelNames, ServedModel

ROUTE = "qwen-3-coder"
# The route answers to other names too: a door must give the client back the name it asked for.
MODELS = ModelNames((ServedModel(ROUTE, ("claude-*", "gpt-*", "gemini-*"), RouteLimits(131072, 40000)),))
PROVIDER_MODEL = "qwen-3-coder-480b"  # what the provider calls it: never shown to the client
USAGE = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7, "prompt_tokens_details": {"cached_tokens": 3}}
ARGUMENTS = '{"city": "Paris"}'
ARGUMENT_PIECES = ['{"city"', ': "Paris"}']  # the arguments as a provider streams them
CALL_ID = "call_1"
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    """One chat.completion.chunk with a single choice (no choice when `delta` is None)."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish, **extra}]
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": PROVIDER_MODEL,
            "choices": choices}


def usage_chunk() -> dict[str, Any]:
    """The last chunk of a stream asked for with include_usage: no choice, only usage."""
    return {**chunk(), "usage": dict(USAGE)}


def text_chunks(finish: str = "stop") -> list[dict[str, Any]]:
    """ "Hello world" streamed: the role, two pieces of text, the finish, then usage."""
    return [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hello"}), chunk({"content": " world"}),
            chunk({}, finish), usage_chunk()]


def tool_chunks() -> list[dict[str, Any]]:
    """A call of get_weather streamed: its id and name first, then its arguments in pieces."""
    first = {"index": 0, "id": CALL_ID, "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    pieces = [{"index": 0, "function": {"arguments": piece}} for piece in ARGUMENT_PIECES]
    return [chunk({"role": "assistant", "content": None}), chunk({"tool_calls": [first]}),
            *(chunk({"tool_calls": [piece]}) for piece in pieces), chunk({}, "tool_calls"), usage_chunk()]


def text_answer(finish: str = "stop", **choice: Any) -> dict[str, Any]:
    """The non-streamed chat completion "Hello world"."""
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": PROVIDER_MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello world"},
                         "finish_reason": finish, **choice}],
            "usage": dict(USAGE)}


def tool_answer() -> dict[str, Any]:
    """The non-streamed chat completion that calls get_weather for Paris."""
    call = {"id": CALL_ID, "type": "function", "function": {"name": "get_weather", "arguments": ARGUMENTS}}
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": PROVIDER_MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                         "finish_reason": "tool_calls"}],
            "usage": dict(USAGE)}


def body(document: dict[str, Any]) -> bytes:
    """A request body as a client sends it."""
    return json.dumps(document).encode()


def sse(stream: bytes) -> list[tuple[str | None, Any]]:
    """(event name or None, data) of each server-sent event; JSON data decoded, `[DONE]` kept as text."""
    events: list[tuple[str | None, Any]] = []
    for block in stream.decode().replace("\r\n", "\n").split("\n\n"):
        if not block:
            continue
        name = next((line[len("event: "):] for line in block.split("\n") if line.startswith("event: ")), None)
        data = "\n".join(line[len("data: "):] for line in block.split("\n") if line.startswith("data: "))
        events.append((name, data if data == "[DONE]" else json.loads(data)))
    return events


def in_reads(exchange: Any, reads: list[list[dict[str, Any]]], error: Any = None) -> bytes:
    """The whole streamed body a door renders for these upstream reads, then the stream's end."""
    return b"".join(exchange.stream_events(read) for read in reads) + exchange.stream_end(error)


def one_by_one(chunks: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Each chunk in an upstream read of its own."""
    return [[item] for item in chunks]
