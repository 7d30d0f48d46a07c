"""Cooldown timers: tasks of the supervisor's nursery that end a provider's cooldown."""

import logging

import trio

from .quota import QuotaLedger

log = logging.getLogger("trioproxy.quota")


class CooldownTimers:
    """Starts cooldowns in the ledger and a timer task for each in the nursery it is given."""

    def __init__(self, nursery: trio.Nursery, ledger: QuotaLedger) -> None:
        self._nursery = nursery
        self._ledger = ledger

    async def start(self, provider: str, seconds: float, reason: str) -> None:
        until = self._ledger.now() + seconds
        if not await self._ledger.start_cooldown(provider, until, reason):
            return  # a longer cooldown is already running
        log.warning("%s cooldown started for %.0f s (%s)", provider, seconds, reason)
        self._nursery.start_soon(self._expire, provider, until)

    async def _expire(self, provider: str, until: float) -> None:
        await trio.sleep_until(until)
        # A later 429 may have extended the cooldown; then its own timer ends it.
        if await self._ledger.end_cooldown(provider, until):
            log.info("%s cooldown ended; %s", provider, self._ledger.summary(provider))
