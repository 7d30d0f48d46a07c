"""The shared quota ledger against a real redis-server: several ledgers (replicas) on one Redis."""

from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from support.redis_ledgers import Clock, cerebras, chutes, replica, replicas, script_calls, start_unwrapped
from trioproxy.config.schema import Config
from trioproxy.quota.backends import open_ledger
from trioproxy.quota.contract import Refusal, Reservation
from trioproxy.quota.redis.ledger import RedisLedger, SharedReservation
from trioproxy.quota.redis.client import QuotaStoreError
from trioproxy.quota.redis.lanes import IDLE_LANE_SECONDS
from trioproxy.quota.redis.store import QuotaStore
from trioproxy.testing.ports import free_port
from trioproxy.testing.redis_server import RedisServer, running_redis


async def test_concurrent_reservations_from_three_replicas_never_overshoot(nursery: trio.Nursery, redis: RedisServer) -> None:
    clock = Clock()
    ledgers = await replicas(nursery, redis, [cerebras(requests_per_minute=10, tokens_per_minute=5_000)], clock)
    results: list[Reservation | Refusal] = []

    async def ask(ledger: RedisLedger) -> None:
        results.append(await ledger.reserve("cerebras", 400))

    async with trio.open_nursery() as burst:
        for i in range(60):
            burst.start_soon(ask, ledgers[i % 3])
    granted = [r for r in results if isinstance(r, Reservation)]
    assert len(results) == 60
    assert len(granted) == 10  # rpm binds: 10 x 400 = 4,000 tokens fit in 5,000
    assert {r.reason for r in results if isinstance(r, Refusal)} == {"rpm"}
    assert all(isinstance(r, SharedReservation) for r in granted)
    assert sorted(r.seq for r in granted) == list(range(1, 11))  # one booking order, across replicas


async def test_a_burst_of_reservations_and_their_settlements_costs_one_call_or_two(nursery: trio.Nursery, redis: RedisServer) -> None:
    """Requests arriving together wait for one call between them, not one call each."""
    clock = Clock()
    (ledger,) = await replicas(nursery, redis, [cerebras(requests_per_minute=100)], clock, count=1)
    calls_before = await script_calls(redis)
    granted: list[Reservation | Refusal] = []

    async def ask() -> None:
        granted.append(reservation := await ledger.reserve("cerebras", 10))
        assert isinstance(reservation, SharedReservation)
        await ledger.settle(reservation, 5)

    async with trio.open_nursery() as burst:
        for _ in range(16):
            burst.start_soon(ask)
    await ledger.store.drained()
    assert len({r.seq for r in granted if isinstance(r, SharedReservation)}) == 16  # each booked once
    assert await script_calls(redis) - calls_before <= 3  # the 16 reservations, their 16 settlements (and a view)



async def test_a_backlog_of_settlements_never_holds_up_a_reservation(nursery: trio.Nursery, redis: RedisServer) -> None:
    """200 settlements queued, then a reservation: it rides the very next call, not the fourth
    (a batch carries 64 operations)."""
    clock = Clock()
    (ledger,) = await replicas(nursery, redis, [cerebras(requests_per_minute=1_000)], clock, count=1)
    reservations: list[Reservation | Refusal] = []

    async def ask() -> None:
        reservations.append(await ledger.reserve("cerebras", 10))

    async with trio.open_nursery() as burst:
        for _ in range(200):
            burst.start_soon(ask)
    calls_before = await script_calls(redis)
    for reservation in reservations:
        assert isinstance(reservation, SharedReservation)
        await ledger.settle(reservation, 5)
    assert isinstance(await ledger.reserve("cerebras", 10), SharedReservation)
    assert await script_calls(redis) - calls_before <= 2  # that call (and the once-a-second view, if it fell here)


