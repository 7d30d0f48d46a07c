"""Quota windows of any length: declared per provider or route, metered rolling, as a bucket or
fixed, kept by both ledgers and the state file, shown to operators."""

from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from support.chat import chat, client_for, post
from support.command import run, scrubbed_env
from support.metrics import sample_values
from support.proxies import Providers, StartProxy
from support.redis_ledgers import Clock, replicas
from trioproxy.config.schema import Config, ModelRoute, ProviderConfig, QuotaWindow, RouteProvider
from trioproxy.quota.contract import Refusal
from trioproxy.quota.redis.ledger import SharedReservation
from trioproxy.quota.state_file import decode_state, encode_state
from trioproxy.quota.contract import Reservation
from trioproxy.quota.ledger import QuotaLedger
from trioproxy.cli.status_table import render_table
from trioproxy.testing.emulator.windows import RollingCount
from trioproxy.testing.redis_server import RedisServer

FOUR_HOURS = 4 * 3600


def four_hour_window(limit: int) -> tuple[QuotaWindow]:
    return (QuotaWindow(kind="requests", seconds=FOUR_HOURS, limit=limit),)


async def test_a_four_hour_window_stops_chutes_before_its_429_and_reopens_when_it_rolls(
    providers: Providers, start_proxy: StartProxy, mock_clock: trio.testing.MockClock
) -> None:
    """Chutes's plan allows 3 requests in 4 hours (its emulator's plan window on); with the same
    window declared, the proxy sends it 3 and the rest to Cerebras, never meeting Chutes's 429.
    4 hours after the first, Chutes takes requests again."""
    providers.chutes.plan_windows = [RollingCount(FOUR_HOURS, 3)]
    proxy = await start_proxy(provider_order=("chutes", "cerebras"), chutes={"windows": four_hour_window(3)})
    async with client_for(proxy) as client:
        for _ in range(5):
            assert (await post(client, chat())).status_code == 200
        assert (providers.chutes.served, providers.cerebras.served) == (3, 2)
        assert len(providers.chutes.received) == 3  # no request met Chutes's 429
        status = (await client.get(proxy.base_url.removesuffix("/v1") + "/v1/status")).json()
        metrics = (await client.get(proxy.base_url.removesuffix("/v1") + "/metrics")).text
        mock_clock.jump(FOUR_HOURS)
        assert (await post(client, chat())).status_code == 200
    assert (providers.chutes.served, len(providers.chutes.received)) == (4, 4)
    chutes = next(p for p in status["providers"] if p["name"] == "chutes")
    account = chutes["accounts"]["chutes"]
    assert account["other_windows"] == ["requests_4h"]
    assert account["requests_4h"] == {"used": 3, "limit": 3}
    assert account["limit_sources"]["requests_4h"] == {"source": "configured"}
    assert "requests_4h 3/3 [configured]" in render_table(status)
    _, values = sample_values(metrics)
    labels = frozenset({"provider": "chutes", "account": "chutes", "window": "requests_4h"}.items())
    assert values[("trioproxy_quota_remaining", labels)] == 0


async def test_without_the_window_the_same_traffic_meets_chutes_429(
    providers: Providers, start_proxy: StartProxy, mock_clock: trio.testing.MockClock
) -> None:
    """The control for the test above: undeclared, the fourth request reaches Chutes and is refused."""
    providers.chutes.plan_windows = [RollingCount(FOUR_HOURS, 3)]
    proxy = await start_proxy(provider_order=("chutes", "cerebras"))
    async with client_for(proxy) as client:
        for _ in range(4):
            assert (await post(client, chat())).status_code == 200
    assert (providers.chutes.served, len(providers.chutes.received)) == (3, 4)


async def test_a_route_with_only_a_full_window_answers_429_with_the_window_retry_after(
    providers: Providers, start_proxy: StartProxy, mock_clock: trio.testing.MockClock
) -> None:
    """A route provider declares its own window; when it is full and nothing else serves the
    route, the client is told to come back when the oldest request leaves the 4 hours."""
    providers.chutes.plan_windows = [RollingCount(FOUR_HOURS, 2)]
    route = ModelRoute("qwen-3-coder", (RouteProvider(provider="chutes", windows=four_hour_window(2)),))
    proxy = await start_proxy(models=(route,))
    async with client_for(proxy) as client:
        assert [(await post(client, chat())).status_code for _ in range(2)] == [200, 200]
        mock_clock.jump(600)
        refused = await post(client, chat())
    assert refused.status_code == 429 and len(providers.chutes.received) == 2
    assert FOUR_HOURS - 600 - 300 <= int(refused.headers["retry-after"]) <= FOUR_HOURS - 600 + 300  # a bin late at most


