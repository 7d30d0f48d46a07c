"""Clients that stall, trickle or vanish mid-request are answered or cut off within a bounded
time while others are served; and every piece of bad input at once leaves the proxy as it was."""

from __future__ import annotations

import pytest
import trio

from support.fault_server import dumps, eventually
from support.proxies import Providers, Proxy, StartProxy, proxy_config
from support.raw_http import RawConnection, abort_with_reset, raw_request
from support.robustness import (
    BAD_BODIES, CHAT, PROTOCOL_JUNK, STALL_BOUND, assert_healthy, chat_body, unhandled_errors,
)
from support.task_tree import (
    busy_tasks, idle_connections_only, proxy_task, serving_no_request, task_difference, wait_for_exit,
)
from trioproxy.process.supervisor import run_proxy


# --------------------------------------------------------------------------- slow and stalled clients


async def test_slow_idle_and_stalled_clients_are_cut_off(
    start_proxy: StartProxy, providers: Providers, caplog: pytest.LogCaptureFixture
) -> None:
    """Clients that hold a connection without finishing their request are answered or
    disconnected within a bounded time, while the proxy keeps serving others:

    - slow-loris: the request head trickled a byte at a time, never finished;
    - idle: connects and sends nothing;
    - chunked-never-ends: a chunked body whose last chunk never comes;
    - content-length-short: a body sent only in part, then nothing;
    - trickled-body: a body trickled a byte at a time, never finished.

    (Run concurrently, as each waits out the same bound.) Hypercorn closes the first two after
    its keep_alive_timeout (5 s); for the body stalls only the application can, with a 408 in
    OpenAI's shape or a close; without that each such client holds a connection and a task
    forever (and delays shutdown by the whole grace period)."""
    proxy = await start_proxy(request_timeout_ms=2000)
    body = dumps(chat_body())
    head_only = raw_request("POST", CHAT, None, headers={"content-length": "100"}, close=False)
    cases: dict[str, tuple[bytes, bytes]] = {  # (sent at once, trickled every 0.2 s)
        "slow-loris": (b"", head_only[:-2]),
        "idle": (b"", b""),
        "chunked-never-ends": (raw_request("POST", CHAT, None, headers={"transfer-encoding": "chunked"}, close=False)
                               + b"%x\r\n%s\r\n" % (20, body[:20]), b""),
        "content-length-short": (raw_request("POST", CHAT, None, headers={"content-length": str(len(body))}, close=False)
                                 + body[:20], b""),
        "trickled-body": (raw_request("POST", CHAT, None, headers={"content-length": "100000"}, close=False), b" " * 1000),
    }
    outcome: dict[str, str] = {}

    async def stall(name: str, first: bytes, trickle: bytes) -> None:
        connection = await RawConnection.open(proxy)
        if first:
            await connection.send(first)
        start = trio.current_time()
        with trio.move_on_after(STALL_BOUND):
            for index in range(10**6):
                with trio.move_on_after(0.2):
                    if not await connection.fill():
                        break
                if index < len(trickle) and not await connection.send(trickle[index : index + 1]):
                    break
        elapsed = trio.current_time() - start
        answer = bytes(connection.buffer).split(b"\r\n", 1)[0].decode("latin-1")
        if not connection.eof and not answer:
            outcome[name] = f"still open and unanswered after {elapsed:.1f} s"
        elif answer and not answer.startswith(("HTTP/1.1 408", "HTTP/1.1 400")):
            outcome[name] = f"unexpected answer {answer!r}"
        else:
            outcome[name] = f"{'answered ' + answer if answer else 'closed'} after {elapsed:.1f} s"
        await connection.aclose()

    with trio.fail_after(STALL_BOUND + 3):
        async with trio.open_nursery() as nursery:
            for name, (first, trickle) in cases.items():
                nursery.start_soon(stall, name, first, trickle)
            await trio.sleep(0.5)
            await assert_healthy(proxy)  # others are served while the slow ones hang on
    hung = {name: what for name, what in outcome.items() if not what.startswith(("answered", "closed"))}
    assert not hung, f"not cut off within {STALL_BOUND} s: {hung}; all: {outcome}"
    await assert_healthy(proxy, caplog)


async def test_client_gone_mid_body_is_harmless(proxy: Proxy, providers: Providers, caplog: pytest.LogCaptureFixture) -> None:
    """Clients that vanish mid-body (FIN or RST) leave no trace but a log line."""
    body = dumps(chat_body())
    with trio.fail_after(5):
        for rst in (False, True):
            connection = await RawConnection.open(proxy)
            await connection.send(raw_request("POST", CHAT, None, headers={"content-length": str(len(body))}) + body[:10])
            await trio.sleep(0.05)
            if rst:
                abort_with_reset(connection.stream)
            await connection.aclose()
    await trio.sleep(0.1)
    assert providers.cerebras.received == []
    await assert_healthy(proxy, caplog)


# --------------------------------------------------------------------------- everything at once


async def test_barrage_of_bad_input_leaves_the_proxy_healthy(
    nursery: trio.Nursery, providers: Providers, caplog: pytest.LogCaptureFixture
) -> None:
    """Every bad body and every piece of protocol junk above, 3 times over and concurrently,
    at one proxy: afterwards it is healthy, its task tree is back to what it was, nothing
    escaped into the log, and it shuts down promptly."""
    config = proxy_config(providers, request_timeout_ms=2000)
    shutdown = trio.Event()
    async with trio.open_nursery() as own:
        base_url = await own.start(run_proxy, config, shutdown)
        proxy = Proxy(base_url, config, shutdown)
        served = proxy_task(shutdown)
        await assert_healthy(proxy)
        assert await eventually(lambda: serving_no_request(served))
        before = busy_tasks(served)
        limiter = trio.CapacityLimiter(32)

        async def one(data: bytes) -> None:
            async with limiter:
                connection = await RawConnection.open(proxy)
                await connection.send(data)
                await connection.closed_within(3)
                await connection.aclose()

        inputs = [raw_request("POST", CHAT, p.values[0]) for p in BAD_BODIES] + [p.values[0] for p in PROTOCOL_JUNK]
        with trio.fail_after(15):
            async with trio.open_nursery() as barrage:
                for _ in range(3):
                    for data in inputs:
                        barrage.start_soon(one, data)
        await assert_healthy(proxy)
        assert await eventually(lambda: busy_tasks(served) == before), task_difference(before, busy_tasks(served))
        assert await eventually(lambda: idle_connections_only(served))
        assert unhandled_errors(caplog) == []
        shutdown.set()
        with trio.fail_after(2):  # Hypercorn would wait its 3 s grace for a hung handler
            await wait_for_exit(own)
