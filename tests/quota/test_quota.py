"""The quota ledger on Trio's mock clock: windows, reservations under concurrency, cooldowns."""

import attrs
import pytest
import trio
import trio.testing

from trioproxy.config.schema import Config, ProviderConfig
from trioproxy.quota.cooldown import CooldownTimers
from trioproxy.quota.contract import Refusal, Reservation
from trioproxy.quota.ledger import QuotaLedger
from trioproxy.quota.windows import BIN_SECONDS, DAY, DailyWindow, RefillingBucket, SlidingWindow
from trioproxy.routing.tokens import PromptEstimator


def cerebras(**settings: object) -> ProviderConfig:
    return attrs.evolve(Config().cerebras, **settings)


def test_window_forgets_entries_older_than_its_span() -> None:
    """An amount counts for exactly `span` seconds after it was added."""
    window = SlidingWindow(100, span=60.0)
    window.add(0.0, 70)
    window.add(30.0, 20)
    assert window.used(59.9) == 90
    assert window.used(60.0) == 20
    assert window.used(90.0) == 0


def test_window_tells_when_an_amount_fits_again() -> None:
    """seconds_until_fits names the moment enough old entries have left."""
    window = SlidingWindow(100, span=60.0)
    window.add(0.0, 60)
    window.add(10.0, 30)
    assert window.fits(20.0, 10)
    assert not window.fits(20.0, 50)
    assert window.seconds_until_fits(20.0, 50) == 40.0  # the 60 at t=0 leaves at t=60
    assert window.seconds_until_fits(20.0, 500) == 60.0  # never fits: one whole window


def test_window_adjust_ignores_entries_already_gone() -> None:
    """Settling a reservation that left the window does not corrupt the total."""
    window = SlidingWindow(100, span=60.0)
    entry = window.add(0.0, 50)
    window.used(61.0)
    window.adjust(entry, 10)
    assert window.used(61.0) == 0


async def test_each_limit_refuses_with_its_own_reason(mock_clock: trio.testing.MockClock) -> None:
    """rpm, tpm and tpd each refuse once crossed, and name themselves."""
    ledger = QuotaLedger([cerebras(requests_per_minute=2, tokens_per_minute=1000, tokens_per_day=1500)])
    assert isinstance(await ledger.reserve("cerebras", 400), Reservation)
    refusal = await ledger.reserve("cerebras", 700)
    assert isinstance(refusal, Refusal) and refusal.reason == "tpm"
    assert isinstance(await ledger.reserve("cerebras", 500), Reservation)
    refusal = await ledger.reserve("cerebras", 1)
    assert isinstance(refusal, Refusal) and refusal.reason == "rpm"
    assert refusal.retry_at == 30.0  # the bucket of 2 a minute refills one request every 30 s
    mock_clock.jump(61)
    refusal = await ledger.reserve("cerebras", 700)
    assert isinstance(refusal, Refusal) and refusal.reason == "tpd"
    mock_clock.jump(86_400)
    assert isinstance(await ledger.reserve("cerebras", 700), Reservation)


async def test_a_refusal_names_the_limit_that_holds_the_request_longest(mock_clock: trio.testing.MockClock) -> None:
    """No requests left this minute (one back in 30 s) and 5 tokens (900 back in 53.7 s): the
    refusal says tokens, as the check without booking does, so a caller need not ask again."""
    ledger = QuotaLedger([cerebras(requests_per_minute=2, tokens_per_minute=1_000)])
    assert isinstance(await ledger.reserve("cerebras", 990), Reservation)
    assert isinstance(await ledger.reserve("cerebras", 5), Reservation)
    refused = await ledger.reserve("cerebras", 900)
    assert refused == Refusal("tpm", pytest.approx(53.7)) == await ledger.refusal("cerebras", 900)


async def test_settle_replaces_the_estimate_with_the_real_count(mock_clock: trio.testing.MockClock) -> None:
    """A request estimated high frees the difference once usage arrives."""
    ledger = QuotaLedger([cerebras(tokens_per_minute=1000)])
    reservation = await ledger.reserve("cerebras", 900)
    assert isinstance(reservation, Reservation)
    assert isinstance(await ledger.reserve("cerebras", 200), Refusal)
    await ledger.settle(reservation, 100)
    assert ledger.snapshot("cerebras")["tpm"]["used"] == 100
    assert isinstance(await ledger.reserve("cerebras", 200), Reservation)


