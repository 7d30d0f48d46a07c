"""Limits learned from the provider: its stated `x-ratelimit-limit-*` figures size the buckets
per key and model from the first answer, in both ledgers; a configured figure stays a ceiling;
plan presets start the count; garbage headers change nothing."""

import logging
from typing import Any

import attrs
import httpx
import pytest
import trio

from support.chat import chat, client_for, post
from support.proxies import Providers, StartProxy
from support.redis_ledgers import Clock, cerebras, replica
from trioproxy.config.schema import Config, RateLimitHeaders
from trioproxy.plans import PLANS
from trioproxy.providers.ratelimit import QuotaHeaders, header_dict
from trioproxy.quota.contract import Refusal, Reservation
from trioproxy.quota.ledger import QuotaLedger
from trioproxy.testing import emulator
from trioproxy.testing.redis_server import RedisServer

PREFIX = "x-ratelimit-limit-"


def headers(**figures: str) -> httpx.Headers:
    return httpx.Headers({PREFIX + name.replace("_", "-"): value for name, value in figures.items()})


def stated_limits(answer: httpx.Headers, prefix: str) -> dict[str, int]:
    """The limits a provider whose names start with `prefix` states in `answer`, read as the
    proxy reads them (its answer's header dict)."""
    return QuotaHeaders.of(RateLimitHeaders(limit_prefix=prefix)).stated_limits(header_dict(answer))


def test_stated_limits_are_read_per_window() -> None:
    assert stated_limits(headers(tokens_minute="250000", requests_day="14400"), PREFIX) == {"tpm": 250_000, "rpd": 14_400}
    assert stated_limits(headers(requests_minute="1e3", tokens_day="2400000.0"), PREFIX) == {"rpm": 1_000, "tpd": 2_400_000}
    assert stated_limits(headers(tokens_minute="250000"), "") == {}  # reading turned off


def test_configured_header_names_are_read_whatever_their_case() -> None:
    """Names configured in any case read a provider's headers in any case; a repeated header
    reads as its values joined, as httpx gives it."""
    names = QuotaHeaders.of(RateLimitHeaders(limit_prefix="X-RateLimit-Limit-",
                                             remaining_requests_minute="X-Left-Requests", reset_requests_minute="X-Reset-Requests"))
    answer = header_dict(httpx.Headers([("x-ratelimit-limit-tokens-minute", "250000"), ("X-LEFT-REQUESTS", "7"),
                                        ("x-reset-requests", "1m30s"), ("Vary", "a"), ("vary", "b")]))
    assert names.stated_limits(answer) == {"tpm": 250_000}
    assert names.quota_figures(answer)["rpm"] == (7.0, 90.0)
    assert answer["vary"] == "a, b"
    assert header_dict(httpx.Headers([("X-Note", "caf\u00e9".encode()), ("x-ratelimit-limit-tokens-minute", b"9")])) == {
        "x-note": "caf\u00e9", "x-ratelimit-limit-tokens-minute": "9"}  # not ASCII: read as httpx reads it
    assert QuotaHeaders.of(RateLimitHeaders(limit_prefix="")).stated_limits(answer) == {}  # reading turned off


@pytest.mark.parametrize("garbage", ["-5", "0", "NaN", "nan", "inf", "1e13", "lots", "", "12 tokens", "0x10"])
def test_garbage_limit_headers_are_ignored_with_a_debug_line(garbage: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "trioproxy.ratelimit")
    assert stated_limits(headers(tokens_minute=garbage, requests_day="100"), PREFIX) == {"rpd": 100}
    assert f"ignored {PREFIX}tokens-minute" in caplog.text


class Clocked:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def memory_ledger(**settings: Any) -> tuple[QuotaLedger, Clocked]:
    clock = Clocked()
    provider = attrs.evolve(Config().cerebras, api_key="csk-one", **settings)
    return QuotaLedger([provider], clock=clock, wall_clock=lambda: 1_800_000_000.0), clock


