"""Patience on the shared (Redis) ledger: a proxy waits for a refill of the quota every replica
spends, and falls back when the wait is longer than the slow provider's answer.

The figures are those of test_patience (Cerebras 6 requests a minute: one every 10 s once its
bucket is empty). The Redis ledger's time follows Trio's mock clock (STORE_CLOCK), and the
clock jumps only after 0.3 s of real idleness, so waiting on Redis's socket does not move it.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from support.patience import after_the_bucket_is_empty, fell_back_at_once, task, waited_for_the_refill
from support.proxies import Providers, StartProxy
from support.redis_ledgers import cerebras, chutes, replica, script_calls
from trioproxy.providers.upstream import Deadlines, ProviderClient, Upstream
from trioproxy.quota.contract import Refusal, Reservation
from trioproxy.quota.redis.ledger import RedisLedger
from trioproxy.quota.redis.clock import STORE_CLOCK
from trioproxy.routing.patience import Pace, Patience, Waiting
from trioproxy.secrets import Sanitizer
from trioproxy.testing.redis_server import RedisServer


async def reserved(patience: Patience, *args: Any) -> Reservation | Refusal:
    """What patience hands a request on with, after waiting in line when it decides to."""
    got = await patience.reserve(*args)
    return await got.turn() if isinstance(got, Waiting) else got


@attrs.frozen
class WithoutViews:
    """The ledger as its store's listener, but for the operators' views it reads every second."""

    ledger: RedisLedger

    async def refresh(self) -> None:
        pass

    def retire(self) -> None:
        self.ledger.retire()

    def revised(self) -> None:
        self.ledger.revised()


def shared_ledger(redis: RedisServer) -> dict[str, Any]:
    STORE_CLOCK.set(trio.current_time)  # the proxies started from here keep Redis's time on the mock clock
    return {"quota_backend": "redis", "redis_url": redis.url, "redis_timeout_ms": 10_000, "redis_key_prefix": "patience:"}


async def test_a_replica_waits_for_the_refill_of_the_quota_another_spent(
    providers: Providers, start_proxy: StartProxy, redis: RedisServer, patient_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One proxy empties Cerebras's bucket; the other, which sent nothing yet, knows it from
    Redis and waits the 10 s for the refill rather than send 500 tokens to Chutes (12 s)."""
    body = task("patient", 500) | {"stream": True}
    waited = await after_the_bucket_is_empty(providers, start_proxy, caplog, body, settings=shared_ledger(redis), replicas=2)
    waited_for_the_refill(providers, *waited)


async def test_a_replica_falls_back_when_the_wait_is_longer_than_the_slow_answer(
    providers: Providers, start_proxy: StartProxy, redis: RedisServer, patient_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """100 tokens: Chutes needs 4 s, Cerebras 10.35 s after its wait: no waiting."""
    body = task("short", 100)
    fell_back = await after_the_bucket_is_empty(providers, start_proxy, caplog, body, settings=shared_ledger(redis), replicas=2)
    fell_back_at_once(providers, *fell_back)


@asynccontextmanager
async def patience_on_an_empty_bucket(
    nursery: trio.Nursery, redis: RedisServer, max_wait: float
) -> AsyncIterator[tuple[Patience, list[Upstream]]]:
    """Patience on the shared ledger, Cerebras's bucket empty (6 a minute: back in 10 s), and
    the providers as the router hands them over."""
    configs = [cerebras(requests_per_minute=6), chutes()]
    ledger = await replica(nursery, redis.url, configs, trio.current_time)  # type: ignore[arg-type]
    ledger.store.listen(WithoutViews(ledger))  # the view refresh every second would add calls of its own
    for _ in range(6):
        assert isinstance(await ledger.reserve("cerebras", 100), Reservation)
    patience = Patience(ledger, {"cerebras": Pace(0.3, 2_000.0), "chutes": Pace(2.0, 50.0)}, max_wait)
    clients = [ProviderClient.for_provider(c, 5.0) for c in configs]
    try:
        yield patience, [Upstream(c, client, Sanitizer(()), Deadlines(10, 10, 10)) for c, client in zip(configs, clients)]
    finally:
        for client in clients:
            await client.aclose()


@pytest.mark.parametrize(
    ("max_tokens", "max_wait", "outcome", "calls"),
    [
        (500, 30.0, Reservation, 3),  # refused, Chutes asked (12 s), the refill taken after 10 s
        (100, 30.0, Refusal, 2),  # refused, Chutes asked: its 4 s beat 10.35 s, no wait
        (500, 5.0, Refusal, 1),  # refused: the wait is longer than max_wait, nothing more to ask
    ],
    ids=["waits", "falls-back", "too-long"],
)
async def test_a_patient_request_asks_redis_once_per_fact_it_needs(
    nursery: trio.Nursery, redis: RedisServer, patient_clock: trio.testing.MockClock,
    max_tokens: int, max_wait: float, outcome: type, calls: int,
) -> None:
    """The refused reservation already names the limit that holds the request longest, and
    the request first in line sleeps until then rather than ask again at once: one script
    call each for the reservation, Chutes's quota (when the choice depends on it) and the
    reservation after the refill."""
    async with patience_on_an_empty_bucket(nursery, redis, max_wait) as (patience, (cerebras_, *later)):
        before = await script_calls(redis)
        got = await reserved(patience, cerebras_, 100, task("patient", max_tokens), later)
        assert isinstance(got, outcome)
        assert await script_calls(redis) - before == calls


async def test_a_request_behind_a_waiter_that_goes_elsewhere_asks_no_more_than_it_needs(
    nursery: trio.Nursery, redis: RedisServer, patient_clock: trio.testing.MockClock,
) -> None:
    """One request waits for the refill; the next, no smaller, would wait 20 s behind it and
    goes to Chutes (4 s). Quota too little for the head of the line is too little for it as
    well: the queue's refusal and Chutes's quota are all it asks, and the waiter still gets
    the refill."""
    async with patience_on_an_empty_bucket(nursery, redis, 30.0) as (patience, (cerebras_, *later)):
        waited: list[Reservation | Refusal] = []

        async def wait() -> None:
            waited.append(await reserved(patience, cerebras_, 100, task("waiter", 500), later))

        async with trio.open_nursery() as requests:
            requests.start_soon(wait)
            await trio.sleep(0.5)  # the mock clock moves only once the waiter has asked and sleeps in line
            assert not waited
            before = await script_calls(redis)
            got = await reserved(patience, cerebras_, 100, task("short", 100), later)
            assert isinstance(got, Refusal) and await script_calls(redis) - before == 2
        assert isinstance(waited[0], Reservation)
