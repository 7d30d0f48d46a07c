"""Patience on the shared (Redis) ledger: a proxy waits for a refill of the quota every replica
spends, and falls back when the wait is longer than the slow provider's answer.

The figures are those of test_patience (Cerebras 6 requests a minute: one every 10 s once its
bucket is empty). The Redis ledger's time follows Trio's mock clock (STORE_CLOCK), and the
clock jumps only after 0.3 s of real idleness, so waiting on Redis's socket does not move it.
"""

from typing import Any

import pytest
import trio
import trio.testing

from conftest import Providers, StartProxy
from test_patience import after_the_bucket_is_empty, fell_back_at_once, task, waited_for_the_refill
from trioproxy.quota.redis_store import STORE_CLOCK
from trioproxy.testing.redis_server import RedisServer


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
