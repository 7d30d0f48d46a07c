"""The shared quota's faults with real processes: two trioproxy processes on one real
redis-server that is killed and started again, or frozen, under a bounded load."""

import hashlib
import signal
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from support.chat import chat
from support.processes import (
    Load,
    ProxyProcess,
    account,
    client,
    environment,
    get_json,
    metrics,
    proxy_process,
    serving,
    until,
    write_settings,
)
from support.proxies import Providers
from trioproxy.quota.redis.ledger_script import SCRIPT
from trioproxy.testing.ports import free_port
from trioproxy.testing.redis_server import RedisServer

pytestmark = pytest.mark.xdist_group("processes")  # starts trioproxy processes: one at a time (see scripts/test)

UNREACHABLE = r"Redis at \S+ unreachable"
BACK = r"Redis at \S+ is back after"
FALLBACK_FOR_REDIS = r"provider=chutes reason='fallback: redis'"
# Cerebras's limits far above the load, so every request the shared ledger admits is booked
# there (and the "local" policy's half of them, too); the daily count is what tests compare.
VIEW_REFRESH_SECONDS = 1.2  # a process reads the shared figures every second (and a little)
ROOMY_CEREBRAS = {"requests_per_minute": 100_000, "tokens_per_minute": 100_000_000, "requests_per_day": 1_000_000}


@asynccontextmanager
async def proxies_on(
    providers: Providers, redis: RedisServer, tmp_path: Path, nursery: trio.Nursery, policies: tuple[str, ...], **settings: Any
) -> AsyncIterator[list[ProxyProcess]]:
    """trioproxy processes sharing `redis`, one per outage policy, serving."""
    async with AsyncExitStack() as stack:
        proxies = []
        for number, policy in enumerate(policies):
            path = write_settings(
                tmp_path / f"{number}.toml", providers, ROOMY_CEREBRAS, quota_backend="redis", redis_url=redis.url,
                redis_outage=policy, replicas=2, **{"redis_timeout_ms": 2000, "redis_lease_ttl_ms": 3000, **settings},
            )
            port = free_port()
            env = environment(providers, PORT=str(port))
            proxies.append(await stack.enter_async_context(proxy_process(nursery, ["--config", str(path)], env, port)))
        for proxy in proxies:
            await until(lambda: serving(proxy.root), "the proxy serves")
        yield proxies


async def redis_cli(redis: RedisServer, *command: str) -> str:
    result = await trio.run_process(["redis-cli", "-p", str(redis.port), *command], capture_stdout=True)
    return result.stdout.decode().strip()


async def connected(proxy: ProxyProcess) -> bool:
    return (await get_json(proxy.root, "/healthz"))["quota_store"]["connected"]


async def agreed_requests_today(proxies: list[ProxyProcess]) -> int:
    """The day's Cerebras requests once every process shows the same figure, and still does a
    refresh later (each reads the shared figures every second: both may show a figure that a
    last booking has already passed)."""
    figures: list[int] = []
    agreed: list[tuple[int, float]] = []  # the figure agreed on, and since when

    async def agree() -> bool:
        figures[:] = [await requests_today(p) for p in proxies]
        if len(set(figures)) != 1:
            agreed.clear()
            return False
        if not agreed or agreed[0][0] != figures[0]:
            agreed[:] = [(figures[0], trio.current_time())]
        return trio.current_time() - agreed[0][1] > VIEW_REFRESH_SECONDS

    await until(agree, "every process shows the same requests today, for longer than a refresh")
    return figures[0]


async def _equals(figure: Awaitable[int], expected: int) -> bool:
    return await figure == expected


async def disconnected(proxy: ProxyProcess) -> bool:
    return not await connected(proxy)


async def requests_today(proxy: ProxyProcess, held: bool = True) -> int:
    """Cerebras's requests booked today, as this process shows the shared figures; without
    `held`, less what is booked in shares processes hold (not all sent yet)."""
    day = account(await get_json(proxy.root, "/v1/status"))["rpd"]
    return day["used"] - (0 if held else day.get("in_shares", 0))