async def test_ledger_calls_are_no_cancellation_points(mock_clock: trio.testing.MockClock) -> None:
    """A cancel that lands as a provider answers cannot cut a settlement or header sync short:
    the memory ledger's calls have no checkpoint, so they run whole even in a cancelled scope."""
    ledger = QuotaLedger([cerebras(tokens_per_minute=1000)])
    with trio.CancelScope() as scope:
        scope.cancel()
        reservation = await ledger.reserve("cerebras", 400)
        assert isinstance(reservation, Reservation)
        await ledger.settle(reservation, 100)
        settled = ledger.snapshot("cerebras")["tpm"]["used"]
        await ledger.sync(reservation, {"tpm": (500.0, 30.0)})
    assert not scope.cancelled_caught
    assert settled == 100 and ledger.snapshot("cerebras")["tpm"]["used"] == 500  # the provider said 500 remain


async def test_fifty_concurrent_reservations_never_overshoot(mock_clock: trio.testing.MockClock) -> None:
    """Requests arriving at the same instant get exactly the slots the limits allow."""
    ledger = QuotaLedger([cerebras(requests_per_minute=12, tokens_per_minute=5000)])
    granted: list[Reservation] = []
    refused: list[Refusal] = []

    async def one() -> None:
        result = await ledger.reserve("cerebras", 300)
        (granted if isinstance(result, Reservation) else refused).append(result)  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(one)
    assert len(granted) == 12
    assert len(refused) == 38
    assert ledger.snapshot("cerebras")["tpm"]["used"] == 12 * 300 <= 5000


async def test_cooldown_timer_ends_the_cooldown_on_time(mock_clock: trio.testing.MockClock) -> None:
    """A cooldown refuses until its end, and the supervisor's timer task then lifts it."""
    ledger = QuotaLedger([cerebras()])
    async with trio.open_nursery() as nursery:
        timers = CooldownTimers(nursery, ledger)
        await timers.start("cerebras", 300, "429")
        refusal = await ledger.reserve("cerebras", 1)
        assert isinstance(refusal, Refusal) and refusal.reason == "cooldown"
        assert ledger.snapshot("cerebras")["cooldown_reason"] == "429"
        mock_clock.jump(299)
        await trio.testing.wait_all_tasks_blocked()
        assert ledger.in_cooldown("cerebras")
        mock_clock.jump(1)
        await trio.testing.wait_all_tasks_blocked()
        assert not ledger.in_cooldown("cerebras")
        assert ledger.snapshot("cerebras")["half_open"] is True  # the next request is a probe
        assert isinstance(await ledger.reserve("cerebras", 1), Reservation)


async def test_a_longer_cooldown_is_not_cut_short_by_an_earlier_timer(mock_clock: trio.testing.MockClock) -> None:
    """When a second 429 extends the cooldown, the first timer does not end it early."""
    ledger = QuotaLedger([cerebras()])
    async with trio.open_nursery() as nursery:
        timers = CooldownTimers(nursery, ledger)
        await timers.start("cerebras", 100, "first")
        mock_clock.jump(50)
        await timers.start("cerebras", 100, "second")
        mock_clock.jump(60)  # the first timer's moment has passed
        await trio.testing.wait_all_tasks_blocked()
        assert ledger.in_cooldown("cerebras")
        mock_clock.jump(40)
        await trio.testing.wait_all_tasks_blocked()
        assert not ledger.in_cooldown("cerebras")


async def test_provider_figures_refuse_what_the_provider_would(mock_clock: trio.testing.MockClock) -> None:
    """A synced `remaining` (less what was booked after it) becomes the bucket's level, then refills."""
    ledger = QuotaLedger([cerebras(tokens_per_minute=60_000)])  # refills 1,000 tokens a second
    first = await ledger.reserve("cerebras", 100)
    second = await ledger.reserve("cerebras", 300)
    assert isinstance(first, Reservation) and isinstance(second, Reservation)
    # The provider says 1,000 remain as of the first request: the second (300) is not in it.
    # Bookings of the same second share a bin, so the first counts as booked after itself too:
    # 1000 - (100 + 300) = 600 remain, the safe side of the exact 700.
    await ledger.sync(first, {"tpm": (1000, 30.0)})
    assert isinstance(await ledger.reserve("cerebras", 600), Reservation)
    refusal = await ledger.reserve("cerebras", 200)  # nothing left: 200 tokens take 0.2 s
    assert isinstance(refusal, Refusal) and refusal.reason == "tpm" and refusal.retry_at == 0.2
    mock_clock.jump(0.2)  # 200 tokens refilled since
    assert isinstance(await ledger.reserve("cerebras", 200), Reservation)


