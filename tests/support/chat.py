"""The proxy's Chat Completions door from a test's side: bodies, a raw httpx client carrying a
client key, streams read to their end, OpenAI's error shape, and the mock clock moved."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio
import trio.testing
from attrs import define

from support.proxies import Proxy
from trioproxy.testing.emulator import prompt_tokens

PROXY_MODEL = "qwen-3-coder"
MESSAGES = [{"role": "user", "content": "Say hello."}]
CLIENT_KEY = "client-secret-do-not-forward"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ERROR_KEYS = {"message", "type", "param", "code"}


def chat(**extra: Any) -> dict[str, Any]:
    """A chat body for the proxy's model."""
    return {"model": PROXY_MODEL, "messages": MESSAGES, **extra}


def sized_messages(tokens: int) -> list[dict[str, Any]]:
    """One user message whose prompt counts exactly `tokens` (emulator's and proxy's estimate)."""
    content = "x" * (4 * tokens - len('[{"role":"user","content":""}]'))
    messages = [{"role": "user", "content": content}]
    assert prompt_tokens({"messages": messages}) == tokens
    return messages


def strict_tool() -> dict[str, Any]:
    return {**WEATHER_TOOL, "function": {**WEATHER_TOOL["function"], "strict": True}}


@asynccontextmanager
async def client_for(proxy: Proxy) -> AsyncIterator[httpx.AsyncClient]:
    """A raw httpx client for the proxy, carrying the client's own key (never forwarded)."""
    async with httpx.AsyncClient(
        base_url=proxy.base_url, timeout=10.0, headers={"authorization": f"Bearer {CLIENT_KEY}"}
    ) as client:
        yield client


async def post(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await client.post("/chat/completions", json=body)


@define
class StreamResult:
    status: int
    headers: httpx.Headers
    events: list[Any]  # parsed `data:` payloads; "[DONE]" stays a string
    body: bytes  # the whole body when the status is not 200


async def stream(client: httpx.AsyncClient, body: dict[str, Any]) -> StreamResult:
    """Send a streamed chat request and read it to its end (bounded, so a hang fails)."""
    with trio.fail_after(10):
        async with client.stream("POST", "/chat/completions", json={**body, "stream": True}) as response:
            if response.status_code != 200:
                return StreamResult(response.status_code, response.headers, [], await response.aread())
            events: list[Any] = []
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    data = line[len("data: ") :]
                    events.append(data if data == "[DONE]" else json.loads(data))
            return StreamResult(200, response.headers, events, b"")


def stream_text(events: list[Any]) -> str:
    """The content the deltas of a stream add up to."""
    return "".join(
        choice.get("delta", {}).get("content") or ""
        for event in events
        if isinstance(event, dict)
        for choice in event.get("choices", [])
    )


def assert_openai_error(document: Any) -> dict[str, Any]:
    """The body is exactly OpenAI's error shape; returns the inner object."""
    assert isinstance(document, dict) and set(document) == {"error"}, document
    error = document["error"]
    assert set(error) == ERROR_KEYS, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    return error


async def health(client: httpx.AsyncClient, proxy: Proxy) -> dict[str, Any]:
    response = await client.get(proxy.base_url.removesuffix("/v1") + "/healthz")
    return response.json()


async def advance(mock_clock: trio.testing.MockClock, seconds: float) -> None:
    """Move the frozen clock and let every timer that fell due (cooldowns, keep-alives) run."""
    mock_clock.jump(seconds)
    await trio.testing.wait_all_tasks_blocked()


async def wait_for_health(proxy: Proxy, condition: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll /healthz until `condition` holds for its cerebras entry (bounded: 5 s)."""
    with trio.fail_after(5):
        async with client_for(proxy) as client:
            while True:
                state = (await health(client, proxy))["providers"]["cerebras"]
                if condition(state):
                    return state
                await trio.sleep(0.01)


async def status_of(proxy: Proxy, key: str) -> dict:
    async with httpx.AsyncClient() as client:
        response = await client.get(proxy.base_url + "/status", headers={"authorization": f"Bearer {key}"})
    response.raise_for_status()
    return response.json()
