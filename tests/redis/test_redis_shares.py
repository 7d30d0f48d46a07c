"""Shares of the shared quota, against a real redis-server: far from the limits a process admits
requests from a block booked ahead, without waiting on Redis, and the figures stay exact."""

from typing import Any

import trio
import trio.testing

from support.redis_ledgers import Clock, cerebras, replica, replicas, script_calls
from trioproxy.quota.contract import Refusal, Reservation
from trioproxy.quota.redis.ledger import RedisLedger, SharedReservation
from trioproxy.quota.redis.shares import FIRST_ASK, SHARE_SECONDS, Share, ShareBook
from trioproxy.testing.redis_server import RedisServer

ROOMY = {"requests_per_minute": 10_000, "tokens_per_minute": 10_000_000, "tokens_per_day": 100_000_000}


async def holding_a_share(ledger: RedisLedger) -> None:
    """The first reservation asks for a share; it is there once that call is answered."""
    first = await ledger.reserve("cerebras", 100)
    assert isinstance(first, SharedReservation)
    await ledger.settle(first, 100)
    await ledger.store.drained()
    assert "cerebras" in ledger.store_status()["shares"]


async def shared_figures(ledger: RedisLedger) -> dict[str, Any]:
    await ledger.store.drained()
    await ledger.refresh()
    return ledger.snapshot("cerebras")


async def test_far_from_the_limits_a_reservation_waits_on_nobody(nursery: trio.Nursery, redis: RedisServer) -> None:
    clock = Clock()
    (ledger,) = await replicas(nursery, redis, [cerebras(**ROOMY)], clock, count=1)
    await holding_a_share(ledger)
    taken = []
    with trio.testing.assert_no_checkpoints():  # no round trip, not even a scheduler pass
        for _ in range(3):
            taken.append(await ledger.reserve("cerebras", 100, floor=20))
    assert all(isinstance(r, SharedReservation) and r.lease for r in taken)
    assert len({r.seq for r in taken if isinstance(r, Reservation)}) == 3
    await ledger.store.drained()
    await ledger.refresh()
    assert ledger.store_status()["leases"] == {"cerebras": {"r0": 3}}  # each request has a lease of its own
    ledger.retire()
    figures = await shared_figures(ledger)
    assert figures["rpm"]["used"] == 4 and figures["tpd"]["used"] == 400  # the share's rest came back
    assert "in_shares" not in figures["rpm"]


async def test_near_the_limits_every_request_is_booked_on_its_own(nursery: trio.Nursery, redis: RedisServer) -> None:
    """20 requests a minute: a sixteenth is less than two requests, so no share."""
    clock = Clock()
    (ledger,) = await replicas(nursery, redis, [cerebras(requests_per_minute=20)], clock, count=1)
    before = await script_calls(redis)
    for _ in range(5):
        assert isinstance(await ledger.reserve("cerebras", 10), SharedReservation)
        await ledger.store.drained()
    assert await script_calls(redis) - before >= 5
    assert ledger.store_status()["shares"] == {}


async def test_shares_can_be_turned_off(nursery: trio.Nursery, redis: RedisServer) -> None:
    ledger = await replica(nursery, redis.url, [cerebras(**ROOMY)], Clock())
    off = RedisLedger(
        [cerebras(**ROOMY)], ledger.store, prefix="test:", outage_policy="local", replicas=1, lease_seconds=10.0,
        replica="off", shares=False,
    )
    for _ in range(3):
        assert isinstance(await off.reserve("cerebras", 10), SharedReservation)
    await off.store.drained()
    assert off.store_status()["shares"] == {}
    assert (await shared_figures(off))["rpm"] == {"used": 3, "limit": 10_000}


async def test_shares_across_replicas_never_overshoot_and_lose_nothing(nursery: trio.Nursery, redis: RedisServer) -> None:
    """Three replicas spend one key of 320 requests a minute (the store's clock stands still:
    nothing refills). Shares come and go while more than half is left; in all, exactly the
    limit is granted, each request once."""
    clock = Clock()
    ledgers = await replicas(nursery, redis, [cerebras(requests_per_minute=320)], clock)
    granted: list[Reservation] = []
    from_shares = 0

    async def spend(ledger: RedisLedger, count: int) -> None:
        nonlocal from_shares
        for _ in range(count):
            holding = "cerebras" in ledger.store_status()["shares"]
            reservation = await ledger.reserve("cerebras", 10)
            if isinstance(reservation, Reservation):
                granted.append(reservation)
                from_shares += holding and "cerebras" in ledger.store_status()["shares"]
                await ledger.settle(reservation, 10)
            await trio.sleep(0)

    async with trio.open_nursery() as burst:
        for i in range(30):
            burst.start_soon(spend, ledgers[i % 3], 15)
    for ledger in ledgers:
        ledger.retire()
        await ledger.store.drained()
    while isinstance(last := await ledgers[0].reserve("cerebras", 10), Reservation):
        granted.append(last)
    assert isinstance(last, Refusal) and last.reason == "rpm"
    assert from_shares >= 20  # (each share holds a few requests, a sixteenth of the limit at most)
    assert len(granted) == 320
    assert len({r.seq for r in granted}) == 320