async def test_an_older_figure_does_not_replace_a_newer_one(mock_clock: trio.testing.MockClock) -> None:
    """Responses may arrive out of order; the figure of the later request wins."""
    ledger = QuotaLedger([cerebras()])
    early = await ledger.reserve("cerebras", 10)
    late = await ledger.reserve("cerebras", 10)
    assert isinstance(early, Reservation) and isinstance(late, Reservation)
    await ledger.sync(late, {"tpm": (50, 60.0)})
    await ledger.sync(early, {"tpm": (100_000, 60.0)})
    refusal = await ledger.reserve("cerebras", 100)
    assert isinstance(refusal, Refusal) and refusal.reason == "tpm"


async def test_daily_quota_empties_at_the_providers_day_boundary(mock_clock: trio.testing.MockClock) -> None:
    """tokens/day follows the provider's reset time, not a sliding 24 hours."""
    ledger = QuotaLedger([cerebras(tokens_per_day=1000)], wall_clock=lambda: 0.0)  # UTC midnight
    spent = await ledger.reserve("cerebras", 900)
    assert isinstance(spent, Reservation)
    await ledger.sync(spent, {"rpd": (100, 600.0)})  # the provider's day ends in 10 minutes
    refusal = await ledger.reserve("cerebras", 200)
    assert isinstance(refusal, Refusal) and refusal.reason == "tpd" and refusal.retry_at == 600.0
    mock_clock.jump(600)
    assert isinstance(await ledger.reserve("cerebras", 200), Reservation)
    assert ledger.snapshot("cerebras")["tpd"]["used"] == 200


async def test_half_open_lets_one_probe_through(mock_clock: trio.testing.MockClock) -> None:
    """After a cooldown a single request probes; others wait until it succeeds."""
    ledger = QuotaLedger([cerebras()])
    await ledger.start_cooldown("cerebras", 10.0, "429")
    mock_clock.jump(10)
    probe = await ledger.reserve("cerebras", 1)
    assert isinstance(probe, Reservation) and probe.probe
    waiting = await ledger.reserve("cerebras", 1)
    assert isinstance(waiting, Refusal) and waiting.reason == "probe"
    ledger.finish_probe(probe, succeeded=False)
    again = await ledger.reserve("cerebras", 1)
    assert isinstance(again, Reservation) and again.probe  # a failed probe: the next one probes
    ledger.finish_probe(again, succeeded=True)
    normal = await ledger.reserve("cerebras", 1)
    assert isinstance(normal, Reservation) and not normal.probe
    assert isinstance(await ledger.reserve("cerebras", 1), Reservation)


async def test_the_key_with_most_headroom_is_chosen(mock_clock: trio.testing.MockClock) -> None:
    """Each key has its own quota; requests go to the least used one, and a cooled key is skipped."""
    provider = cerebras(api_key="csk-one", api_keys=("csk-two",), requests_per_minute=2)
    ledger = QuotaLedger([provider])
    assert ledger.accounts() == ["cerebras#1", "cerebras#2"]
    chosen = [await ledger.reserve("cerebras", 10) for _ in range(4)]
    assert [r.account for r in chosen if isinstance(r, Reservation)] == [
        "cerebras#1", "cerebras#2", "cerebras#1", "cerebras#2"
    ]
    refusal = await ledger.reserve("cerebras", 10)
    assert isinstance(refusal, Refusal) and refusal.reason == "rpm"
    mock_clock.jump(61)
    await ledger.start_cooldown("cerebras#1", 100.0, "429")
    picks = {r.account for r in [await ledger.reserve("cerebras", 10) for _ in range(2)] if isinstance(r, Reservation)}
    assert picks == {"cerebras#2"}
    assert not ledger.in_cooldown("cerebras")  # one key still serves


