#!/usr/bin/env python3
"""What a patient request Cerebras cannot take waits for before it goes elsewhere, and how many
calls of the ledger script it costs: the memory ledger against the Redis ledger.

    python bench/patience_latency.py              # 5 rounds of 300 decisions per cell
    python bench/patience_latency.py --quick      # 1 round of 100

In one Trio process: a memory ledger and a Redis ledger (a redis-server of its own on
127.0.0.1, Debian's package), Cerebras allowed one request a minute and already spent, Chutes
without limits. Each cell times `Patience.reserve` (everything patience asks the ledger before
it hands the request on) for one task at a time, in three cases:
  fall back  a fresh Patience each time: refused, then Chutes's quota asked; Chutes's 4 s
             beat Cerebras's 60 s wait
  contested  one Patience for the cell: requests passed over Cerebras lately would take its
             returning quota anyway, so none waits for it
  too long   the wait is longer than max_wait
Shown: the median over rounds of each round's p50 and p99 in microseconds, and the calls of the
ledger script per decision (`INFO commandstats`), each a round trip the request waits for.
(A request that waits costs one call more, for the reservation after the refill; see
tests/redis/test_redis_patience.py.)
"""

import argparse
import statistics
import sys
import time

import attrs
import trio

from ledger_latency import percentile, run_on_own_redis, script_stat
from trioproxy.config.schema import Config, ProviderConfig
from trioproxy.secrets import Sanitizer
from trioproxy.providers.upstream import Deadlines, ProviderClient, Upstream
from trioproxy.quota.contract import Ledger, Refusal, Reservation
from trioproxy.quota.ledger import QuotaLedger
from trioproxy.quota.redis.ledger import RedisLedger
from trioproxy.quota.redis.store import QuotaStore
from trioproxy.routing.patience import Pace, Patience

PACES = {"cerebras": Pace(0.3, 2_000.0), "chutes": Pace(2.0, 50.0)}
# case -> (max_wait seconds, a fresh Patience for each decision)
CASES = {"fall back": (120.0, True), "contested": (120.0, False), "too long": (30.0, True)}
BODY = {"messages": [{"role": "user", "content": "task"}], "max_tokens": 100}


def providers() -> list[ProviderConfig]:
    config = Config()
    return [
        attrs.evolve(config.cerebras, api_key="csk-bench", requests_per_minute=1, tokens_per_minute=None, tokens_per_day=None, plan=None),
        attrs.evolve(config.chutes, api_key="cpk-bench"),
    ]


async def cell(ledger: Ledger, upstreams: list[Upstream], case: str, count: int) -> list[float]:
    """Seconds each of `count` decisions took; every one must hand the request on."""
    max_wait, fresh = CASES[case]
    patience = Patience(ledger, PACES, max_wait)
    durations: list[float] = []
    for _ in range(count):
        if fresh:
            patience = Patience(ledger, PACES, max_wait)
        started = time.perf_counter()
        got = await patience.reserve(upstreams[0], 100, BODY, upstreams[1:])
        durations.append(time.perf_counter() - started)
        assert isinstance(got, Refusal), got
    return durations


Figures = dict[tuple[str, str], list[tuple[float, float, float]]]  # (ledger, case) -> (p50, p99, calls each) a round


async def measure(redis_url: str, rounds: int, count: int) -> Figures:
    figures: Figures = {}
    configs = providers()
    clients = [ProviderClient.for_provider(c, 5.0) for c in configs]
    upstreams = [Upstream(c, client, Sanitizer(()), Deadlines(10, 10, 10)) for c, client in zip(configs, clients)]
    async with trio.open_nursery() as nursery:
        store = QuotaStore(redis_url, 5.0, allow_start_without=False)
        await nursery.start(store.run)
        store.refresh = None  # the operators' view refresh would add calls of its own
        ledgers: dict[str, Ledger] = {
            "memory": QuotaLedger(configs),
            "redis": RedisLedger(configs, store, prefix="bench:", outage_policy="local", replicas=1,
                                 lease_seconds=60, replica="bench"),
        }
        for ledger in ledgers.values():  # Cerebras's one request this minute
            assert isinstance(await ledger.reserve("cerebras", 100), Reservation)
        for round_ in range(rounds):
            for case in CASES:
                for name in (("memory", "redis") if round_ % 2 == 0 else ("redis", "memory")):
                    before = await script_stat(redis_url, "calls")
                    durations = await cell(ledgers[name], upstreams, case, count)
                    calls = (await script_stat(redis_url, "calls") - before) / count
                    figures.setdefault((name, case), []).append(
                        (percentile(durations, 0.5), percentile(durations, 0.99), calls)
                    )
        assert store.connected, store.status()
        nursery.cancel_scope.cancel()
    for client in clients:
        await client.aclose()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 100 decisions per cell")
    args = parser.parse_args(argv)
    rounds, count = (1, 100) if args.quick else (5, 300)
    figures = run_on_own_redis(measure, rounds, count)
    print(f"A refused patient request's decision, median of {rounds} rounds x {count} decisions (microseconds)")
    print(f"{'case':>10}  {'memory p50':>10} {'memory p99':>10}  {'redis p50':>9} {'redis p99':>9}  {'script calls each':>17}")
    for case in CASES:
        memory = [statistics.median(f[i] for f in figures[("memory", case)]) for i in (0, 1)]
        redis = [statistics.median(f[i] for f in figures[("redis", case)]) for i in (0, 1, 2)]
        print(f"{case:>10}  {memory[0] * 1e6:>10.1f} {memory[1] * 1e6:>10.1f}  {redis[0] * 1e6:>9.1f} {redis[1] * 1e6:>9.1f}  "
              f"{redis[2]:>17.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
