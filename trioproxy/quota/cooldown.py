"""Cooldown timers: tasks of the supervisor's nursery that end an account's cooldown."""

import logging

import trio

from .contract import Ledger

log = logging.getLogger("trioproxy.quota")


class CooldownTimers:
    """Starts cooldowns in the ledger and a timer task for each in the nursery it is given."""

    def __init__(self, nursery: trio.Nursery, ledger: Ledger) -> None:
        self._nursery = nursery
        self._ledger = ledger

    async def start(self, account: str, seconds: float, reason: str) -> None:
        until = self._ledger.now() + seconds
        if not await self._ledger.start_cooldown(account, until, reason):
            return  # a longer cooldown is already running
        log.warning("%s cooldown started for %.0f s (%s)", account, seconds, reason)
        self._nursery.start_soon(self._expire, account, until)

    async def _expire(self, account: str, until: float) -> None:
        await trio.sleep_until(until)
        # A later 429 may have extended the cooldown; then its own timer ends it.
        if await self._ledger.end_cooldown(account, until):
            log.info("%s cooldown ended; %s", account, self._ledger.account_summary(account))