async def test_a_provider_figure_below_half_stops_every_replicas_share(nursery: trio.Nursery, redis: RedisServer) -> None:
    clock = Clock()
    a, b = await replicas(nursery, redis, [cerebras(**ROOMY)], clock, count=2)
    await holding_a_share(a)
    seen = await b.reserve("cerebras", 100)
    assert isinstance(seen, SharedReservation)
    await b.sync(seen, {"tpm": (500.0, 30.0)})  # someone else spends the key: 500 tokens left
    await b.store.drained()
    await a.refresh()  # what a process reads anyway, every second
    assert a.store_status()["shares"] == {}
    refused = await a.reserve("cerebras", 1_000)  # the share would have taken it; Redis does not
    assert isinstance(refused, Refusal) and refused.reason == "tpm"


async def test_a_cooldown_stops_every_replicas_share(nursery: trio.Nursery, redis: RedisServer) -> None:
    clock = Clock()
    a, b = await replicas(nursery, redis, [cerebras(**ROOMY)], clock, count=2)
    await holding_a_share(a)
    assert await b.start_cooldown("cerebras", b.now() + 60, "429 tokens")
    await a.refresh()
    refused = await a.reserve("cerebras", 100)
    assert isinstance(refused, Refusal) and refused.reason == "cooldown"


