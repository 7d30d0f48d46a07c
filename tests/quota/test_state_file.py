"""Damaged or implausible state files: moved aside with a warning, a fresh ledger, never a failed start."""

import json
import os
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
import trio

from support.chat import chat, client_for, post
from support.proxies import Providers, Proxy, proxy_config
from trioproxy.config.schema import Config
from trioproxy.quota.contract import Reservation
from trioproxy.quota.ledger import QuotaLedger
from trioproxy.quota.persist import StatePersister
from trioproxy.process.supervisor import run_proxy

WALL = 1_800_000_000.0  # a fixed wall clock: every saved time below is relative to it


def account(**changes: object) -> dict[str, object]:
    """One account as the ledger saves it, with `changes` replacing parts of it."""
    saved: dict[str, object] = {
        "windows": {
            "rpm": [[WALL - 10, 2]],
            "tpm": [[WALL - 10, 2_000]],
            "rpd": {"day_ends_at": WALL + 3_600, "used": 2},
            "tpd": {"day_ends_at": WALL + 3_600, "used": 2_000},
        },
        "synced": {},
        "cooldown": None,
    }
    saved.update(changes)
    return saved


def daily(**changes: object) -> dict[str, object]:
    windows = dict(account()["windows"])  # type: ignore[arg-type]
    windows["tpd"] = {**windows["tpd"], **changes}
    return windows


def state(ledger: object) -> bytes:
    return json.dumps({"version": 1, "ledger": ledger}).encode()


DAMAGED = {
    "ledger is a list": state([]),
    "synced is a list": state({"cerebras": account(synced=[])}),
    "used is Infinity": state({"cerebras": account(windows=daily(used=float("inf")))}),
    "used is 1e400": state({"cerebras": account()}).replace(b'"used": 2000', b'"used": 1e400'),
    "100,000-deep nesting": b'{"version": 1, "ledger": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "negative use": state({"cerebras": account(windows=daily(used=-1e12))}),
    "use as a float": state({"cerebras": account(windows=daily(used=2.5))}),
    "day boundary 1e300": state({"cerebras": account(windows=daily(day_ends_at=1e300))}),
    "cooldown until the year 9999": state({"cerebras": account(cooldown=[253_402_300_799.0, "429"])}),
    "booking in the future": state({"cerebras": account(windows={**daily(), "rpm": [[WALL + 86_400, 1]]})}),
    "unknown field": state({"cerebras": account(extra=1)}),
    "not UTF-8": b"\xff\xfe{",
    "empty": b"",
    "truncated": state({"cerebras": account()})[:40],
}


@pytest.mark.parametrize("garbage", DAMAGED.values(), ids=DAMAGED.keys())
async def test_a_damaged_state_file_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture, garbage: bytes) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(garbage)
    ledger = QuotaLedger([Config().cerebras], wall_clock=lambda: WALL)
    await StatePersister(ledger, path, 5.0, lambda: WALL).load()
    snapshot = ledger.snapshot("cerebras")
    assert snapshot["tpd"]["used"] == 0 and snapshot["cooldown_seconds"] == 0
    assert not path.exists()
    assert [kept.read_bytes() for kept in tmp_path.glob("state.json.corrupt-*")] == [garbage]
    assert "unreadable" in caplog.text


async def test_a_plausible_state_file_is_restored(tmp_path: Path) -> None:
    """The fixture the damaged cases start from is itself accepted: the refusals are about the damage."""
    path = tmp_path / "state.json"
    path.write_bytes(state({"cerebras": account(cooldown=[WALL + 60, "429 tpm"])}))
    ledger = QuotaLedger([Config().cerebras], wall_clock=lambda: WALL)
    await StatePersister(ledger, path, 5.0, lambda: WALL).load()
    snapshot = ledger.snapshot("cerebras")
    assert snapshot["tpd"]["used"] == 2_000 and 59 < snapshot["cooldown_seconds"] <= 60
    assert path.exists()


async def test_stale_temporary_files_are_removed(tmp_path: Path) -> None:
    """A write killed before its rename leaves `.state.json.<pid>.tmp`; a dead writer's goes, a live one's stays."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".state.json.{dead.stdout.strip()}.tmp"
    stale.write_bytes(b'{"version": 1, "led')
    live = tmp_path / f".state.json.{os.getppid()}.tmp"
    live.write_bytes(b"being written")
    ledger = QuotaLedger([Config().cerebras])
    await StatePersister(ledger, tmp_path / "state.json", 5.0).load()
    assert not stale.exists() and live.exists()


async def test_a_proxy_starts_over_a_damaged_state_file(providers: Providers, tmp_path: Path) -> None:
    """End to end: the deep-nesting file that used to stop start-up with RecursionError."""
    path = tmp_path / "state.json"
    path.write_bytes(DAMAGED["100,000-deep nesting"])
    config = proxy_config(providers, state_file=str(path))
    async with trio.open_nursery() as nursery:
        proxy = Proxy(await nursery.start(run_proxy, config, shutdown := trio.Event()), config, shutdown)
        async with client_for(proxy) as client:
            assert (await post(client, chat())).status_code == 200
        shutdown.set()
    assert json.loads(path.read_bytes())["version"] == 1  # the fresh state was saved in its place
    assert len(list(tmp_path.glob("state.json.corrupt-*"))) == 1


async def test_what_the_ledger_saves_passes_the_checks(tmp_path: Path) -> None:
    """Round trip through the validator with real bookings, a provider figure and a cooldown."""
    limits = attrs.evolve(Config().cerebras, requests_per_day=100)
    ledger = QuotaLedger([limits])
    reservation = await ledger.reserve("cerebras", 500)
    assert isinstance(reservation, Reservation)
    await ledger.sync(reservation, {"rpd": (7, 3_600.0)})
    await ledger.start_cooldown("cerebras", ledger.now() + 600, "429 tpm")
    path = tmp_path / "state.json"
    await StatePersister(ledger, path, 5.0).save()
    restored = QuotaLedger([limits])
    await StatePersister(restored, path, 5.0).load()
    assert path.exists()
    assert restored.snapshot("cerebras")["rpd"]["provider_remaining"] == 7
    assert restored.snapshot("cerebras")["cooldown_reason"] == "429 tpm"