def test_estimator_learns_the_real_ratio() -> None:
    """After usage shows prompts are twice the estimate, estimates double (within bounds)."""
    estimator = PromptEstimator()
    body = {"messages": [{"role": "user", "content": "x" * 400}]}
    raw, corrected = estimator.estimate(body)
    assert raw == corrected
    for _ in range(40):
        estimator.learn(raw, raw * 2)
    assert estimator.estimate(body)[1] == pytest.approx(raw * 2, rel=0.01)
    estimator.learn(raw, raw * 1000)  # a broken figure moves it only to the bound
    assert estimator.ratio <= PromptEstimator.BOUNDS[1]


def test_minute_bucket_refills_continuously_and_takes_back_refunds() -> None:
    """Like Cerebras: a full bucket, a steady refill of limit/60 per second, unused bookings returned."""
    bucket = RefillingBucket(600, span=60.0)
    entry = bucket.add(0.0, 600)
    assert not bucket.fits(0.0, 1)
    assert bucket.seconds_until_fits(0.0, 100) == 10.0  # 10 tokens a second
    assert bucket.fits(10.0, 100) and not bucket.fits(10.0, 101)
    bucket.adjust(entry, 200)  # the request used 200 of the 600 it booked
    assert bucket.fits(10.0, 500) and not bucket.fits(10.0, 501)
    assert bucket.seconds_until_fits(10.0, 601) == 60.0  # more than the bucket holds: a whole span


def test_daily_window_keeps_its_total_without_keeping_every_entry() -> None:
    """Memory does not grow with a day's traffic; a late settle still counts, yesterday's does not."""
    window = DailyWindow(None, day_ends_at=DAY)
    early = window.add(0.0, 100)
    for second in range(1, 2_000):
        window.add(float(second), 1)
    assert window.used(2_000.0) == 100 + 1_999
    assert len(window._entries) <= DailyWindow.RECENT / BIN_SECONDS + 1
    window.adjust(early, 40)  # settled long after it left the recent entries
    assert window.used(2_000.0) == 40 + 1_999
    late = window.add(DAY - 1, 500)
    assert window.used(DAY + 1) == 0
    window.adjust(late, 10)  # a settle from the day before
    assert window.used(DAY + 1) == 0


def test_a_burst_fills_one_bin_not_one_entry_a_request() -> None:
    """Memory per window is a bin a second, however many requests; settling still corrects each."""
    window = SlidingWindow(None, span=60.0)
    bookings = [window.add(5.0 + i / 10_000, 10, seq=i) for i in range(5_000)]
    assert len(window._entries) == 1 and window.used(5.5) == 50_000
    window.adjust(bookings[0], 4)
    assert window.used(5.5) == 49_994
    assert window.used(65.6) == 0  # the bin leaves with its latest booking


async def test_reconfigure_keeps_state_under_new_limits_and_serves_reservations_of_removed_accounts(
    mock_clock: trio.testing.MockClock,
) -> None:
    """A reload reconfigures the ledger in place: an account that stays keeps what it booked, under
    its new limits; one whose provider was removed still settles, syncs and cools down for the
    requests in flight on it."""
    chutes = attrs.evolve(Config().chutes, api_key="k", requests_per_minute=5)
    ledger = QuotaLedger([cerebras(api_key="k", requests_per_minute=2, tokens_per_day=1000), chutes])
    kept = await ledger.reserve("cerebras", 400)
    gone = await ledger.reserve("chutes", 10)
    assert isinstance(kept, Reservation) and isinstance(gone, Reservation)
    ledger.reconfigure([cerebras(api_key="k", requests_per_minute=1, tokens_per_day=2000)])
    assert isinstance(await ledger.reserve("cerebras", 1), Refusal)  # the one request booked fills the new limit of 1
    await ledger.settle(kept, 30)
    assert ledger.snapshot("cerebras")["tpd"] == {"used": 30, "limit": 2000}
    await ledger.settle(gone, 5)
    await ledger.sync(gone, {"rpm": (3, 20.0)})
    assert await ledger.start_cooldown(gone.account, ledger.now() + 60, "429")
    ledger.finish_probe(gone, True)
    assert "chutes" in ledger.export_state(0.0)  # not dropped while reservations may be in flight