async def test_a_dead_replicas_share_keeps_what_its_requests_cost_and_gives_back_the_rest(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    """Its share and its requests' leases expire: each request handed out keeps its floor (its
    prompt), the share's rest comes back, as if every request had been booked on its own."""
    clock = Clock()
    dead, alive = await replicas(nursery, redis, [cerebras(**ROOMY)], clock, count=2, lease_seconds=10.0)
    await holding_a_share(dead)
    for _ in range(3):
        assert isinstance(await dead.reserve("cerebras", 100, floor=25), SharedReservation)
    await dead.store.drained()
    dead.store.listen(None)  # it dies: nothing of it reaches Redis any more
    dead.store.close()
    clock.time += 11
    figures = await shared_figures(alive)
    assert figures["tpd"]["used"] == 100 + 3 * 25
    assert figures["rpd"]["used"] == 4  # (the minute's bucket refilled meanwhile)
    assert "in_shares" not in figures["tpd"]
    assert alive.store_status()["leases"] == {"cerebras": {}}  # no lease left of the dead one


async def test_stopping_gives_back_what_shares_did_not_hand_out(nursery: trio.Nursery, redis: RedisServer) -> None:
    clock = Clock()
    (watching,) = await replicas(nursery, redis, [cerebras(**ROOMY)], clock, count=1)
    async with trio.open_nursery() as lifetime:
        stopping = await replica(lifetime, redis.url, [cerebras(**ROOMY)], clock, name="stopping")
        await holding_a_share(stopping)
        figures = await shared_figures(watching)
        held = figures["rpm"]
        assert held["in_shares"] > 0 and held["used"] == 1 + held["in_shares"]
        assert figures["rpd"]["in_shares"] == held["in_shares"]  # shown also where no limit is set
        assert isinstance(await stopping.reserve("cerebras", 100), SharedReservation)
        stopping.store.close()
    assert (await shared_figures(watching))["rpm"] == {"used": 2, "limit": 10_000}


def test_a_share_hands_out_requests_numbered_as_if_booked_one_by_one() -> None:
    share = Share(1, "r/1", 0, requests=3, tokens=100, seq=13, cum=500, expires=10.0, revision=0)
    assert share.take(40, now=0.0) == (11, 440)
    assert share.take(40, now=0.0) == (12, 480)
    assert share.take(40, now=0.0) is None  # 120 > 100 tokens
    assert share.take(20, now=0.0) == (13, 500)
    assert share.take(1, now=0.0) is None  # three requests handed out
    assert share.unspent == (0, 0)
    late = Share(1, "r/2", 0, requests=3, tokens=100, seq=3, cum=100, expires=10.0, revision=0)
    assert late.take(1, now=10.0) is None


def test_a_share_is_asked_for_again_when_half_spent_and_sized_by_the_pace() -> None:
    book = ShareBook()
    assert book.should_ask(0.0)
    assert book.ask(100) == (FIRST_ASK, FIRST_ASK * 100, 100)
    assert not book.should_ask(0.0)  # one ask at a time
    book.granted(Share(1, "r/1", 0, FIRST_ASK, FIRST_ASK * 100, FIRST_ASK, FIRST_ASK * 100, SHARE_SECONDS, 0), 0.0)
    for _ in range(FIRST_ASK // 2 - 1):
        assert book.current is not None and book.current.take(100, 0.01)
        assert not book.should_ask(0.01)
    assert book.current is not None and book.current.take(100, 0.01)
    assert book.should_ask(0.01)
    book.ask(100)
    replaced = book.granted(Share(1, "r/2", 0, 800, 80_000, 808, 80_800, 0.02 + SHARE_SECONDS, 0), 0.02)
    assert replaced is not None and replaced.returned
    assert book.demand == 200  # 4 requests in 20 ms: 200 in a share's second


def test_a_refused_ask_or_an_idle_share_means_single_reservations_for_a_while() -> None:
    book = ShareBook()
    book.ask(10)
    book.granted(None, 5.0)
    assert not book.should_ask(5.0 + 0.5)
    assert book.should_ask(5.0 + 1.0)
    book.ask(10)
    book.granted(Share(1, "r/1", 0, 8, 80, 8, 80, 7.0, 0), 6.0)
    assert book.expired(6.5) is None
    idle = book.expired(7.0)
    assert idle is not None and idle.returned and book.demand == 0
    assert not book.should_ask(7.0 + 0.5)
    assert book.should_ask(7.0 + 1.0)


async def test_a_reload_returns_the_old_settings_shares_and_they_ask_for_no_more(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    clock = Clock()
    (old,) = await replicas(nursery, redis, [cerebras(**ROOMY)], clock, count=1)
    await holding_a_share(old)
    new = old.with_providers([cerebras(**{**ROOMY, "tokens_per_day": 200_000_000})])
    in_flight = await old.reserve("cerebras", 100)  # a request that began on the old settings
    assert isinstance(in_flight, SharedReservation)
    await old.store.drained()
    assert old.store_status()["shares"] == {}
    figures = await shared_figures(new)
    assert "in_shares" not in figures["rpm"] and figures["rpm"]["used"] == 2


async def test_a_provider_figure_counts_what_shares_hold_once(nursery: trio.Nursery, redis: RedisServer) -> None:
    """The provider saw two requests: one booked alone, one from a share of eight. The shared
    bucket ends at the provider's count (one more: booking order is conservative), not lower."""
    clock = Clock()
    (ledger,) = await replicas(nursery, redis, [cerebras(requests_per_minute=1_600)], clock, count=1)
    await holding_a_share(ledger)
    from_share = await ledger.reserve("cerebras", 100)
    assert isinstance(from_share, SharedReservation)
    await ledger.sync(from_share, {"rpm": (1_598.0, 60.0)})
    ledger.retire()
    assert (await shared_figures(ledger))["rpm"]["used"] <= 3


async def test_a_figure_far_from_any_limit_leaves_shares_alone(nursery: trio.Nursery, redis: RedisServer) -> None:
    """No requests-per-day limit is set, but the provider tells its figure: one that counts a
    request booked after its own (ordinary concurrency) is a little lower than ours, and
    14,000 requests are left: the share goes on."""
    clock = Clock()
    (ledger,) = await replicas(nursery, redis, [cerebras(**ROOMY)], clock, count=1)
    await holding_a_share(ledger)
    first, second = [await ledger.reserve("cerebras", 100) for _ in range(2)]
    assert isinstance(first, SharedReservation) and isinstance(second, SharedReservation)
    await ledger.sync(first, {"rpd": (14_000.0, 80_000.0)})
    await ledger.sync(second, {"rpd": (13_998.0, 80_000.0)})
    await ledger.store.drained()
    assert "cerebras" in ledger.store_status()["shares"]
    with trio.testing.assert_no_checkpoints():
        assert isinstance(await ledger.reserve("cerebras", 100), SharedReservation)


async def test_requests_handed_out_after_the_providers_day_ended_count_in_the_new_day(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    clock = Clock()
    clock.time = (clock.time // 86_400 + 1) * 86_400 - 0.5  # half a second before UTC midnight
    (ledger,) = await replicas(nursery, redis, [cerebras(**ROOMY)], clock, count=1)
    await holding_a_share(ledger)
    clock.time += 1.0
    for _ in range(2):
        assert isinstance(await ledger.reserve("cerebras", 100), SharedReservation)
    ledger.retire()
    figures = await shared_figures(ledger)
    assert figures["rpd"]["used"] == 2 and figures["tpd"]["used"] == 200


async def test_a_share_outlives_a_short_lease_setting_so_late_requests_never_overshoot(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    """redis_lease_ttl_ms of half a second: a share's lease still lasts longer than the share,
    so what it holds is never booked by another process meanwhile."""
    clock = Clock()
    a, b = await replicas(nursery, redis, [cerebras(tokens_per_day=16_000)], clock, count=2, lease_seconds=0.5)
    await holding_a_share(a)
    clock.time += 0.6  # past the lease setting; the share lives on in its process
    while isinstance(await b.reserve("cerebras", 100), Reservation):
        pass
    while "cerebras" in a.store_status()["shares"] and isinstance(await a.reserve("cerebras", 100), Reservation):
        pass
    await a.store.drained()
    assert (await shared_figures(b))["tpd"]["used"] <= 16_000


async def test_a_share_granted_after_its_ledger_retired_comes_back_at_once(nursery: trio.Nursery, redis: RedisServer) -> None:
    """A reload while a share is being asked for: the answer reaches the old settings' ledger,
    which returns it instead of holding it until its lease expires."""
    clock = Clock()
    old, watching = await replicas(nursery, redis, [cerebras(**ROOMY)], clock, count=2)
    nursery.start_soon(old.reserve, "cerebras", 100)  # asks for a share, and books itself
    with trio.fail_after(5):
        while not old._shares._books["cerebras"].asking:  # (the ask is queued, not yet sent)
            await trio.sleep(0)
    old.with_providers([cerebras(**ROOMY)])
    await old.store.drained()
    assert "in_shares" not in (await shared_figures(watching))["rpm"]


async def test_a_share_booked_by_a_call_that_timed_out_is_given_back_once_redis_answers(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    """Redis stalls past the timeout while a share is asked for, then books it: the process
    never heard of it, so it tells Redis to end it once Redis answers again."""
    clock = Clock()
    (ledger,) = await replicas(nursery, redis, [cerebras(**ROOMY)], clock, count=1, timeout=0.3)
    (watching,) = await replicas(nursery, redis, [cerebras(**ROOMY)], clock, count=1)
    await redis_cli(redis, "CLIENT", "PAUSE", "800", "WRITE")
    await ledger.reserve("cerebras", 100)  # asks for a share; the call times out (served locally)
    with trio.fail_after(10):
        while not ledger.store.connected:
            await trio.sleep(0.05)
    await ledger.refresh()  # what it does every second
    assert "in_shares" not in (await shared_figures(watching))["rpm"]


async def test_requests_handed_out_stay_booked_when_their_lease_never_reaches_redis(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    """The connection carrying three requests' leases breaks before Redis runs the call: those
    requests went all the same, so returning the share gives back only what it did not hand out."""
    clock = Clock()
    (ledger,) = await replicas(nursery, redis, [cerebras(**ROOMY)], clock, count=1, timeout=2.0)
    (watching,) = await replicas(nursery, redis, [cerebras(**ROOMY)], clock, count=1)
    await holding_a_share(ledger)
    await redis_cli(redis, "CLIENT", "PAUSE", "3000", "WRITE")
    for _ in range(3):
        assert isinstance(await ledger.reserve("cerebras", 100, floor=25), SharedReservation)
    with trio.fail_after(5):  # the call with their leases waits in Redis
        while "blocked_clients:1" not in await redis_cli(redis, "INFO", "clients"):
            await trio.sleep(0.01)
    await redis_cli(redis, "CLIENT", "KILL", "TYPE", "normal")
    await redis_cli(redis, "CLIENT", "UNPAUSE")
    with trio.fail_after(10):
        while not ledger.store.connected:
            await trio.sleep(0.05)
    ledger.retire()
    await ledger.store.drained()
    figures = await shared_figures(watching)
    assert figures["rpd"]["used"] == 4 and figures["tpd"]["used"] == 400


async def redis_cli(redis: RedisServer, *command: str) -> str:
    result = await trio.run_process(["redis-cli", "-p", str(redis.port), *command], capture_stdout=True)
    return result.stdout.decode()