async def test_tokens_per_minute_bind_across_replicas_and_settling_refunds(nursery: trio.Nursery, redis: RedisServer) -> None:
    clock = Clock()
    a, b = await replicas(nursery, redis, [cerebras(tokens_per_minute=1_000)], clock, count=2)
    first = await a.reserve("cerebras", 800, floor=100)
    assert isinstance(first, SharedReservation)
    refused = await b.reserve("cerebras", 300)
    assert isinstance(refused, Refusal) and refused.reason == "tpm"
    await a.settle(first, 150)  # 650 come back
    await a.store.drained()
    assert isinstance(await b.reserve("cerebras", 600), SharedReservation)
    assert isinstance(await b.reserve("cerebras", 300), Refusal)



async def test_settling_refunds_the_days_tokens_after_the_provider_named_its_day(nursery: trio.Nursery, redis: RedisServer) -> None:
    """The provider's reset figure moves the day's end a little with every answer; the
    reservation's unused tokens still come back to the day's count."""
    clock = Clock()
    a, b = await replicas(nursery, redis, [cerebras(tokens_per_day=1_000)], clock, count=2)
    first = await a.reserve("cerebras", 800)
    assert isinstance(first, SharedReservation)
    clock.time += 0.5
    await a.sync(first, {"tpd": (99_000.0, 3_600.3)})  # a day's end 0.5 s later than at booking
    await a.settle(first, 200)  # 600 come back
    await a.store.drained()
    assert isinstance(await b.reserve("cerebras", 800), SharedReservation)
    refused = await b.reserve("cerebras", 1)
    assert isinstance(refused, Refusal) and refused.reason == "tpd"


async def test_settlements_queued_at_shutdown_still_reach_redis(nursery: trio.Nursery, redis: RedisServer) -> None:
    clock = Clock()
    limits = [cerebras(tokens_per_minute=1_000)]
    async with trio.open_nursery() as stopping:
        (leaving,) = await replicas(stopping, redis, limits, clock, count=1)
        reservation = await leaving.reserve("cerebras", 900)
        assert isinstance(reservation, SharedReservation)
        await leaving.settle(reservation, 100)  # queued, then the process shuts down at once
        stopping.cancel_scope.cancel()
    (staying,) = await replicas(nursery, redis, limits, clock, count=1)
    assert isinstance(await staying.reserve("cerebras", 850), SharedReservation)  # the 800 came back


async def test_a_dead_replicas_lease_expires_and_gives_back_all_but_its_floor(nursery: trio.Nursery, redis: RedisServer) -> None:
    clock = Clock()
    dead, alive = await replicas(nursery, redis, [cerebras(tokens_per_day=1_000)], clock, count=2, lease_seconds=10.0)
    assert isinstance(await dead.reserve("cerebras", 900, floor=100), SharedReservation)  # never settled
    assert isinstance(await alive.reserve("cerebras", 500), Refusal)
    clock.time += 9
    assert isinstance(await alive.reserve("cerebras", 500), Refusal)  # the lease still holds
    clock.time += 2
    granted = await alive.reserve("cerebras", 500)
    assert isinstance(granted, SharedReservation)  # 100 kept + 500 = 600 of 1,000 today
    await alive.refresh()
    assert alive.snapshot("cerebras")["tpd"]["used"] == 600
    assert alive.store_status()["leases"] == {"cerebras": {"r1": 1}}  # only the live one's lease is left


async def test_a_late_settle_after_expiry_corrects_from_the_floor(nursery: trio.Nursery, redis: RedisServer) -> None:
    clock = Clock()
    (ledger,) = await replicas(nursery, redis, [cerebras(tokens_per_day=10_000)], clock, count=1, lease_seconds=10.0)
    slow = await ledger.reserve("cerebras", 900, floor=100)
    assert isinstance(slow, SharedReservation)
    clock.time += 11
    await ledger.refresh()  # expires the lease: 100 stay booked
    assert ledger.snapshot("cerebras")["tpd"]["used"] == 100
    await ledger.settle(slow, 300)  # the stream was longer than the lease: 200 more were spent
    await ledger.store.drained()
    await ledger.refresh()
    assert ledger.snapshot("cerebras")["tpd"]["used"] == 300


