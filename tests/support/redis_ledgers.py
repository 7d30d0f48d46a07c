"""Redis ledgers of their own in a test: a store clock, providers' quotas, replicas on one real
Redis, the Lua script calls counted, and requests alternated over proxies."""

from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any

import attrs
import coredis
import trio
import trio.testing

from support.chat import chat, client_for, post
from support.proxies import Proxy
from trioproxy.config.schema import Config, ProviderConfig
from trioproxy.quota.redis.ledger import RedisLedger
from trioproxy.quota.redis.store import QuotaStore
from trioproxy.testing.redis_server import RedisServer

START = 1_800_000_000.0  # a store time (seconds since the epoch) well before a UTC midnight


class Clock:
    """The store's time for these tests, moved by hand instead of waiting."""

    def __init__(self) -> None:
        self.time = START

    def __call__(self) -> float:
        return self.time


def cerebras(**limits: Any) -> ProviderConfig:
    defaults = {"requests_per_minute": None, "tokens_per_minute": None, "tokens_per_day": None, "plan": None, "api_key": "csk-one"}
    return attrs.evolve(Config().cerebras, **{**defaults, **limits})


def chutes() -> ProviderConfig:
    return attrs.evolve(Config().chutes, api_key="cpk-one")


async def replica(
    nursery: trio.Nursery,
    url: str,
    providers: list[ProviderConfig],
    clock: Clock | None,
    *,
    name: str = "r1",
    policy: str = "local",
    replicas: int = 1,
    lease_seconds: float = 10.0,
    timeout: float = 10.0,  # semantics, not this machine's speed, unless a test is about timeouts
) -> RedisLedger:
    store = QuotaStore(url, timeout, allow_start_without=policy == "local", clock=clock)
    await nursery.start(store.run)
    return RedisLedger(
        providers, store, prefix="test:", outage_policy=policy, replicas=replicas, lease_seconds=lease_seconds, replica=name
    )


async def replicas(nursery: trio.Nursery, redis: RedisServer, providers: list[ProviderConfig], clock: Clock | None, count: int = 3, **options: Any) -> list[RedisLedger]:
    return [await replica(nursery, redis.url, providers, clock, name=f"r{i}", **options) for i in range(count)]


async def script_calls(redis: RedisServer) -> int:
    async with coredis.Redis.from_url(redis.url, decode_responses=True) as client:
        stats = await client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))  # absent before the first


async def start_unwrapped(store: QuotaStore) -> None:
    """Start the store; the error that stops it comes out of coredis's task groups unwrapped."""
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
    except BaseExceptionGroup as group:
        leaves = [e for e in _leaves(group)]
        raise leaves[0] from None


async def alternate(proxies: list[Proxy], count: int) -> list[int]:
    """`count` small requests, sent to each proxy in turn, one after the other."""
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(client_for(proxy)) for proxy in proxies]
        return [(await post(clients[i % len(clients)], chat(max_tokens=10))).status_code for i in range(count)]


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error