def chutes_with(*windows: QuotaWindow) -> Config:
    """Settings with a keyed Chutes that declares `windows`."""
    base = Config(state_file="")
    return attrs.evolve(base, chutes=attrs.evolve(base.chutes, api_key="cpk-x", windows=windows))


async def test_a_fixed_window_empties_at_its_boundary(mock_clock: trio.testing.MockClock) -> None:
    """An hourly fixed window of 2 requests, 10 minutes before the hour: full after 2, refused
    until the hour (not an hour after the first), open again on it."""
    wall = 1_000 * 3600 + 50 * 60  # 50 minutes past an hour
    config = chutes_with(QuotaWindow(kind="requests", seconds=3600, limit=2, metering="fixed"))
    ledger = QuotaLedger(config.providers, wall_clock=lambda: wall)
    for _ in range(2):
        assert isinstance(await ledger.reserve("chutes", 10), Reservation)
    refusal = await ledger.reserve("chutes", 10)
    assert not isinstance(refusal, Reservation)
    assert (refusal.reason, refusal.retry_at - trio.current_time()) == ("requests_1h_fixed", 600)
    mock_clock.jump(599)
    assert not isinstance(await ledger.reserve("chutes", 10), Reservation)
    mock_clock.jump(1)
    assert isinstance(await ledger.reserve("chutes", 10), Reservation)
    assert ledger.snapshot("chutes")["requests_1h_fixed"]["used"] == 1


async def test_token_windows_settle_and_survive_the_state_file(mock_clock: trio.testing.MockClock) -> None:
    """A rolling 30-day token window counts what usage settles; a fixed day of tokens and a
    bucket too. Saved and restored, a fresh ledger holds the same figures."""
    windows = (
        QuotaWindow(kind="tokens", seconds=30 * 86_400, limit=10_000),
        QuotaWindow(kind="tokens", seconds=2 * 3600, limit=10_000, metering="fixed"),
        QuotaWindow(kind="requests", seconds=3600, limit=100, metering="bucket"),
    )
    config = chutes_with(*windows)
    ledger = QuotaLedger(config.providers, wall_clock=lambda: 5_000.0)
    booked = await ledger.reserve("chutes", 3_000)
    assert isinstance(booked, Reservation)
    await ledger.settle(booked, 1_200)
    names = ["tokens_30d", "tokens_2h_fixed", "requests_1h_bucket"]
    used = {name: ledger.snapshot("chutes")[name]["used"] for name in names}
    assert used == {"tokens_30d": 1_200, "tokens_2h_fixed": 1_200, "requests_1h_bucket": 1}
    offset = 5_000.0 - trio.current_time()  # the wall clock's lead, as persistence computes it
    saved, _ = decode_state(encode_state(ledger.export_state(wall_offset=offset)), wall_now=5_000.0)
    fresh = QuotaLedger(config.providers, wall_clock=lambda: 5_000.0)
    assert fresh.import_state(saved, trio_offset=-offset) == 2  # cerebras's account and chutes's
    assert {name: fresh.snapshot("chutes")[name]["used"] for name in names} == used
    assert not isinstance(await fresh.reserve("chutes", 8_900), Reservation)  # 1 200 + 8 900 > 10 000