async def outage_shown_everywhere(proxy: ProxyProcess, outages: int) -> None:
    """The outage is counted in /healthz, /v1/status and /metrics, and logged once."""
    assert (await get_json(proxy.root, "/healthz"))["quota_store"]["outages"] == outages
    assert (await get_json(proxy.root, "/v1/status"))["quota_store"]["outages"] == outages
    assert f"trioproxy_quota_store_outages {outages:.1f}" in await metrics(proxy.root)
    assert len(proxy.log.matching(UNREACHABLE)) == outages, proxy.log.text()
    assert len(proxy.log.matching(BACK)) == outages, proxy.log.text()


@pytest.mark.parametrize("data", ["lost", "kept"])
async def test_redis_killed_and_started_again_under_load(
    providers: Providers, redis: RedisServer, tmp_path: Path, nursery: trio.Nursery, data: str
) -> None:
    """No client sees an error; each process logs the outage once, shows and counts it, comes
    back by itself (loading the script into the new server) and books on the shared figures
    again; with the data kept, what was booked before the restart still counts. One process
    has the "local" outage policy (Cerebras keeps serving), the other "refuse" (Chutes serves)."""
    async with proxies_on(providers, redis, tmp_path, nursery, ("local", "refuse")) as proxies:
        load = Load([p.root for p in proxies], concurrency=4, limit=10_000)
        nursery.start_soon(load.run)
        await until(lambda: len(load.outcomes) >= 20, "20 requests before the restart")
        if data == "kept":
            async def shows_bookings() -> bool:  # the shared figures a process shows are read every second
                return await requests_today(proxies[0]) > 0

            await until(shows_bookings, "the shared figures show the bookings")
            # At most what the SAVE below keeps; what shares hold may come back unspent.
            booked_before = await requests_today(proxies[0], held=False)
            assert booked_before > 0 and await redis_cli(redis, "SAVE") == "OK"
        redis.stop()  # kill -9
        for proxy in proxies:
            await until(lambda: disconnected(proxy), "the outage is noticed")
        during = len(load.outcomes)
        await until(lambda: len(load.outcomes) >= during + 20, "20 requests during the outage")

        redis.start()
        for proxy in proxies:
            await until(lambda: connected(proxy), "back on the shared ledger")
        sha = hashlib.sha1(SCRIPT.encode()).hexdigest()
        assert await redis_cli(redis, "SCRIPT", "EXISTS", sha) == "1"  # loaded again into the new server
        after = len(load.outcomes)
        await until(lambda: len(load.outcomes) >= after + 20, "20 requests after the restart")
        await load.finish()

        assert load.errors() == [] and {o.status for o in load.outcomes} == {200}
        for proxy in proxies:
            await outage_shown_everywhere(proxy, 1)
        assert not proxies[0].log.matching(FALLBACK_FOR_REDIS)  # "local": its own share of the limits
        assert proxies[1].log.matching(FALLBACK_FOR_REDIS)  # "refuse": Chutes served meanwhile

        if data == "kept":
            assert await agreed_requests_today(proxies) >= booked_before
        await both_book_on_the_shared_figures(proxies)


async def both_book_on_the_shared_figures(proxies: list[ProxyProcess]) -> None:
    """One request through each process: both land on the one shared count, and each shows it."""
    today = await agreed_requests_today(proxies)
    for proxy in proxies:
        async with client(proxy.root) as c:
            assert (await c.post("/v1/chat/completions", json=chat(max_tokens=5))).status_code == 200

    async def all_show() -> bool:
        return all([await requests_today(p) == today + len(proxies) for p in proxies])

    await until(all_show, f"every process shows {today + len(proxies)} Cerebras requests today")


