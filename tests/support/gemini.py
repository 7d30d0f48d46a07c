"""Google's genai SDK as a client of the proxy's Gemini door (its blocking client, on a thread)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio
from google import genai
from google.genai import types

from support.proxies import Proxy

T = TypeVar("T")
_CLIENTS: list[genai.Client] = []


def client(proxy: Proxy, key: str = "sk-anything", api_version: str | None = None) -> genai.Client:
    options = types.HttpOptions(base_url=proxy.base_url.removesuffix("/v1"), timeout=10_000,
                                retry_options=types.HttpRetryOptions(attempts=1))
    if api_version is not None:
        options.api_version = api_version
    made = genai.Client(api_key=key, http_options=options)
    _CLIENTS.append(made)  # a collected Client closes its connections, even under a call in flight
    return made


async def sdk(work: Callable[[], T]) -> T:
    """The SDK's blocking client in a thread: its async client runs on asyncio only."""
    return await trio.to_thread.run_sync(work)