async def test_bad_windows_exit_2_naming_the_field(tmp_path: Path) -> None:
    """Zero or negative lengths and limits, and an unknown metering, are refused with one line
    naming the window's field."""
    cases = {
        "seconds = 0, limit = 5": "chutes.windows.0.seconds",
        "seconds = -60, limit = 5": "chutes.windows.0.seconds",
        "seconds = 60, limit = 0": "chutes.windows.0.limit",
        "seconds = 60, limit = -1": "chutes.windows.0.limit",
        'seconds = 60, limit = 5, metering = "sliding"': "chutes.windows.0.metering",
    }
    for fields, key in cases.items():
        config = tmp_path / "bad.toml"
        config.write_text(f'[chutes]\nwindows = [{{ kind = "requests", {fields} }}]\n')
        result = await run(["--config", str(config), "--check-config"], tmp_path, scrubbed_env(CHUTES_API_KEY="cpk-x"))
        assert result.returncode == 2, (fields, result.stderr)
        stderr = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(stderr) == 1 and stderr[0].startswith(f"trioproxy: {key}: "), (fields, result.stderr)


def chutes_account(*windows: QuotaWindow) -> ProviderConfig:
    return attrs.evolve(Config().chutes, api_key="cpk-one", windows=windows)


async def test_the_redis_ledger_keeps_a_rolling_window_across_replicas(nursery: trio.Nursery, redis: RedisServer) -> None:
    """Two replicas share a 4-hour window of 3 requests: the fourth is refused on either until
    4 hours after the first (a bin late at most), and the shared view shows the window."""
    clock = Clock()
    a, b = await replicas(nursery, redis, [chutes_account(*four_hour_window(3))], clock, count=2)
    for ledger in (a, b, a):
        assert isinstance(await ledger.reserve("chutes", 10), SharedReservation)
    refused = await b.reserve("chutes", 10)
    assert isinstance(refused, Refusal) and refused.reason == "requests_4h"
    assert FOUR_HOURS <= refused.retry_at - b.now() <= FOUR_HOURS + FOUR_HOURS / 60
    await a.refresh()
    assert a.snapshot("chutes")["requests_4h"] == {"used": 3, "limit": 3}
    assert a.snapshot("chutes")["other_windows"] == ["requests_4h"]
    clock.time += FOUR_HOURS + FOUR_HOURS / 60
    assert isinstance(await b.reserve("chutes", 10), SharedReservation)


async def test_the_redis_ledger_settles_token_windows_and_empties_fixed_ones_at_the_boundary(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    """A rolling day of tokens gets back what a settle does not use; an hourly fixed window of
    requests is full until the hour, then empty."""
    clock = Clock()  # START is a whole hour: the fixed window's period starts now
    windows = (QuotaWindow(kind="tokens", seconds=86_400, limit=1_000),
               QuotaWindow(kind="requests", seconds=3600, limit=2, metering="fixed"))
    a, b = await replicas(nursery, redis, [chutes_account(*windows)], clock, count=2)
    first = await a.reserve("chutes", 800, floor=100)
    assert isinstance(first, SharedReservation)
    assert (await b.reserve("chutes", 300)).reason == "tokens_1d"  # type: ignore[union-attr]
    await a.settle(first, 150)  # 650 come back
    await a.store.drained()
    assert isinstance(await b.reserve("chutes", 600), SharedReservation)
    clock.time += 1_800
    refused = await a.reserve("chutes", 10)
    assert isinstance(refused, Refusal) and refused.reason == "requests_1h_fixed"
    assert refused.retry_at - a.now() == pytest.approx(1_800, abs=1)
    clock.time += 1_800
    assert isinstance(await a.reserve("chutes", 10), SharedReservation)
    await a.refresh()
    assert a.snapshot("chutes")["requests_1h_fixed"]["used"] == 1


async def test_shares_book_declared_windows_and_give_back_what_they_did_not_hand_out(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    """Far from a 4-hour window's limit a replica takes a share of it; what the share did not
    hand out comes back to the window when it is returned."""
    clock = Clock()
    (ledger,) = await replicas(nursery, redis, [chutes_account(*four_hour_window(1_000))], clock, count=1)
    for _ in range(3):
        assert isinstance(await ledger.reserve("chutes", 10), SharedReservation)
    await ledger.store.drained()
    await ledger.refresh()
    window = ledger.snapshot("chutes")["requests_4h"]
    assert window["used"] > 3 and window["in_shares"] == window["used"] - 3  # a share was booked
    ledger.retire()
    await ledger.store.drained()
    await ledger.refresh()
    assert ledger.snapshot("chutes")["requests_4h"] == {"used": 3, "limit": 1_000}
