"""Nothing left behind upstream: pooled connections are reused, and many faulty requests at once
leave no task, no connection, and a proxy that shuts down promptly."""

from __future__ import annotations

import functools
import json

import attrs
import httpx
import pytest
import trio

from support.chat import stream_text
from support.fault_server import FINISH, HELLO, MODELS_LIST, ROLE, WORLD, dumps, eventually, start_fault_server
from support.proxies import Providers, Proxy, StartProxy, proxy_config
from support.raw_http import read_raw_request
from support.robustness import (
    AFTER_FIRST_BYTE, BEFORE_FIRST_BYTE, assert_error_document, assert_healthy, chat_body, fault_config,
    http_client, sse_events, stream_chat, unhandled_errors,
)
from support.task_tree import (
    busy_tasks, emulator_task, idle_connections_only, open_connections, proxy_task, task_difference, wait_for_exit,
)
from trioproxy.process.supervisor import run_proxy
from trioproxy.testing.emulator import Faults


@attrs.define
class KeepAliveProvider:
    """A well-behaved provider on persistent connections whose streams send `[DONE]` and then,
    a moment later (as over a real network), the chunked body's terminator."""

    url: str = ""
    accepted: int = 0
    answered: int = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        try:
            while (request := await read_raw_request(stream)) is not None:
                target, body = request
                if target.endswith("/models"):
                    payload, streamed = MODELS_LIST, False
                else:
                    streamed = bool(json.loads(body).get("stream"))
                    payload = dumps({"id": "chatcmpl-ka", "object": "chat.completion", "created": 0, "model": "m",
                                     "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello world"},
                                                  "finish_reason": "stop"}]})
                if not streamed:
                    await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                                          % (len(payload), payload))
                else:
                    await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                                          b"transfer-encoding: chunked\r\n\r\n")
                    for event in (ROLE, HELLO, WORLD, FINISH, b"data: [DONE]\n\n"):
                        await stream.send_all(b"%x\r\n%s\r\n" % (len(event), event))
                    await trio.sleep(0.02)
                    await stream.send_all(b"0\r\n\r\n")
                self.answered += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await stream.aclose()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_upstream_connections_are_reused_not_piled_up(
    nursery: trio.Nursery, providers: Providers, start_proxy: StartProxy, caplog: pytest.LogCaptureFixture, stream: bool
) -> None:
    """Ten requests in a row that all end normally: the proxy reuses its pooled connection to
    the provider rather than dropping it and opening a new one per request (against a real
    provider, a TCP and TLS handshake each time, and a connection count that keeps growing)."""
    upstream = KeepAliveProvider()
    listeners = await nursery.start(functools.partial(trio.serve_tcp, host="127.0.0.1"), upstream.handle, 0)
    upstream.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/v1"
    proxy = await start_proxy(cerebras={"base_url": upstream.url, "requests_per_minute": 1000, "tokens_per_minute": 10**9})
    async with http_client(base_url=proxy.base_url, timeout=5.0) as client:
        for i in range(11):
            if stream:
                status, _, body = await stream_chat(client, chat_body())
                assert status == 200 and stream_text(sse_events(body)) == "Hello world", body
            else:
                response = await client.post("/chat/completions", json=chat_body())
                assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "Hello world"
            if i == 0:
                before = upstream.accepted  # the first request (or the health probe) opened one
    opened = upstream.accepted - before
    assert opened == 0, f"{opened} new upstream connections for 10 {'streamed' if stream else 'plain'} requests"
    await assert_healthy(proxy, caplog)


async def test_faults_leave_no_task_or_connection_behind(
    nursery: trio.Nursery, providers: Providers, caplog: pytest.LogCaptureFixture
) -> None:
    """Many faulty requests, concurrently, against a proxy whose providers misbehave in every
    way above: every client gets an answer; afterwards the proxy's task tree is back to what it
    was, no connection to a faulty provider is open, the emulators' connection counts stop
    growing, and the proxy shuts down promptly (not after Hypercorn's grace period)."""
    behaviours = [b for b, _ in BEFORE_FIRST_BYTE.values()] + list(AFTER_FIRST_BYTE.values())
    counter = iter(range(10**9))

    async def rotating(stream: trio.SocketStream) -> None:
        await behaviours[next(counter) % len(behaviours)](stream)

    server = await start_fault_server(nursery, rotating)
    providers.chutes.faults = Faults(reset_mid_stream=True, remaining=5)
    overrides = fault_config(providers, cerebras_url=server.url)
    overrides["cerebras"].update(requests_per_minute=100_000, tokens_per_minute=10**9)  # let every request reach it
    config = proxy_config(providers, **overrides)
    shutdown = trio.Event()
    answers: list[int] = []
    async with trio.open_nursery() as own:
        base_url = await own.start(run_proxy, config, shutdown)
        proxy = Proxy(base_url, config, shutdown)
        served = proxy_task(shutdown)
        before = busy_tasks(served)

        async def one(i: int, client: httpx.AsyncClient) -> None:
            if i % 2:
                status, _, body = await stream_chat(client, chat_body(), timeout=8)
                if status == 200:
                    assert sse_events(body)[-1] == "[DONE]"
                else:
                    assert_error_document(json.loads(body))
            else:
                response = await client.post("/chat/completions", json=chat_body())
                if response.status_code != 200:
                    assert_error_document(response.json())
                status = response.status_code
            answers.append(status)

        with trio.fail_after(15):
            async with http_client(base_url=proxy.base_url, timeout=8.0) as client:
                async with trio.open_nursery() as clients:
                    for i in range(4 * len(behaviours)):
                        clients.start_soon(one, i, client)
        assert len(answers) == 4 * len(behaviours)
        assert server.requests >= len(behaviours), "not every fault was exercised"
        assert await eventually(lambda: server.open == 0), f"{server.open} connections to the fault server left open"
        assert await eventually(lambda: busy_tasks(served) == before), task_difference(before, busy_tasks(served))
        assert await eventually(lambda: idle_connections_only(served))
        counts = (providers.cerebras.connections, providers.chutes.connections, server.accepted)
        await trio.sleep(0.3)
        assert (providers.cerebras.connections, providers.chutes.connections, server.accepted) == counts, \
            "connections to the providers still growing after the requests ended"
        await assert_healthy(proxy)
        assert unhandled_errors(caplog) == []
        shutdown.set()
        with trio.fail_after(2):
            await wait_for_exit(own)
    chutes = emulator_task(providers.chutes)
    assert await eventually(lambda: open_connections(chutes) == 0), "connections to chutes outlived the proxy"
