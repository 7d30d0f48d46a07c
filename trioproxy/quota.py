"""The quota ledger: sliding windows per provider, reservations, and cooldown state.

The ledger is the one contract the router talks to (reserve, settle, cooldown, snapshot), so a
shared implementation (e.g. on Redis, for several replicas) can replace this in-process one.
"""

import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import trio
from attrs import define, field, frozen

from .config import ProviderConfig

MINUTE = 60.0
DAY = 86_400.0


@define
class _Entry:
    at: float
    amount: int
    live: bool = True  # False once the window has dropped it, so a late settle is ignored


@define
class SlidingWindow:
    """Sum of amounts added within the last `span` seconds, against an optional limit."""

    span: float
    limit: int | None
    _entries: deque[_Entry] = field(factory=deque)
    _total: int = 0

    def _prune(self, now: float) -> None:
        horizon = now - self.span
        while self._entries and self._entries[0].at <= horizon:
            entry = self._entries.popleft()
            entry.live = False
            self._total -= entry.amount

    def used(self, now: float) -> int:
        self._prune(now)
        return self._total

    def fits(self, now: float, amount: int) -> bool:
        return self.limit is None or self.used(now) + amount <= self.limit

    def add(self, now: float, amount: int) -> _Entry:
        self._prune(now)
        entry = _Entry(now, amount)
        self._entries.append(entry)
        self._total += amount
        return entry

    def adjust(self, entry: _Entry, amount: int) -> None:
        """Correct an earlier entry to its real amount (an estimate settled by usage)."""
        if entry.live:
            self._total += amount - entry.amount
            entry.amount = amount

    def seconds_until_fits(self, now: float, amount: int) -> float:
        """How long until `amount` more would fit, as old entries leave the window."""
        if self.fits(now, amount) or self.limit is None:
            return 0.0
        excess = self._total + amount - self.limit
        for entry in self._entries:
            excess -= entry.amount
            if excess <= 0:
                return max(0.0, entry.at + self.span - now)
        return self.span  # larger than the limit itself: never fits; a whole window is honest


@frozen
class Refusal:
    """Why a provider cannot take a request now, and when it might again (clock time)."""

    reason: str  # "rpm", "tpm", "tpd" or "cooldown"
    retry_at: float


@define
class Reservation:
    provider: str
    tokens: int
    _token_entries: tuple[tuple[SlidingWindow, _Entry], ...]
    probe: bool = False  # the single request let through after a cooldown (half-open)


@define
class ProviderQuota:
    """Live quota state of one provider.

    After a cooldown the provider is half-open: one request probes it while the others keep
    going elsewhere; the probe's success reopens it, a new refusal cools it down again.
    """

    name: str
    requests_per_minute: SlidingWindow
    tokens_per_minute: SlidingWindow
    tokens_per_day: SlidingWindow
    cooldown_until: float = -math.inf
    cooldown_reason: str = ""
    half_open: bool = False
    probe_in_flight: bool = False

    @classmethod
    def from_config(cls, provider: ProviderConfig) -> "ProviderQuota":
        return cls(
            name=provider.name,
            requests_per_minute=SlidingWindow(MINUTE, provider.requests_per_minute),
            tokens_per_minute=SlidingWindow(MINUTE, provider.tokens_per_minute),
            tokens_per_day=SlidingWindow(DAY, provider.tokens_per_day),
        )

    def end_cooldown_if_due(self, now: float) -> None:
        if self.cooldown_until != -math.inf and now >= self.cooldown_until:
            self.cooldown_until, self.cooldown_reason = -math.inf, ""
            self.half_open, self.probe_in_flight = True, False

    def refusal(self, now: float, tokens: int) -> Refusal | None:
        self.end_cooldown_if_due(now)
        if now < self.cooldown_until:
            return Refusal("cooldown", self.cooldown_until)
        if self.half_open and self.probe_in_flight:
            return Refusal("probe", now + 1)
        checks = (
            ("rpm", self.requests_per_minute, 1),
            ("tpm", self.tokens_per_minute, tokens),
            ("tpd", self.tokens_per_day, tokens),
        )
        for reason, window, amount in checks:
            if not window.fits(now, amount):
                return Refusal(reason, now + window.seconds_until_fits(now, amount))
        return None

    def available_at(self, now: float) -> float:
        """The earliest moment this provider might take a one-token request again."""
        refusal = self.refusal(now, 1)
        return now if refusal is None else refusal.retry_at