async def test_header_figures_lower_the_shared_bucket_for_every_replica_and_never_raise_it(nursery: trio.Nursery, redis: RedisServer) -> None:
    clock = Clock()
    a, b = await replicas(nursery, redis, [cerebras(tokens_per_minute=100_000)], clock, count=2)
    first = await a.reserve("cerebras", 1_000)
    assert isinstance(first, SharedReservation)
    await a.sync(first, {"tpm": (2_000.0, 30.0)})  # someone else spends the key too
    await a.store.drained()
    assert isinstance(await b.reserve("cerebras", 1_500), SharedReservation)
    refused = await b.reserve("cerebras", 1_000)
    assert isinstance(refused, Refusal) and refused.reason == "tpm"
    await a.sync(first, {"tpm": (90_000.0, 30.0)})  # a higher figure is not taken
    await a.store.drained()
    assert isinstance(await b.reserve("cerebras", 1_000), Refusal)


async def test_daily_figures_without_a_limit_stop_every_replica_until_the_reset(nursery: trio.Nursery, redis: RedisServer) -> None:
    clock = Clock()
    a, b = await replicas(nursery, redis, [cerebras()], clock, count=2)
    first = await a.reserve("cerebras", 10)
    assert isinstance(first, SharedReservation)
    await a.sync(first, {"rpd": (1.0, 600.0)})
    await a.store.drained()
    assert isinstance(await b.reserve("cerebras", 10), SharedReservation)  # the last one today
    refused = await a.reserve("cerebras", 10)
    assert isinstance(refused, Refusal) and refused.reason == "rpd"
    clock.time += 601
    assert isinstance(await a.reserve("cerebras", 10), SharedReservation)


async def test_cooldowns_are_shared_the_later_deadline_wins_and_one_replica_probes(nursery: trio.Nursery, redis: RedisServer) -> None:
    clock = Clock()
    a, b = await replicas(nursery, redis, [cerebras()], clock, count=2)
    assert await a.start_cooldown("cerebras", a.now() + 60, "429 tokens")
    assert not await b.start_cooldown("cerebras", b.now() + 10, "429 capacity")  # shorter: ignored
    refused = await b.reserve("cerebras", 10)
    assert isinstance(refused, Refusal) and refused.reason == "cooldown"
    assert b.in_cooldown("cerebras") and b.snapshot("cerebras")["cooldown_reason"] == "429 tokens"
    clock.time += 61
    probe = await b.reserve("cerebras", 10)
    assert isinstance(probe, SharedReservation) and probe.probe
    waiting = await a.reserve("cerebras", 10)
    assert isinstance(waiting, Refusal) and waiting.reason == "probe"
    b.finish_probe(probe, succeeded=True)
    await b.store.drained()
    normal = await a.reserve("cerebras", 10)
    assert isinstance(normal, SharedReservation) and not normal.probe


async def test_a_refusal_check_books_nothing_and_names_the_limit_that_holds_longest(nursery: trio.Nursery, redis: RedisServer) -> None:
    clock = Clock()
    a, b = await replicas(nursery, redis, [cerebras(requests_per_minute=2, tokens_per_minute=1_000)], clock, count=2)
    assert await b.refusal("cerebras", 500) is None
    assert await b.refusal("cerebras", 500) is None  # asking booked nothing
    assert isinstance(await a.reserve("cerebras", 900), SharedReservation)
    one = await b.refusal("cerebras", 500)  # 100 tokens left: 400 more at 1,000 a minute
    assert isinstance(one, Refusal) and one.reason == "tpm"
    assert one.retry_at - b.now() == pytest.approx(24.0, abs=0.5)
    two = await b.refusal("cerebras", 500, requests=2)  # and one request left: the 2nd in 30 s
    assert isinstance(two, Refusal) and two.reason == "rpm"
    assert two.retry_at - b.now() == pytest.approx(30.0, abs=0.5)
    assert await b.refusal("cerebras", 100) is None


