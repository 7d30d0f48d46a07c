"""An emulated provider served on loopback and spoken to directly (no proxy in between)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio
import trio.testing
from attrs import define

from trioproxy.testing.emulator import (
    EmulatedProvider,
    serve,
)


async def start(nursery: trio.Nursery, provider: EmulatedProvider) -> httpx.AsyncClient:
    """Serve `provider` and return a client authorised for it (the caller closes it)."""
    base_url = await nursery.start(serve, provider)
    return httpx.AsyncClient(base_url=base_url, timeout=5.0,
                             headers={"authorization": f"Bearer {provider.api_key}"})


async def post(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await client.post("/chat/completions", json=body)


async def stream_events(client: httpx.AsyncClient, body: dict[str, Any]) -> list[Any]:
    """The parsed `data:` payloads of a stream; "[DONE]" stays a string."""
    events: list[Any] = []
    async with client.stream("POST", "/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                data = line[len("data: "):]
                events.append(data if data == "[DONE]" else json.loads(data))
    return events


@define
class FakeClock:
    """A clock tests advance by hand."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now
