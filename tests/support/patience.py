"""Patience scenarios: a patient proxy whose Cerebras bucket is empty, what its request log
says, and whether a request waited for the refill or fell back at once."""

import logging
import re
from collections.abc import Mapping
from typing import Any

import pytest
import trio
import trio.testing

from support.chat import chat, client_for, post
from support.proxies import Providers, Proxy, StartProxy

PACES = {
    "cerebras": {"requests_per_minute": 6, "output_tokens_per_second": 2_000.0, "time_to_first_token_ms": 300},
    "chutes": {"output_tokens_per_second": 50.0, "time_to_first_token_ms": 2_000},
}


def task(name: str, max_tokens: int = 500) -> dict[str, Any]:
    return chat(messages=[{"role": "user", "content": f"task {name}"}], max_tokens=max_tokens)


async def after_the_bucket_is_empty(
    providers: Providers, start_proxy: StartProxy, caplog: pytest.LogCaptureFixture, body: dict[str, Any],
    max_wait_ms: int = 30_000, settings: Mapping[str, Any] = {}, replicas: int = 1,
) -> tuple[float, str]:
    """Send `body` once Cerebras's bucket is empty: seconds until its response headers came
    (the first-chunk gate: after any wait), and its request log line. With `replicas` > 1,
    that many proxies (sharing a ledger through `settings`): the first empties the bucket, the
    last sends `body`."""
    caplog.set_level(logging.INFO, logger="trioproxy.request")
    proxies = [await patient_proxy(providers, start_proxy, max_wait_ms=max_wait_ms, settings=settings) for _ in range(replicas)]
    await empty_cerebras_bucket(proxies[0])
    proxy = proxies[-1]
    began = trio.current_time()
    async with client_for(proxy) as client:
        client.timeout = 60.0
        async with client.stream("POST", "/chat/completions", json=body) as response:
            headers_after = trio.current_time() - began
            await response.aread()
    assert response.status_code == 200
    return headers_after, (await request_lines(caplog))[-1]


def waited_for_the_refill(providers: Providers, headers_after: float, line: str) -> None:
    assert 9.9 <= headers_after <= 10.5
    assert providers.cerebras.served == 7 and providers.chutes.served == 0
    assert "provider=cerebras" in line and "reason='preferred'" in line
    assert 9_900 <= waited_ms(line) <= 10_100
    assert "waited_for='patience: rpm 10.0 s'" in line


def fell_back_at_once(providers: Providers, headers_after: float, line: str) -> None:
    assert headers_after < 0.5
    assert providers.chutes.served == 1 and providers.cerebras.served == 6
    assert "provider=chutes" in line and "reason='fallback: rpm'" in line
    assert waited_ms(line) == 0 and "waited_for" not in line


async def patient_proxy(
    providers: Providers, start_proxy: StartProxy, max_wait_ms: int = 30_000, settings: Mapping[str, Any] = {},
    **chutes: Any,
) -> Proxy:
    """Both providers answer 500 tokens (cut by a smaller max_tokens), as the proxy expects.
    `settings`: more of the proxy's settings (a shared ledger's)."""
    providers.cerebras.completion_words = providers.chutes.completion_words = 500
    return await start_proxy(
        max_wait_ms=max_wait_ms, cerebras=PACES["cerebras"], chutes={**PACES["chutes"], **chutes}, **settings
    )


async def empty_cerebras_bucket(proxy: Proxy) -> None:
    async with client_for(proxy) as client:
        for i in range(6):
            assert (await post(client, task(f"warm-up {i}"))).status_code == 200


async def request_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The proxy's request log lines; the last is written just after its answer left."""
    await trio.sleep(0.01)
    return [r.getMessage() for r in caplog.records if r.name == "trioproxy.request"]


def waited_ms(line: str) -> int:
    match = re.search(r"waited_ms=(\d+)", line)
    assert match, line
    return int(match.group(1))