async def test_a_refused_reservation_names_the_limit_that_holds_it_longest(nursery: trio.Nursery, redis: RedisServer) -> None:
    """No requests left this minute (one back in 30 s) and 5 tokens (900 back in 53.7 s): the
    refusal says tokens, as the check without booking does, so a caller need not ask again."""
    clock = Clock()
    a, b = await replicas(nursery, redis, [cerebras(requests_per_minute=2, tokens_per_minute=1_000)], clock, count=2)
    assert isinstance(await a.reserve("cerebras", 990), SharedReservation)
    assert isinstance(await a.reserve("cerebras", 5), SharedReservation)
    refused = await b.reserve("cerebras", 900)
    assert isinstance(refused, Refusal) and refused.reason == "tpm"
    assert refused.retry_at - b.now() == pytest.approx(53.7, abs=0.5)
    assert await b.refusal("cerebras", 900) == Refusal("tpm", pytest.approx(refused.retry_at, abs=0.01))


async def test_a_reservation_whose_caller_left_comes_back_whole(nursery: trio.Nursery, redis: RedisServer) -> None:
    """Cancelled while its call was on the way: nothing was sent on it, so nothing stays
    booked (its lease would otherwise hold the tokens until it expires)."""
    clock = Clock()  # (it stands still: nothing refills)
    (ledger,) = await replicas(nursery, redis, [cerebras(requests_per_minute=1, tokens_per_minute=1_000)], clock, count=1)
    with trio.move_on_after(0):
        await ledger.reserve("cerebras", 900, floor=500)
        pytest.fail("the reservation should have been cancelled")
    with trio.fail_after(5):  # its tokens and its request come back
        while not isinstance(await ledger.reserve("cerebras", 1_000), SharedReservation):
            await trio.sleep(0.01)


async def test_several_keys_spread_over_accounts_in_any_order(nursery: trio.Nursery, redis: RedisServer) -> None:
    """Replicas that list the same keys in another order still share each key's quota."""
    clock = Clock()
    one = cerebras(requests_per_minute=2, api_key="csk-a", api_keys=("csk-b",))
    other = cerebras(requests_per_minute=2, api_key="csk-b", api_keys=("csk-a",))
    a = await replica(nursery, redis.url, [one], clock, name="a")
    b = await replica(nursery, redis.url, [other], clock, name="b")
    keys = []
    for ledger, config in ((a, one), (b, other), (a, one), (b, other)):
        granted = await ledger.reserve("cerebras", 1)
        assert isinstance(granted, SharedReservation)
        keys.append(config.keys[granted.key_index])
    assert sorted(keys) == ["csk-a", "csk-a", "csk-b", "csk-b"]
    assert isinstance(await a.reserve("cerebras", 1), Refusal)


async def test_outage_with_local_policy_serves_on_a_share_of_the_limits_and_comes_back(nursery: trio.Nursery, redis: RedisServer) -> None:
    (ledger,) = await replicas(nursery, redis, [cerebras(requests_per_minute=9), chutes()], None, count=1, replicas=3)
    assert isinstance(await ledger.reserve("cerebras", 10), SharedReservation)
    redis.stop()
    local = [await ledger.reserve("cerebras", 10) for _ in range(4)]
    assert all(isinstance(r, Reservation) and not isinstance(r, SharedReservation) for r in local[:3])
    assert isinstance(local[3], Refusal)  # 9 / 3 replicas = 3 a minute while alone
    status = ledger.store_status()
    assert status["connected"] is False and status["outages"] == 1
    redis.start()
    with trio.fail_after(15):
        while not ledger.store.connected:
            await trio.sleep(0.05)
    assert isinstance(await ledger.reserve("cerebras", 10), SharedReservation)
    assert ledger.store_status()["outages"] == 1


async def test_outage_with_refuse_policy_sends_limited_providers_away(nursery: trio.Nursery, redis: RedisServer) -> None:
    (ledger,) = await replicas(nursery, redis, [cerebras(requests_per_minute=9), chutes()], None, count=1, policy="refuse")
    redis.stop()
    refused = await ledger.reserve("cerebras", 10)
    assert isinstance(refused, Refusal) and refused.reason == "redis"
    assert isinstance(await ledger.reserve("chutes", 10), Reservation)  # no limits: nothing to share


