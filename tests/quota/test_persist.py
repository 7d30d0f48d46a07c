"""Persistence of the quota ledger: a restart remembers today's spending; bad files never crash."""

import json
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from support.chat import chat, client_for, health, post
from support.proxies import Providers, Proxy, proxy_config
from trioproxy.config.schema import Config, ProviderConfig
from trioproxy.quota.contract import Reservation
from trioproxy.quota.ledger import QuotaLedger
from trioproxy.quota.persist import StatePersister
from trioproxy.process.supervisor import run_proxy


def cerebras(**settings: object) -> ProviderConfig:
    return attrs.evolve(Config().cerebras, **settings)


class WallClock:
    """A wall clock a test moves by hand (the persister stores wall-clock times)."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


async def test_state_survives_a_restart_of_the_ledger(tmp_path: Path, mock_clock: trio.testing.MockClock) -> None:
    """Windows, the provider's figures and a cooldown come back; what has expired meanwhile does not."""
    wall = WallClock(1_000_000.0)
    limits = cerebras(requests_per_minute=3, tokens_per_day=10_000)
    ledger = QuotaLedger([limits], wall_clock=wall)
    for _ in range(3):
        reservation = await ledger.reserve("cerebras", 1_000)
        assert isinstance(reservation, Reservation)
    await ledger.sync(reservation, {"rpd": (7, 3_600.0)})
    await ledger.start_cooldown("cerebras", ledger.now() + 600, "429 tpm")
    path = tmp_path / "state.json"
    await StatePersister(ledger, path, 5.0, wall).save()

    mock_clock.jump(30)  # the process restarts 30 s later: Trio's clock starts over, the wall does not
    wall.now += 30
    restarted = QuotaLedger([limits], wall_clock=wall)
    await StatePersister(restarted, path, 5.0, wall).load()
    state = restarted.snapshot("cerebras")
    # The bucket of 3 a minute got 1.5 requests back in those 30 s: 1.5 out, shown rounded up.
    assert state["rpm"]["used"] == 2 and state["tpd"]["used"] == 3_000
    assert state["rpd"]["provider_remaining"] == 7
    assert 560 < state["cooldown_seconds"] <= 570 and state["cooldown_reason"] == "429 tpm"
    mock_clock.jump(31)  # the minute of the saved requests is over
    assert restarted.snapshot("cerebras")["rpm"]["used"] == 0
    assert restarted.snapshot("cerebras")["tpd"]["used"] == 3_000


async def test_a_corrupt_state_file_is_kept_aside_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage in the state file: a warning, the file renamed, a fresh ledger; never a crash."""
    path = tmp_path / "state.json"
    for garbage in (b"{not json", b'{"version": 99}', json.dumps({"version": 1, "ledger": {"cerebras": 5}}).encode()):
        path.write_bytes(garbage)
        ledger = QuotaLedger([cerebras()])
        await StatePersister(ledger, path, 5.0).load()
        assert ledger.snapshot("cerebras")["rpm"]["used"] == 0
        assert not path.exists()
        kept = list(tmp_path.glob("state.json.corrupt-*"))
        assert kept and kept[0].read_bytes() == garbage
        kept[0].unlink()
    assert caplog.text.count("unreadable") == 3


async def test_an_unwritable_state_path_only_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Saving into a path that cannot be written logs a warning and the proxy carries on."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    ledger = QuotaLedger([cerebras()])
    await StatePersister(ledger, blocker / "state.json", 5.0).save()
    assert "cannot save quota state" in caplog.text


async def test_a_restarted_proxy_remembers_what_cerebras_was_sent(providers: Providers, tmp_path: Path) -> None:
    """End to end: a proxy stops (saving its state) and its successor starts from the same counts."""
    config = proxy_config(providers, state_file=str(tmp_path / "state.json"), cerebras={"requests_per_minute": 3})
    async with trio.open_nursery() as nursery:
        proxy = Proxy(await nursery.start(run_proxy, config, shutdown := trio.Event()), config, shutdown)
        async with client_for(proxy) as client:
            for _ in range(2):
                assert (await post(client, chat())).status_code == 200
        shutdown.set()
    assert (tmp_path / "state.json").exists()

    async with trio.open_nursery() as nursery:
        proxy = Proxy(await nursery.start(run_proxy, config, shutdown := trio.Event()), config, shutdown)
        async with client_for(proxy) as client:
            state = (await health(client, proxy))["providers"]["cerebras"]["accounts"]["cerebras"]
            assert state["rpm"]["used"] == 2
            assert (await post(client, chat())).status_code == 200
            assert (await post(client, chat())).status_code == 200  # the 4th in the minute: Chutes
        shutdown.set()
    assert providers.cerebras.served == 3 and providers.chutes.served == 1
