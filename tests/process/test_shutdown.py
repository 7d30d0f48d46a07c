"""Graceful shutdown on Trio's autojump clock: in-flight streams finish, late ones end cleanly."""

import json
import logging

import httpx
import pytest
import trio
import trio.testing

from support.chat import chat
from support.proxies import Providers, StartProxy


async def read_stream(base_url: str, started: trio.Event, into: list[str]) -> None:
    """Collect a stream's data lines; set `started` once the first one arrived."""
    async with httpx.AsyncClient(base_url=base_url, timeout=None) as client:
        async with client.stream("POST", "/chat/completions", json=chat(stream=True)) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    into.append(line[6:])
                    started.set()


async def test_shutdown_lets_streams_finish_then_ends_the_rest_cleanly(
    providers: Providers, start_proxy: StartProxy, autojump_clock: trio.testing.MockClock
) -> None:
    """A 12 s stream completes within the 30 s grace; a 120 s one gets an error event and [DONE]."""
    providers.cerebras.faults.chunk_delay = 1.0
    providers.chutes.faults.chunk_delay = 10.0
    proxy = await start_proxy(shutdown_grace_ms=30_000, cerebras={"requests_per_minute": 1})
    short: list[str] = []
    long: list[str] = []
    async with trio.open_nursery() as clients:
        for into in (short, long):
            started = trio.Event()
            clients.start_soon(read_stream, proxy.base_url, started, into)
            await started.wait()
        began = trio.current_time()
        proxy.shutdown.set()
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(httpx.ConnectError):  # no new connections once draining
            async with httpx.AsyncClient(base_url=proxy.base_url) as late:
                await late.get("/models")
    assert trio.current_time() - began < 31

    assert short[-1] == "[DONE]"
    assert not any('"error"' in line for line in short)
    assert "".join(
        json.loads(line)["choices"][0]["delta"].get("content") or "" for line in short[:-1] if json.loads(line)["choices"]
    ).startswith("Hello from emulated cerebras.")

    assert long[-1] == "[DONE]"
    error = json.loads(long[-2])["error"]
    assert error["code"] == "server_shutdown"
    assert 2 <= len(long) < 10  # some content, then the clean end


async def test_draining_counts_plain_requests_too(
    providers: Providers, start_proxy: StartProxy, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The drain line used to say "0 streams in flight" and then wait for a plain request it did not count."""
    caplog.set_level(logging.INFO)
    providers.cerebras.faults.latency = 20.0
    proxy = await start_proxy(shutdown_grace_ms=30_000)
    async with trio.open_nursery() as clients:
        async def plain() -> None:
            async with httpx.AsyncClient(base_url=proxy.base_url, timeout=None) as client:
                assert (await client.post("/chat/completions", json=chat())).status_code == 200

        clients.start_soon(plain)
        await trio.sleep(1)
        proxy.shutdown.set()
    assert "draining: 1 requests in flight (0 of them streams)" in caplog.text