class QuotaLedger:
    """Quota state of every provider, guarded by one Trio lock.

    Reserving checks and books in one step under the lock, so concurrent requests cannot
    both see the last free slot.
    """

    def __init__(self, providers: Iterable[ProviderConfig], clock: Callable[[], float] = trio.current_time) -> None:
        self._providers = {p.name: ProviderQuota.from_config(p) for p in providers}
        self._clock = clock
        self._lock = trio.Lock()

    def now(self) -> float:
        return self._clock()

    async def reserve(self, provider: str, tokens: int) -> Reservation | Refusal:
        async with self._lock:
            quota = self._providers[provider]
            now = self._clock()
            refusal = quota.refusal(now, tokens)
            if refusal is not None:
                return refusal
            quota.requests_per_minute.add(now, 1)
            entries = tuple(
                (window, window.add(now, tokens)) for window in (quota.tokens_per_minute, quota.tokens_per_day)
            )
            probe = quota.half_open
            quota.probe_in_flight = probe
            return Reservation(provider, tokens, entries, probe)

    async def settle(self, reservation: Reservation, actual_tokens: int) -> None:
        """Replace a reservation's estimate by what the provider really counted."""
        async with self._lock:
            for window, entry in reservation._token_entries:
                window.adjust(entry, actual_tokens)
            reservation.tokens = actual_tokens

    async def start_cooldown(self, provider: str, until: float, reason: str) -> bool:
        """Skip `provider` until `until`. Returns False when an existing cooldown lasts longer."""
        async with self._lock:
            quota = self._providers[provider]
            quota.probe_in_flight = False
            if quota.cooldown_until >= until:
                return False
            quota.cooldown_until, quota.cooldown_reason = until, reason
            return True

    async def end_cooldown(self, provider: str, until: float) -> bool:
        """End the cooldown that was set to `until`; False if it was replaced meanwhile."""
        async with self._lock:
            quota = self._providers[provider]
            if quota.cooldown_until != until:
                return False
            quota.end_cooldown_if_due(max(self._clock(), until))
            return True

    def finish_probe(self, reservation: Reservation, succeeded: bool) -> None:
        """Close a half-open probe: success reopens the provider; otherwise the next request probes.

        Synchronous on purpose: it runs in `finally` blocks, also while being cancelled.
        """
        if not reservation.probe:
            return
        quota = self._providers[reservation.provider]
        quota.probe_in_flight = False
        if succeeded:
            quota.half_open = False

    def available_at(self, provider: str) -> float:
        return self._providers[provider].available_at(self._clock())

    def in_cooldown(self, provider: str) -> bool:
        return self._clock() < self._providers[provider].cooldown_until

    def snapshot(self, provider: str) -> dict[str, Any]:
        """Used and limit of each window, and the cooldown, as plain data."""
        quota = self._providers[provider]
        now = self._clock()
        windows = {
            "rpm": quota.requests_per_minute,
            "tpm": quota.tokens_per_minute,
            "tpd": quota.tokens_per_day,
        }
        state: dict[str, Any] = {
            name: {"used": window.used(now), "limit": window.limit} for name, window in windows.items()
        }
        quota.end_cooldown_if_due(now)
        cooling = now < quota.cooldown_until
        state["cooldown_seconds"] = round(quota.cooldown_until - now, 1) if cooling else 0
        state["cooldown_reason"] = quota.cooldown_reason if cooling else ""
        state["half_open"] = quota.half_open
        return state

    def summary(self, provider: str) -> str:
        """One short line of quota state for logs: `rpm 3/12 tpm 4100/132000 tpd 9000/19200000`."""
        state = self.snapshot(provider)
        parts = [
            f"{name} {state[name]['used']}/{state[name]['limit'] if state[name]['limit'] else '-'}"
            for name in ("rpm", "tpm", "tpd")
        ]
        if state["cooldown_seconds"]:
            parts.append(f"cooldown {state['cooldown_seconds']}s")
        return " ".join(parts)