async def test_memory_ledger_starts_from_the_preset_and_follows_the_stated_limits() -> None:
    ledger, clock = memory_ledger()  # plan "code-pro", no ceilings
    preset = PLANS["code-pro"]
    state = ledger.snapshot("cerebras")
    assert state["tpm"]["limit"] == preset["tpm"] and state["limit_sources"]["tpm"] == {"source": "preset"}
    first = await ledger.reserve("cerebras", 1_000)
    assert isinstance(first, Reservation)
    await ledger.adopt_limits(first, {"tpm": 400_000, "rpd": 14_400})
    clock.now += 3
    state = ledger.snapshot("cerebras")
    assert (state["tpm"]["limit"], state["rpd"]["limit"], state["rpm"]["limit"]) == (400_000, 14_400, preset["rpm"])
    assert state["limit_sources"]["tpm"] == {"source": "provider", "stated": 400_000, "age_seconds": 3.0}
    assert state["rpd"]["used"] == 1  # what was booked stays booked under the new limit
    # More than the preset's tokens/minute now fit: 14 requests of 25,000 tokens (350,000).
    granted = [await ledger.reserve("cerebras", 25_000) for _ in range(14)]
    assert all(isinstance(r, Reservation) for r in granted)
    # The provider states a lower figure: the bucket shrinks to it.
    await ledger.adopt_limits(first, {"tpm": 50_000})
    assert ledger.snapshot("cerebras")["tpm"]["limit"] == 50_000
    assert isinstance(await ledger.reserve("cerebras", 1_000), Refusal)


async def test_memory_ledger_never_books_above_a_configured_ceiling() -> None:
    ledger, clock = memory_ledger(tokens_per_minute=100_000)
    first = await ledger.reserve("cerebras", 10_000)
    assert isinstance(first, Reservation)
    await ledger.adopt_limits(first, {"tpm": 400_000})
    state = ledger.snapshot("cerebras")
    assert state["tpm"]["limit"] == 100_000
    assert state["limit_sources"]["tpm"] == {"source": "configured", "stated": 400_000, "age_seconds": 0.0}
    booked = 10_000
    while isinstance(await ledger.reserve("cerebras", 10_000), Reservation):
        booked += 10_000
    assert booked == 100_000
    await ledger.adopt_limits(first, {"tpm": 60_000})  # below the ceiling: the provider's figure holds
    assert ledger.snapshot("cerebras")["limit_sources"]["tpm"]["source"] == "provider"
    assert ledger.snapshot("cerebras")["tpm"]["limit"] == 60_000


async def test_a_reload_keeps_stated_limits_under_the_new_ceiling() -> None:
    ledger, _ = memory_ledger()
    first = await ledger.reserve("cerebras", 1_000)
    assert isinstance(first, Reservation)
    await ledger.adopt_limits(first, {"tpm": 400_000})
    ledger.reconfigure([attrs.evolve(Config().cerebras, api_key="csk-one", tokens_per_minute=200_000)])
    assert ledger.snapshot("cerebras")["tpm"]["limit"] == 200_000
    ledger.reconfigure([attrs.evolve(Config().cerebras, api_key="csk-one")])
    assert ledger.snapshot("cerebras")["tpm"]["limit"] == 400_000


async def test_redis_ledger_follows_the_stated_limits_under_the_ceiling(nursery: trio.Nursery, redis: RedisServer) -> None:
    clock = Clock()
    preset = await replica(nursery, redis.url, [cerebras(plan="code-pro", api_key="csk-a")], clock, name="a")
    capped = await replica(nursery, redis.url, [cerebras(plan="code-pro", tokens_per_minute=100_000, api_key="csk-b")],
                           clock, name="b")
    for ledger in (preset, capped):
        reservation = await ledger.reserve("cerebras", 1_000)
        assert isinstance(reservation, Reservation)
        await ledger.adopt_limits(reservation, {"tpm": 400_000, "rpd": 14_400})
        await ledger.store.drained()
        await ledger.refresh()
    learned, ceiling = preset.snapshot("cerebras"), capped.snapshot("cerebras")
    assert (learned["tpm"]["limit"], learned["rpd"]["limit"], learned["rpm"]["limit"]) == (400_000, 14_400, PLANS["code-pro"]["rpm"])
    assert learned["limit_sources"]["tpm"]["source"] == "provider" and learned["limit_sources"]["rpm"] == {"source": "preset"}
    assert ceiling["tpm"]["limit"] == 100_000 and ceiling["limit_sources"]["tpm"]["source"] == "configured"
    booked = 1_000
    while isinstance(await capped.reserve("cerebras", 9_000), Reservation):
        booked += 9_000
    await capped.store.drained()
    await capped.refresh()
    assert booked <= 100_000 and capped.snapshot("cerebras")["tpm"]["used"] <= 100_000


