"""The cost of each front door's translation: the same small request through Chat Completions,
the Responses API, the Messages API and the Gemini API, one after the other at concurrency 1
(used by overhead.py).

The upstream answers every door's request with the same chat completion or stream, so what
differs between rows is the door's parsing and its re-framing of the answer.
"""

from __future__ import annotations

import asyncio
import json
import statistics
from collections.abc import Callable

import loadgen

SYSTEM = "You are a careful coding assistant. Answer with code first, then a short explanation."
USER = "Write a Python function that parses an ISO 8601 date and returns the weekday."


def _chat(stream: bool) -> dict:
    return {"model": "qwen-3-coder", "stream": stream, "max_tokens": 512, "temperature": 0.2,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]}


def _responses(stream: bool) -> dict:
    return {"model": "qwen-3-coder", "stream": stream, "max_output_tokens": 512, "temperature": 0.2,
            "instructions": SYSTEM, "input": [{"role": "user", "content": [{"type": "input_text", "text": USER}]}]}


def _messages(stream: bool) -> dict:
    return {"model": "qwen-3-coder", "stream": stream, "max_tokens": 512, "temperature": 0.2,
            "system": SYSTEM, "messages": [{"role": "user", "content": USER}]}


def _gemini(stream: bool) -> dict:
    return {"systemInstruction": {"parts": [{"text": SYSTEM}]}, "contents": [{"role": "user", "parts": [{"text": USER}]}],
            "generationConfig": {"maxOutputTokens": 512, "temperature": 0.2}}


def _gemini_path(stream: bool) -> str:
    return "/v1beta/models/qwen-3-coder:" + ("streamGenerateContent?alt=sse" if stream else "generateContent")


# door -> (path for plain or stream, body builder, what the end of a complete stream contains)
DOORS: dict[str, tuple[Callable[[bool], str], Callable[[bool], dict], bytes]] = {
    "chat": (lambda stream: "/v1/chat/completions", _chat, b"data: [DONE]"),
    "responses": (lambda stream: "/v1/responses", _responses, b"event: response.completed"),
    "messages": (lambda stream: "/v1/messages", _messages, b"event: message_stop"),
    "gemini": (_gemini_path, _gemini, b'"finishReason"'),
}


def _p50_ms(host: str, port: int, door: str, stream: bool, duration: float, api_key: str) -> tuple[float, int]:
    path, body, end = DOORS[door]
    result = asyncio.run(loadgen.run_load(host, port, path(stream), json.dumps(body(stream)).encode(), api_key=api_key,
                                          stream=stream, concurrency=1, duration=duration, stream_end=end))
    return loadgen.percentile(result.latencies, 50) * 1000, result.errors


def measure(host: str, port: int, rounds: int, duration: float, api_key: str) -> list[str]:
    """Median over `rounds` of each door's p50 at concurrency 1, doors in rotating order; a table."""
    samples: dict[tuple[str, bool], list[float]] = {}
    errors = 0
    names = list(DOORS)
    for round_ in range(rounds):
        for stream in (False, True):
            for door in names[round_ % len(names):] + names[:round_ % len(names)]:
                p50, failed = _p50_ms(host, port, door, stream, duration, api_key)
                samples.setdefault((door, stream), []).append(p50)
                errors += failed
    lines = ["", f"Front doors at concurrency 1 (p50 ms, median of {rounds} rounds of {duration:g} s; errors: {errors})",
             f"{'door':<10} {'plain':>8} {'vs chat':>8} {'stream':>8} {'vs chat':>8}"]
    for door in names:
        row = f"{door:<10}"
        for stream in (False, True):
            mine = statistics.median(samples[(door, stream)])
            base = statistics.median(samples[("chat", stream)])
            row += f" {mine:8.3f} {mine - base:+8.3f}"
        lines.append(row)
    return lines
