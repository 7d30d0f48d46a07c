"""The in-process quota ledger: windows per provider account (one per API key), reservations,
cooldowns. It implements `contract.Ledger`; `redis.ledger` is the shared implementation.
"""

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import trio
from attrs import define, field

from ..config.schema import ProviderConfig
from .account import AccountQuota, Synced, account_name
from .contract import WINDOW_NAMES, Refusal, Reservation, settled_uncached, summary_line, uncached_costs
from .ledger_state import export_accounts, import_accounts
from .windows import DailyWindow, RefillingBucket, Window, WindowBooking


@define
class MemoryReservation(Reservation):
    # The token windows, for settling: each with its booking and whether it counts uncached tokens.
    _entries: list[tuple[Window, WindowBooking, bool]] = field(factory=list)


class QuotaLedger:
    """Quota state of every provider account, in this process.

    Its methods are async to fulfil the ledger contract (the Redis ledger awaits), but none of
    them awaits anything: under Trio a method without a checkpoint runs whole before any other
    task does, so reserving checks and books in one step (concurrent requests cannot both see
    the last free slot) with no lock, and a call is no cancellation point: a cancel cannot land
    between a provider's answer and its settlement.
    """

    def __init__(
        self,
        providers: Iterable[ProviderConfig],
        clock: Callable[[], float] = trio.current_time,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        self._accounts: dict[str, AccountQuota] = {}
        self._by_provider: dict[str, list[AccountQuota]] = {}
        self.reconfigure(providers)
        self._seq = 0

    def reconfigure(self, providers: Iterable[ProviderConfig]) -> None:
        """Take new settings in place (a reload): an account that stays keeps its state under
        the new limits, so the reservations in flight on it settle where they are counted.

        Accounts of providers or keys that were removed stay reachable for the requests in
        flight on them; routers built for the new settings no longer ask for them.
        """
        now, wall = self._clock(), self._wall_clock()
        for provider in providers:
            keys = provider.keys or ("",)
            accounts = []
            for index in range(len(keys)):
                fresh = AccountQuota.from_config(account_name(provider.name, index, len(keys)), provider, index, now, wall)
                kept = self._accounts.get(fresh.name)
                if kept is not None:
                    kept.take_limits(fresh, now)
                    fresh = kept
                accounts.append(fresh)
            self._by_provider[provider.name] = accounts
            self._accounts.update((a.name, a) for a in accounts)

    def now(self) -> float:
        """The clock of every time given to or returned by this ledger (Trio's, unless injected)."""
        return self._clock()

    def accounts(self) -> list[str]:
        """Every account name, those of removed providers or keys included; a new list."""
        return list(self._accounts)

    async def reserve(
        self, provider: str, tokens: int, *, floor: int = 0, uncached: Sequence[int] | None = None
    ) -> Reservation | Refusal:
        """Book one request of `tokens` on the provider's account that would book the fewest
        uncached tokens (`uncached`, per account; None: all of `floor` everywhere), then has the
        most headroom; refused, the soonest account's limit that holds it longest.

        `floor` is also for leases of a shared ledger; a reservation here lives as long as the process."""
        now = self._clock()
        accounts = self._by_provider[provider]
        floor = min(floor, tokens)
        costs = uncached_costs(uncached, floor, len(accounts))
        refusals: list[Refusal] = []
        best: AccountQuota | None = None
        for account, cost in zip(accounts, costs):
            refusal = account.longest_refusal(now, tokens, 1, cost)
            if refusal is not None:
                refusals.append(refusal)
            elif best is None or (cost, -account.headroom(now)) < (costs[best.key_index], -best.headroom(now)):
                best = account
        if best is None:
            return min(refusals, key=lambda r: r.retry_at)
        self._seq += 1
        cost = costs[best.key_index]
        entries = []
        kinds, windows = best.kinds, best.windows
        for name, amount in best.amounts(tokens, 1, cost).items():
            window = windows[name]
            entry = window.add(now, amount, self._seq)
            if (kind := kinds[name]) != "requests":
                entries.append((window, entry, kind == "uncached_tokens"))
        probe = best.half_open
        best.probe_in_flight = probe
        return MemoryReservation(
            best.name, provider, best.key_index, tokens, self._seq, probe, cost, entries=entries
        )

    async def settle(self, reservation: Reservation, actual_tokens: int, uncached_tokens: int | None = None) -> None:
        """Replace a reservation's estimate by what the provider really counted."""
        assert isinstance(reservation, MemoryReservation)
        actual_tokens = max(0, actual_tokens)
        uncached = settled_uncached(reservation, actual_tokens, uncached_tokens)
        for window, entry, counts_uncached in reservation._entries:
            window.adjust(entry, uncached if counts_uncached else actual_tokens)
        reservation.tokens, reservation.uncached = actual_tokens, uncached

    async def sync(self, reservation: Reservation, figures: Mapping[str, tuple[float, float]]) -> None:
        """Take the provider's own figures, `{window: (remaining, seconds_to_reset)}`, as truth.

        They count everything booked up to this reservation; what we booked after it is
        subtracted when checking, so concurrent requests are not counted twice or missed.
        """
        account = self._accounts[reservation.account]
        now = self._clock()
        for name, (remaining, reset) in figures.items():
            if name in ("rpd", "tpd"):
                # One provider day: a daily reset time moves both daily counters.
                for daily in (account.windows["rpd"], account.windows["tpd"]):
                    assert isinstance(daily, DailyWindow)
                    daily.move_boundary(now, reset)
            if account.figure_seq.get(name, -1) > reservation.seq:
                continue  # a later request's figure already arrived
            account.figure_seq[name] = reservation.seq
            window = account.windows[name]
            if isinstance(window, RefillingBucket) and window.limit is not None:
                # A bucket keeps refilling after the figure was taken: lower its level and
                # let it refill, rather than hold the figure fixed until the reset.
                window.lower_to(now, remaining - window.booked_after(reservation.seq))
            else:
                account.synced[name] = Synced(int(remaining), reservation.seq, now + reset)

    async def adopt_limits(self, reservation: Reservation, stated: Mapping[str, int]) -> None:
        """The provider's stated limits `{window: figure}` for the reservation's account become
        its windows' sizes (never above a configured figure)."""
        self._accounts[reservation.account].adopt_limits(self._clock(), stated)

    async def start_cooldown(self, account: str, until: float, reason: str) -> bool:
        """Skip `account` until `until`. Returns False when an existing cooldown lasts longer."""
        quota = self._accounts[account]
        quota.probe_in_flight = False
        if quota.cooldown_until >= until:
            return False
        quota.cooldown_until, quota.cooldown_reason = until, reason
        return True

    async def end_cooldown(self, account: str, until: float) -> bool:
        """End the cooldown that was set to `until`; False if it was replaced meanwhile."""
        quota = self._accounts[account]
        if quota.cooldown_until != until:
            return False
        quota.end_cooldown_if_due(max(self._clock(), until))
        return True

    def finish_probe(self, reservation: Reservation, succeeded: bool) -> None:
        """Close a half-open probe: success reopens the account; otherwise the next request probes.

        Synchronous on purpose: it runs in `finally` blocks, also while being cancelled.
        """
        if not reservation.probe:
            return
        quota = self._accounts[reservation.account]
        quota.probe_in_flight = False
        if succeeded:
            quota.half_open = False

    def export_state(self, wall_offset: float) -> dict[str, Any]:
        """Every account's windows, provider figures and cooldown, times as wall-clock seconds
        (`ledger_state.export_accounts`)."""
        return export_accounts(self._accounts, self._clock(), wall_offset)

    def import_state(self, state: dict[str, Any], trio_offset: float) -> int:
        """Restore what `export_state` saved (for accounts that still exist); returns how many."""
        return import_accounts(self._accounts, state, self._clock(), trio_offset, self._seq)

    def available_at(self, provider: str) -> float:
        """The earliest moment any account of `provider` might take a small request again."""
        now = self._clock()
        times = []
        for account in self._by_provider[provider]:
            refusal = account.refusal(now, 1)
            times.append(now if refusal is None else refusal.retry_at)
        return min(times)

    async def refusal(self, provider: str, tokens: int, requests: int = 1, uncached: int = 0) -> Refusal | None:
        """Without booking: when `requests` requests of `tokens` in all could go to `provider`
        (its soonest account, once every limit has room) and the limit that holds them
        longest; None if they could now."""
        now = self._clock()
        latest = []
        for account in self._by_provider[provider]:
            refusal = account.longest_refusal(now, tokens, requests, uncached)
            if refusal is None:
                return None
            latest.append(refusal)
        return min(latest, key=lambda r: r.retry_at)

    def in_cooldown(self, provider: str) -> bool:
        """True when every account of `provider` is cooling down."""
        now = self._clock()
        return all(now < account.cooldown_until for account in self._by_provider[provider])

    def snapshot(self, account: str) -> dict[str, Any]:
        """Used and limit of each window, the provider's own figures, and the cooldown."""
        quota = self._accounts[account]
        now = self._clock()
        state: dict[str, Any] = {}
        for name, window in quota.windows.items():
            entry: dict[str, Any] = {"used": window.used(now), "limit": window.limit}
            remaining = quota.provider_remaining(name, now)
            if remaining != math.inf:
                entry["provider_remaining"] = int(remaining)
            state[name] = entry
        quota.end_cooldown_if_due(now)
        cooling = now < quota.cooldown_until
        state["cooldown_seconds"] = round(quota.cooldown_until - now, 1) if cooling else 0
        state["cooldown_reason"] = quota.cooldown_reason if cooling else ""
        state["half_open"] = quota.half_open
        daily = quota.windows["tpd"]
        assert isinstance(daily, DailyWindow)
        state["day_resets_seconds"] = round(daily.day_ends_at - now, 1)  # after used() rolled the day
        state["limit_sources"] = {name: limit.view(now) for name, limit in quota.limits.items() if limit.limit is not None}
        state["other_windows"] = [name for name in quota.windows if name not in WINDOW_NAMES]
        return state

    def provider_snapshot(self, provider: str) -> dict[str, dict[str, Any]]:
        """`{account: snapshot}` for each account of `provider`; KeyError for an unknown one."""
        return {account.name: self.snapshot(account.name) for account in self._by_provider[provider]}

    def summary(self, provider: str) -> str:
        """Short quota state of a provider's accounts for logs, e.g. `cerebras[rpm 3/12 tpm 4100/132000]`."""
        return " ".join(filter(None, (self.account_summary(a.name) for a in self._by_provider[provider])))

    def account_summary(self, account: str) -> str:
        """One account in short for logs (`contract.summary_line`)."""
        return summary_line(account, self.snapshot(account))

    def store_status(self) -> dict[str, Any]:
        """Where the quota lives: in this process, always reachable."""
        return {"backend": "memory"}