async def test_a_frozen_redis_holds_no_request_longer_than_the_timeout(
    providers: Providers, redis: RedisServer, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """SIGSTOP for several times `redis_timeout_ms`: the requests caught by the pause each wait
    about the timeout, later ones none (the clients' times and the log's `latency_ms` both say
    so, checked loosely); "local" keeps Cerebras serving, "refuse" sends its requests to Chutes;
    after SIGCONT both come back by themselves, the outage counted and logged once."""
    timeout, pause = 0.4, 4.0
    async with proxies_on(providers, redis, tmp_path, nursery, ("local", "refuse"), redis_timeout_ms=int(timeout * 1000)) as proxies:
        load = Load([p.root for p in proxies], concurrency=4, limit=10_000)
        nursery.start_soon(load.run)
        await until(lambda: len(load.outcomes) >= 20, "20 requests before the pause")
        redis.pause()
        try:
            paused_at = trio.current_time()
            for proxy in proxies:
                await until(lambda: disconnected(proxy), "the pause is noticed")
            during = len(load.outcomes)
            await until(lambda: len(load.outcomes) >= during + 20, "20 requests during the pause")
            await trio.sleep_until(paused_at + pause)  # a pause well past the timeout (and the margin below)
        finally:
            redis.resume()
        for proxy in proxies:
            await until(lambda: connected(proxy), "back on the shared ledger")
        after = len(load.outcomes)
        await until(lambda: len(load.outcomes) >= after + 20, "20 requests after the pause")
        await load.finish()

        assert load.errors() == [] and {o.status for o in load.outcomes} == {200}
        margin = 1.5  # a busy 2-core machine; still well short of the pause
        slowest = max(o.seconds for o in load.outcomes)
        assert slowest < timeout + margin < pause, f"a request took {slowest:.2f} s"
        for proxy in proxies:
            logged = max(int(m[1]) for m in proxy.log.matching(r"latency_ms=(\d+)"))
            assert logged < (timeout + margin) * 1000, f"the log has a request of {logged} ms"
            await outage_shown_everywhere(proxy, 1)
        assert not proxies[0].log.matching(FALLBACK_FOR_REDIS)
        assert proxies[1].log.matching(FALLBACK_FOR_REDIS)
        await both_book_on_the_shared_figures(proxies)


@pytest.mark.parametrize("fault", ["frozen", "gone"])
async def test_a_proxy_stops_promptly_while_redis_is_frozen_or_gone(
    providers: Providers, redis: RedisServer, tmp_path: Path, nursery: trio.Nursery, fault: str
) -> None:
    """SIGTERM with settlements queued for a Redis that does not answer: the queue gets its
    short flush, the client is closed, and the process exits 0 well within the grace period."""
    async with proxies_on(providers, redis, tmp_path, nursery, ("local",), redis_timeout_ms=300, shutdown_grace_ms=30_000) as proxies:
        load = Load([proxies[0].root], concurrency=2, limit=20)
        await load.run()
        assert load.errors() == []
        redis.pause() if fault == "frozen" else redis.stop()
        try:
            async with client(proxies[0].root) as c:  # noticed, and its settlement queued for nobody
                assert (await c.post("/v1/chat/completions", json=chat(max_tokens=5))).status_code == 200
            proxies[0].process.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                assert await proxies[0].process.wait() == 0
        finally:
            redis.resume() if fault == "frozen" else None


async def test_a_redis_absent_at_start_is_used_once_it_appears(
    providers: Providers, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """With "local", a Redis that is not there yet: a loud warning, the local buckets, and the
    shared ledger as soon as it answers, without a restart."""
    redis = RedisServer(free_port(), tmp_path)
    try:
        async with proxies_on(providers, redis, tmp_path, nursery, ("local",)) as (proxy,):
            assert len(proxy.log.matching(r"QUOTA IS NOT SHARED: cannot reach Redis")) == 1
            assert await disconnected(proxy)
            async with client(proxy.root) as c:
                assert (await c.post("/v1/chat/completions", json=chat(max_tokens=5))).status_code == 200
            redis.start()
            await until(lambda: connected(proxy), "the shared ledger once Redis answers")
            assert len(proxy.log.matching(BACK)) == 1
            # The local request is not Redis's: the shared figure shows once read (every second).
            await until(lambda: _equals(requests_today(proxy), 0), "the shared figure")
            await both_book_on_the_shared_figures([proxy])
    finally:
        redis.stop()