async def test_the_proxy_follows_the_providers_stated_limits_from_the_first_answer(
    providers: Providers, start_proxy: StartProxy
) -> None:
    """Emulated Cerebras states 400,000 tokens/minute and 14,400 requests/day: after the first
    answer the ledger's buckets are those sizes (status says so), and more than the code plan's
    165,000 tokens a minute go to Cerebras."""
    providers.cerebras.tokens_per_minute, providers.cerebras.requests_per_day = 400_000, 14_400
    providers.cerebras.first_token_seconds = 0.5  # each request holds its booking that long
    proxy = await start_proxy()
    codes: list[int] = []
    async with client_for(proxy) as client:
        assert (await post(client, chat())).status_code == 200
        async with trio.open_nursery() as burst:
            for _ in range(14):  # each books prompt + the 16,384-token cap: 14 at once pass 165,000
                burst.start_soon(lambda: _post_into(client, codes))
        account = (await client.get("/status")).json()["providers"][0]["accounts"]["cerebras"]
    assert codes == [200] * 14
    assert providers.chutes.served == 0 and providers.cerebras.quota_refusals == []
    assert (account["tpm"]["limit"], account["rpd"]["limit"]) == (400_000, 14_400)
    assert account["limit_sources"]["tpm"]["source"] == "provider" and account["limit_sources"]["rpm"]["source"] == "preset"


async def test_a_configured_ceiling_holds_below_the_stated_limit(providers: Providers, start_proxy: StartProxy) -> None:
    """Cerebras states 400,000 tokens/minute; 40,000 configured: four requests at once, each
    booking ~16,400 (prompt + cap) while Cerebras works on it, and only two go there."""
    providers.cerebras.tokens_per_minute, providers.cerebras.first_token_seconds = 400_000, 0.5
    proxy = await start_proxy(cerebras={"tokens_per_minute": 40_000})
    codes: list[int] = []
    async with client_for(proxy) as client:
        assert (await post(client, chat())).status_code == 200  # the first answer states the limit
        async with trio.open_nursery() as burst:
            for _ in range(4):
                burst.start_soon(lambda: _post_into(client, codes))
        account = (await client.get("/status")).json()["providers"][0]["accounts"]["cerebras"]
    assert codes == [200] * 4
    assert providers.cerebras.served == 1 + 2 and providers.chutes.served == 2  # 2 x ~16,400 fit in 40,000
    assert account["tpm"]["limit"] == 40_000 and account["limit_sources"]["tpm"]["source"] == "configured"


async def _post_into(client: httpx.AsyncClient, codes: list[int]) -> None:
    codes.append((await post(client, chat())).status_code)


async def test_the_emulated_cerebras_states_its_plans_limits(nursery: trio.Nursery) -> None:
    provider = emulator.cerebras(plan="code-max")
    url = await nursery.start(emulator.serve, provider)
    async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {provider.api_key}"}) as client:
        response = await client.post("/chat/completions", json={"model": emulator.CEREBRAS_MODEL,
                                                                "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200
    assert stated_limits(response.headers, PREFIX) == {"tpm": PLANS["code-max"]["tpm"]}  # no daily request limit on it
    assert provider.tokens_per_day == PLANS["code-max"]["tpd"]
