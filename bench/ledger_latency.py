#!/usr/bin/env python3
"""What one reservation costs on the critical path: the memory ledger against the Redis ledger.

    python bench/ledger_latency.py              # 5 rounds of 2,000 reservations per cell
    python bench/ledger_latency.py --quick      # 1 round of 300

In one Trio process: a memory ledger and two Redis ledgers (a redis-server of its own on
127.0.0.1, Debian's package) with Cerebras's limits set far above what the run spends: one as
configured by default, admitting from shares booked ahead ("redis"), and one with
`redis_shares = false`, booking every request on its own as near a limit ("single"). Each
cell times `reserve()` (the Redis call a request may wait for) from `tasks` concurrent tasks,
each reservation then settled (queued: it goes with the next call to Redis, off the critical path).
Shown: the median over rounds of each round's p50 and p99 in microseconds, the reservations
per second the cell sustained, and Redis's own time per reservation, its settle included
(`INFO commandstats`: the script's total time over the reservations made through Redis), and
a bare coredis PING's p50 in the same rounds: the floor under any call to Redis from here.
`bench/overhead.py --redis` measures the same from the client's side, through HTTP.
"""

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import coredis
import trio

from trioproxy.config.schema import Config, ProviderConfig
from trioproxy.quota.contract import Ledger, Reservation
from trioproxy.quota.ledger import QuotaLedger
from trioproxy.quota.redis.ledger import RedisLedger
from trioproxy.quota.redis.store import QuotaStore
from trioproxy.testing.redis_server import running_redis

T = TypeVar("T")
BIG = 10**12
TASKS = (1, 16)
LEDGERS = ("memory", "redis", "single")


def provider() -> ProviderConfig:
    return attrs.evolve(Config().cerebras, api_key="csk-bench", requests_per_minute=BIG, tokens_per_minute=BIG, tokens_per_day=BIG)


async def cell(ledger: Ledger, tasks: int, count: int) -> tuple[list[float], float]:
    """Seconds each of `count` reservations took, from `tasks` tasks at once, and the seconds
    the whole cell took."""
    durations: list[float] = []
    began = time.perf_counter()

    async def worker(share: int) -> None:
        for _ in range(share):
            started = time.perf_counter()
            reservation = await ledger.reserve("cerebras", 2_000, floor=1_500)
            durations.append(time.perf_counter() - started)
            assert isinstance(reservation, Reservation), reservation
            await ledger.settle(reservation, 1_700)

    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(worker, count // tasks)
    return durations, time.perf_counter() - began


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


Figures = dict[tuple[str, int], list[tuple[float, float, float]]]  # (ledger, tasks) -> (p50, p99, per second) a round


async def script_stat(url: str, name: str) -> float:
    """One of Redis's figures for the ledger script so far (INFO commandstats): "calls", or
    "usec", its own time in them."""
    async with coredis.Redis.from_url(url, decode_responses=True) as client:
        stats = await client.info("commandstats")
    return float(stats.get("cmdstat_evalsha", {}).get(name, 0.0))


async def ping_p50(url: str, count: int) -> float:
    """A bare coredis PING's p50: the floor under any call to Redis from Trio through coredis."""
    durations: list[float] = []
    async with coredis.Redis.from_url(url, decode_responses=True) as client:
        for _ in range(count):
            started = time.perf_counter()
            await client.ping()
            durations.append(time.perf_counter() - started)
    return percentile(durations, 0.5)


async def measure(redis_url: str, rounds: int, count: int) -> tuple[Figures, float, float]:
    figures: Figures = {}
    pings: list[float] = []
    async with trio.open_nursery() as nursery:
        store = QuotaStore(redis_url, 5.0, allow_start_without=False)  # latency, not outages, is measured
        await nursery.start(store.run)
        ledgers: dict[str, Ledger] = {
            "memory": QuotaLedger([provider()]),
            **{name: RedisLedger([provider()], store, prefix=f"bench-{name}:", outage_policy="local", replicas=1,
                                 lease_seconds=60, replica="bench", shares=name == "redis")
               for name in ("redis", "single")},
        }
        for round_ in range(rounds):
            pings.append(await ping_p50(redis_url, count))
            for tasks in TASKS:
                for name in LEDGERS if round_ % 2 == 0 else LEDGERS[::-1]:
                    durations, seconds = await cell(ledgers[name], tasks, count)
                    await store.drained()
                    figures.setdefault((name, tasks), []).append(
                        (percentile(durations, 0.5), percentile(durations, 0.99), len(durations) / seconds)
                    )
        assert store.connected and store.dropped == 0, store.status()
        nursery.cancel_scope.cancel()
    reservations = rounds * len(TASKS) * count * 2  # both Redis ledgers
    return figures, await script_stat(redis_url, "usec") / reservations, statistics.median(pings)


def run_on_own_redis(measure: Callable[..., Awaitable[T]], *args: Any) -> T:
    """`measure(url of the Redis, *args)` in Trio, against a redis-server of its own."""
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as folder, running_redis(Path(folder)) as server:
        return trio.run(measure, server.url, *args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 300 reservations per cell")
    args = parser.parse_args(argv)
    rounds, count = (1, 320) if args.quick else (5, 2_000)
    figures, script_us, ping = run_on_own_redis(measure, rounds, count)
    print(f"reserve() latency, median of {rounds} rounds x {count} reservations (microseconds), and reservations/s;")
    print("redis: shares on (the default), single: every request booked on its own (as near a limit)")
    print(f"{'ledger':>6} {'tasks':>5}  {'p50':>7} {'p99':>7}  {'added p50':>9}  {'per s':>7}")
    for tasks in TASKS:
        memory = statistics.median(f[0] for f in figures[("memory", tasks)])
        for name in LEDGERS:
            p50, p99, rate = (statistics.median(f[i] for f in figures[(name, tasks)]) for i in (0, 1, 2))
            added = f"{(p50 - memory) * 1e6:9.1f}" if name != "memory" else ""
            print(f"{name:>6} {tasks:>5}  {p50 * 1e6:7.1f} {p99 * 1e6:7.1f}  {added:>9}  {rate:7.0f}")
    print(f"Redis's own time per reservation (both Redis ledgers), its settle included: {script_us:.1f} us")
    print(f"A bare coredis PING from Trio, one task (the floor under any Redis call): p50 {ping * 1e6:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