async def test_a_paused_redis_costs_a_request_no_more_than_the_timeout_and_books_nothing(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    """The reservation a frozen Redis answers after it wakes is not booked: it was served elsewhere."""
    (ledger,) = await replicas(nursery, redis, [cerebras(requests_per_minute=9)], None, count=1, timeout=0.2)
    first = await ledger.reserve("cerebras", 10)
    assert isinstance(first, SharedReservation)
    redis.pause()
    try:
        started = trio.current_time()
        fallback = await ledger.reserve("cerebras", 10)
        assert trio.current_time() - started < 2.0  # the timeout (0.2 s), not a hang; margin for a busy machine
        assert isinstance(fallback, Reservation) and not isinstance(fallback, SharedReservation)
        await trio.sleep_until(started + 1.0)  # Redis wakes past the reservation's book-by time (2 x 0.2 s)
    finally:
        redis.resume()
    with trio.fail_after(15):
        while not ledger.store.connected:
            await trio.sleep(0.05)
    after = await ledger.reserve("cerebras", 10)
    assert isinstance(after, SharedReservation) and after.seq == first.seq + 1  # the frozen call booked nothing


async def test_wrong_password_stops_the_start_naming_the_setting(nursery: trio.Nursery, tmp_path: Path) -> None:
    with running_redis(tmp_path, password="right") as server:
        store = QuotaStore(server.url.replace(":right@", ":wrong@"), 0.5, allow_start_without=True)
        with pytest.raises(QuotaStoreError, match="^redis_url: Redis refused the credentials"):
            await start_unwrapped(store)


async def test_absent_redis_stops_the_start_unless_the_policy_serves_without_it(nursery: trio.Nursery) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(QuotaStoreError, match="^redis_url: cannot reach Redis"):
        await start_unwrapped(QuotaStore(url, 0.5, allow_start_without=False))
    store = QuotaStore(url, 0.5, allow_start_without=True)
    await nursery.start(store.run)
    assert store.connected is False and store.outages == 1
    store.close()


async def test_a_reload_that_changes_the_limits_leaves_no_idle_sender_behind(
    nursery: trio.Nursery, redis: RedisServer, patient_clock: trio.testing.MockClock
) -> None:
    """Each provider's lane has one sender task; the lane of the limits a reload replaced ends."""
    store = QuotaStore(redis.url, 10.0, allow_start_without=False)
    await nursery.start(store.run)

    def senders() -> int:
        return store.lane_senders

    idle = senders()
    def reloaded(limit: int) -> RedisLedger:  # a reload builds a new ledger on the same store
        return RedisLedger([cerebras(requests_per_minute=limit)], store, prefix="test:", outage_policy="local",
                           replicas=1, lease_seconds=10.0, replica="r1")

    for limit in (10, 20):
        assert isinstance(await reloaded(limit).reserve("cerebras", 10), SharedReservation)
    assert senders() == idle + 2
    await trio.sleep(IDLE_LANE_SECONDS + 1)
    assert senders() == idle + 1  # the current ledger's lane stays: its figures are read every second
    assert isinstance(await reloaded(10).reserve("cerebras", 10), SharedReservation)  # a lane used again starts again
    assert senders() == idle + 2


async def test_a_new_ledger_shows_the_shared_figures_at_once(nursery: trio.Nursery, redis: RedisServer) -> None:
    """Not the local stand-in's (at limit / replicas) until the first once-a-second refresh."""
    provider = cerebras(requests_per_minute=12)
    config = attrs.evolve(Config(), quota_backend="redis", redis_url=redis.url, replicas=2, cerebras=provider)
    ledger = await open_ledger(config, [provider], nursery, None)
    assert ledger.snapshot("cerebras")["rpm"] == {"used": 0, "limit": 12}
