"""The quota ledger on Trio's mock clock: windows, reservations under concurrency, cooldowns."""

import math

import attrs
import trio
import trio.testing

from trioproxy.config import Config, ProviderConfig
from trioproxy.cooldown import CooldownTimers
from trioproxy.quota import QuotaLedger, Refusal, Reservation, SlidingWindow


def cerebras(**limits: int) -> ProviderConfig:
    return attrs.evolve(Config().cerebras, **limits)


def test_window_forgets_entries_older_than_its_span() -> None:
    """An amount counts for exactly `span` seconds after it was added."""
    window = SlidingWindow(60.0, 100)
    window.add(0.0, 70)
    window.add(30.0, 20)
    assert window.used(59.9) == 90
    assert window.used(60.0) == 20
    assert window.used(90.0) == 0


def test_window_tells_when_an_amount_fits_again() -> None:
    """seconds_until_fits names the moment enough old entries have left."""
    window = SlidingWindow(60.0, 100)
    window.add(0.0, 60)
    window.add(10.0, 30)
    assert window.fits(20.0, 10)
    assert not window.fits(20.0, 50)
    assert window.seconds_until_fits(20.0, 50) == 40.0  # the 60 at t=0 leaves at t=60
    assert window.seconds_until_fits(20.0, 500) == 60.0  # never fits: one whole window


def test_window_adjust_ignores_entries_already_gone() -> None:
    """Settling a reservation that left the window does not corrupt the total."""
    window = SlidingWindow(60.0, 100)
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
    assert refusal.retry_at == 60.0
    mock_clock.jump(61)
    refusal = await ledger.reserve("cerebras", 700)
    assert isinstance(refusal, Refusal) and refusal.reason == "tpd"
    mock_clock.jump(86_400)
    assert isinstance(await ledger.reserve("cerebras", 700), Reservation)


async def test_settle_replaces_the_estimate_with_the_real_count(mock_clock: trio.testing.MockClock) -> None:
    """A request estimated high frees the difference once usage arrives."""
    ledger = QuotaLedger([cerebras(tokens_per_minute=1000)])
    reservation = await ledger.reserve("cerebras", 900)
    assert isinstance(reservation, Reservation)
    assert isinstance(await ledger.reserve("cerebras", 200), Refusal)
    await ledger.settle(reservation, 100)
    assert ledger.snapshot("cerebras")["tpm"]["used"] == 100
    assert isinstance(await ledger.reserve("cerebras", 200), Reservation)


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
        assert ledger._providers["cerebras"].cooldown_until == -math.inf
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
