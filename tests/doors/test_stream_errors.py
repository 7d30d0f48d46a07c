"""Errors inside a stream that began with 200, on every door, streamed, through the official SDKs.

Before any content they are the provider's failure like a status (failover, cooldown for a
quota error); after content the client's stream ends with its door's error event.
"""

from __future__ import annotations

import httpx
import pytest

from trioproxy.providers.failures import status_of_error
from trioproxy.testing.emulator import Faults, completion_text

from support.proxies import Providers, StartProxy
from support.door_answers import DOORS, door_answer


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("kind", ["server", "zai-quota", "response-failed"])
async def test_an_error_event_before_content_fails_over_invisibly(
    providers: Providers, start_proxy: StartProxy, door: str, kind: str
) -> None:
    """The error comes after the role announcement, before any text: Chutes serves, no error shows."""
    providers.cerebras.faults = Faults(error_after_events=1, stream_error=kind, remaining=1)
    proxy = await start_proxy()

    answer = await door_answer(door, proxy)

    assert answer.error is None
    assert answer.text == completion_text("chutes")
    assert len(providers.cerebras.received) == 1 and providers.chutes.served == 1


@pytest.mark.parametrize("door", DOORS)
async def test_a_quota_error_event_cools_the_key_down(providers: Providers, start_proxy: StartProxy, door: str) -> None:
    """Z.AI's in-stream 1302 counts as a 429: the key cools down and is not asked again meanwhile."""
    providers.cerebras.faults = Faults(error_after_events=0, stream_error="zai-quota", remaining=1)
    proxy = await start_proxy(cooldown_period_ms=120_000)

    first = await door_answer(door, proxy)
    second = await door_answer(door, proxy)

    assert (first.error, second.error) == (None, None)
    assert first.text == second.text == completion_text("chutes")
    assert len(providers.cerebras.received) == 1  # cooling down: not even tried the second time
    async with httpx.AsyncClient() as http:
        health = (await http.get(proxy.base_url.removesuffix("/v1") + "/healthz")).json()
    account = health["providers"]["cerebras"]["accounts"]["cerebras"]
    assert 0 < account["cooldown_seconds"] <= 120 and "429" in account["cooldown_reason"]


@pytest.mark.parametrize("door", DOORS)
async def test_a_server_error_event_before_content_does_not_cool_down(
    providers: Providers, start_proxy: StartProxy, door: str
) -> None:
    providers.cerebras.faults = Faults(error_after_events=0, stream_error="server", remaining=1)
    proxy = await start_proxy(cooldown_period_ms=120_000)

    first = await door_answer(door, proxy)
    second = await door_answer(door, proxy)

    assert first.text == completion_text("chutes") and second.text == completion_text("cerebras")


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("kind", ["server", "zai-quota", "response-failed"])
@pytest.mark.parametrize("continuations", [0, 2])
async def test_an_error_event_after_content_is_continued_or_ends_with_the_doors_error_event(
    providers: Providers, start_proxy: StartProxy, door: str, kind: str, continuations: int
) -> None:
    """After content, an error event is a break like any other: the next provider finishes the
    answer, or with continuation off the door's error event ends it."""
    providers.chutes.speaks_as = "cerebras"
    providers.cerebras.faults = Faults(error_after_events=3, stream_error=kind, remaining=1)
    proxy = await start_proxy(max_continuations=continuations)

    answer = await door_answer(door, proxy)

    if continuations:
        assert answer.error is None and answer.text == completion_text("cerebras")
        assert len(providers.chutes.received) == 1
    else:
        assert answer.error is not None
        assert providers.chutes.received == []


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("continuations", [0, 2])
async def test_a_quota_error_event_after_content_cools_the_key_down_too(
    providers: Providers, start_proxy: StartProxy, door: str, continuations: int
) -> None:
    """A quota error after content cools the key down as one before content does, whether the
    next provider finishes the answer or not: the next request goes straight to the next provider."""
    providers.chutes.speaks_as = "cerebras"
    providers.cerebras.faults = Faults(error_after_events=3, stream_error="zai-quota", remaining=1)
    proxy = await start_proxy(cooldown_period_ms=120_000, max_continuations=continuations)

    broken = await door_answer(door, proxy)
    following = await door_answer(door, proxy)

    assert (broken.error is None) == bool(continuations)
    assert following.error is None and following.text == completion_text("cerebras")
    assert len(providers.cerebras.received) == 1  # cooling down: not even tried the second time
    assert len(providers.chutes.received) == (2 if continuations else 1)
    async with httpx.AsyncClient() as http:
        health = (await http.get(proxy.base_url.removesuffix("/v1") + "/healthz")).json()
    account = health["providers"]["cerebras"]["accounts"]["cerebras"]
    assert 0 < account["cooldown_seconds"] <= 120 and "429" in account["cooldown_reason"]


@pytest.mark.parametrize(
    ("event", "status"),
    [
        pytest.param(b'{"error": {"code": 1302, "message": "High concurrency"}}', 429, id="zai-1302"),
        pytest.param(b'{"error": {"code": "1305", "message": "overloaded"}}', 503, id="zai-1305"),
        pytest.param(b'{"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}', 503, id="anthropic"),
        pytest.param(b'{"type": "response.failed", "response": {"error": {"code": "rate_limit_exceeded"}}}', 429,
                     id="response-failed"),
        pytest.param(b'{"error": {"message": "x", "status": 404}}', 404, id="explicit-status"),
        pytest.param(b'{"error": {"message": "x", "code": 99999}}', 502, id="unknown-number"),
        pytest.param(b'{"detail": "something broke"}', 502, id="fastapi"),
        pytest.param(b'not json', 502, id="garbage"),
    ],
)
def test_the_status_an_error_event_stands_for(event: bytes, status: int) -> None:
    assert status_of_error(event) == status
