"""The in-process quota ledger: windows per provider account (one per API key), reservations,
cooldowns. It implements `contract.Ledger`; `redis.ledger` is the shared implementation.
"""

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import trio
from attrs import define, field, frozen

from ..config.schema import ProviderConfig, QuotaWindow
from ..config.derived import extra_windows
from .contract import WINDOW_NAMES, Refusal, Reservation, settled_uncached, summary_line, uncached_costs, window_kind
from .limits import LimitState, limit_states

MINUTE = 60.0
DAY = 86_400.0


# Bookings within this many seconds share one bin: memory per window stays at a bin a second
# however many requests arrive, at the price of expiring a booking up to this much late.
BIN_SECONDS = 1.0
# A longer window's bins span this share of it: a 4-hour window keeps at most ~60 bins of
# 4 minutes (a booking may leave up to one bin late: the safe side).
BINS_PER_WINDOW = 60


@define
class _Bin:
    at: float  # the latest booking in it: the bin leaves a sliding window with that one
    amount: int
    last_seq: int  # order of booking, to tell what a provider's figure already includes
    live: bool = True  # False once the window has dropped it, so a late settle is ignored
    day: int = 0  # daily windows: which day it counts in
    started: float = 0.0


@define
class WindowBooking:
    """One request's share of a bin, so settling it corrects the right amount."""

    bin: _Bin
    amount: int


@define
class Window:
    """Amounts booked against an optional limit; subclasses decide when entries expire."""

    limit: int | None
    bin_seconds: float = field(default=BIN_SECONDS, kw_only=True)
    _entries: deque[_Bin] = field(factory=deque, kw_only=True)
    _total: int = field(default=0, kw_only=True)

    def _expire(self, now: float) -> None:
        raise NotImplementedError

    def _drop(self, entry: _Bin) -> None:
        entry.live = False
        self._total -= entry.amount

    def used(self, now: float) -> int:
        self._expire(now)
        return self._total

    def fits(self, now: float, amount: int) -> bool:
        return self.limit is None or self.used(now) + amount <= self.limit

    def _day_of_booking(self) -> int:
        return 0

    def add(self, now: float, amount: int, seq: int = 0) -> WindowBooking:
        self._expire(now)
        day = self._day_of_booking()
        last = self._entries[-1] if self._entries else None
        if last is None or not last.live or last.day != day or now - last.started >= self.bin_seconds:
            last = _Bin(now, 0, seq, day=day, started=now)
            self._entries.append(last)
        last.at, last.amount, last.last_seq = max(last.at, now), last.amount + amount, seq
        self._total += amount
        return WindowBooking(last, amount)

    def adjust(self, booking: WindowBooking, amount: int) -> None:
        """Correct an earlier booking to its real amount (an estimate settled by usage)."""
        if booking.bin.live and booking.bin.day == self._day_of_booking():
            booking.bin.amount += amount - booking.amount
            self._total += amount - booking.amount
        booking.amount = amount

    def booked_after(self, seq: int) -> int:
        """Sum booked after `seq` that still counts (a bin straddling it counts whole: safe side)."""
        total = 0
        for entry in reversed(self._entries):
            if entry.last_seq <= seq:
                break
            total += entry.amount
        return total

    def seconds_until_fits(self, now: float, amount: int) -> float:
        raise NotImplementedError

    def set_limit(self, now: float, limit: int | None) -> None:
        """Take a new limit (a reload); what was booked stays booked."""
        self.limit = limit

    def export(self, now: float, offset: float) -> Any:
        raise NotImplementedError

    def restore(self, now: float, saved: Any, offset: float) -> None:
        raise NotImplementedError


@define
class SlidingWindow(Window):
    """Sum of amounts added within the last `span` seconds."""

    span: float = MINUTE

    def _expire(self, now: float) -> None:
        horizon = now - self.span
        while self._entries and self._entries[0].at <= horizon:
            self._drop(self._entries.popleft())

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

    def export(self, now: float, offset: float) -> list[list[float]]:
        self._expire(now)
        return [[entry.at + offset, entry.amount] for entry in self._entries]

    def restore(self, now: float, saved: list[list[float]], offset: float) -> None:
        for at, amount in saved:
            if now - self.span < at + offset <= now:
                self.add(at + offset, int(amount))


@define
class RefillingBucket(SlidingWindow):
    """A bucket of `limit` that refills continuously over `span`, as Cerebras counts per minute.

    It starts full, a booking takes from it and a settled booking gives back what it did not
    use. Compared with a sliding window this grants the same rate, plus the bucket's starting
    level, and frees capacity smoothly instead of when an old entry leaves. The entries of the
    last `span` are still kept: to report use and to tell what a provider's figure includes.
    """

    _level: float | None = field(default=None, kw_only=True)
    _updated: float = field(default=0.0, kw_only=True)

    def _refill(self, now: float) -> float:
        assert self.limit is not None
        if self._level is None:
            self._level = float(self.limit)
        else:
            gained = max(0.0, now - self._updated) * self.limit / self.span
            self._level = min(float(self.limit), self._level + gained)
        self._updated = max(self._updated, now)
        return self._level

    def fits(self, now: float, amount: int) -> bool:
        return self.limit is None or self._refill(now) >= amount

    def used(self, now: float) -> int:
        """What is out of the bucket now (rounded up); without a limit, the last span's sum."""
        if self.limit is None:
            return super().used(now)
        return max(0, math.ceil(self.limit - self._refill(now) - 1e-9))

    def add(self, now: float, amount: int, seq: int = 0) -> WindowBooking:
        if self.limit is not None:
            self._level = self._refill(now) - amount
        return super().add(now, amount, seq)

    def adjust(self, booking: WindowBooking, amount: int) -> None:
        if self.limit is not None and self._level is not None:
            # The provider gives back an unused reservation whenever it settles, however old.
            self._level = min(float(self.limit), self._level + booking.amount - amount)
        super().adjust(booking, amount)

    def seconds_until_fits(self, now: float, amount: int) -> float:
        if self.limit is None or self.fits(now, amount):
            return 0.0
        if amount > self.limit:
            return self.span
        return (amount - self._refill(now)) * self.span / self.limit

    def lower_to(self, now: float, remaining: float) -> None:
        """Take the provider's figure of what is left, when it is lower than ours; the bucket
        refills on from there. A higher figure is not taken: requests booked before the one
        that carried it may not have reached the provider yet."""
        level = self._refill(now)
        self._level = min(level, remaining)

    def restore(self, now: float, saved: list[list[float]], offset: float) -> None:
        super().restore(now, saved, offset)
        self._level_from_entries(now)

    def set_limit(self, now: float, limit: int | None) -> None:
        if limit != self.limit:
            self.limit = limit
            self._expire(now)
            self._level_from_entries(now)

    def _level_from_entries(self, now: float) -> None:
        if self.limit is not None:
            # What was booked in the last span is taken; the refill since then is credited.
            self._level, self._updated = float(self.limit), now
            for entry in self._entries:
                self._level -= entry.amount * (1 - (now - entry.at) / self.span)


@define
class FixedWindow(Window):
    """A counter that empties at each boundary, `period` seconds apart: as Cerebras's daily
    quotas do (the day), or a provider's fixed windows of other lengths.

    A day's boundary starts as the next UTC midnight and is corrected by the provider's
    `reset-*-day` headers when they arrive; other periods' are multiples of the period since
    the Unix epoch.
    """

    day_ends_at: float = 0.0  # the current period's end (a day's, for the daily windows)
    period: float = DAY
    _day: int = field(default=0, kw_only=True)  # the periods passed

    # Entries are kept only this long: enough to tell what a provider's fresh figure includes.
    # The day's total stays; an entry settled later still finds its day by number, so memory
    # does not grow with the day's traffic.
    RECENT = 120.0

    def _expire(self, now: float) -> None:
        if now >= self.day_ends_at:
            skipped = math.floor((now - self.day_ends_at) / self.period) + 1
            self.day_ends_at += skipped * self.period
            self._day += skipped
            self._entries.clear()
            self._total = 0
        while self._entries and self._entries[0].at <= now - self.RECENT:
            self._entries.popleft()

    def _day_of_booking(self) -> int:
        return self._day  # a settle from yesterday no longer counts

    def seconds_until_fits(self, now: float, amount: int) -> float:
        if self.fits(now, amount) or self.limit is None:
            return 0.0
        return self.day_ends_at - now

    def export(self, now: float, offset: float) -> dict[str, float]:
        return {"day_ends_at": self.day_ends_at + offset, "used": self.used(now)}

    def restore(self, now: float, saved: dict[str, float], offset: float) -> None:
        ends_at = float(saved["day_ends_at"]) + offset
        if now < ends_at:  # the saved day is still today
            self.day_ends_at = ends_at
            self.add(now, int(saved["used"]))

    def move_boundary(self, now: float, seconds_to_reset: float) -> None:
        """Align the period to the provider's reset time (its figure wins over our guess)."""
        self._expire(now)
        self.day_ends_at = now + seconds_to_reset


DailyWindow = FixedWindow  # the daily windows (rpd, tpd) are fixed windows of a day


def window_of(window: QuotaWindow, now: float, wall: float) -> Window:
    """The ledger's window for a declared one, as its provider meters it."""
    limit, span = window.limit, float(window.seconds)
    bins = max(BIN_SECONDS, span / BINS_PER_WINDOW)
    if window.metering == "bucket":
        return RefillingBucket(limit, span=span, bin_seconds=bins)
    if window.metering == "fixed":
        return FixedWindow(limit, day_ends_at=now + span - wall % span, period=span)
    return SlidingWindow(limit, span=span, bin_seconds=bins)


@frozen
class Synced:
    """A provider's own figure for one window: `remaining` as of the request numbered `seq`."""

    remaining: int
    seq: int
    valid_until: float  # its reset time: afterwards the figure says nothing


@define
class MemoryReservation(Reservation):
    _entries: dict[str, tuple[Window, WindowBooking]] = field(factory=dict)  # the token windows, for settling


def seconds_until_utc_midnight(wall_time: float) -> float:
    return DAY - (wall_time % DAY)


@define
class AccountQuota:
    """Live quota state of one provider account (one API key).

    After a cooldown the account is half-open: one request probes it while the others keep
    going elsewhere; the probe's success reopens it, a new refusal cools it down again.
    """

    name: str
    provider: str
    key_index: int
    windows: dict[str, Window]
    limits: dict[str, LimitState] = field(factory=dict)  # where each window's limit comes from
    synced: dict[str, Synced] = field(factory=dict)
    figure_seq: dict[str, int] = field(factory=dict)  # the request whose figure was taken last
    cooldown_until: float = -math.inf
    cooldown_reason: str = ""
    half_open: bool = False
    probe_in_flight: bool = False

    @classmethod
    def from_config(cls, name: str, provider: ProviderConfig, key_index: int, now: float, wall: float) -> "AccountQuota":
        day_ends_at = now + seconds_until_utc_midnight(wall)
        limits = limit_states(provider)
        windows: dict[str, Window] = {
            "rpm": RefillingBucket(limits["rpm"].limit, span=MINUTE),
            "tpm": RefillingBucket(limits["tpm"].limit, span=MINUTE),
            "utpm": RefillingBucket(limits["utpm"].limit, span=MINUTE),
            "rpd": DailyWindow(limits["rpd"].limit, day_ends_at=day_ends_at),
            "tpd": DailyWindow(limits["tpd"].limit, day_ends_at=day_ends_at),
        }
        windows |= {name: window_of(declared, now, wall) for name, declared in extra_windows(provider).items()}
        return cls(name=name, provider=provider.name, key_index=key_index, windows=windows, limits=limits)

    def take_limits(self, fresh: "AccountQuota", now: float) -> None:
        """Apply the limits of `fresh` (built from new settings), keeping this account's state
        and what the provider stated (under the new ceilings)."""
        for name, window in self.windows.items():
            kept = self.limits[name]
            self.limits[name] = state = fresh.limits[name]
            state.stated, state.stated_at = kept.stated, kept.stated_at
            window.set_limit(now, state.limit)

    def adopt_limits(self, now: float, stated: Mapping[str, int]) -> None:
        """Take the provider's stated limits as the windows' sizes, below the configured ceilings."""
        for name, figure in stated.items():
            state = self.limits.get(name)
            if state is None:
                continue
            state.stated, state.stated_at = figure, now
            if state.limit != self.windows[name].limit:
                self.windows[name].set_limit(now, state.limit)

    def end_cooldown_if_due(self, now: float) -> None:
        if self.cooldown_until != -math.inf and now >= self.cooldown_until:
            self.cooldown_until, self.cooldown_reason = -math.inf, ""
            self.half_open, self.probe_in_flight = True, False

    def _amounts(self, tokens: int, requests: int = 1, uncached: int = 0) -> dict[str, int]:
        amounts = {"requests": requests, "tokens": tokens, "uncached_tokens": uncached}
        return {name: amounts[window_kind(name)] for name in self.windows}

    def refusal(self, now: float, tokens: int) -> Refusal | None:
        return next(iter(self.refusals(now, tokens)), None)

    def longest_refusal(self, now: float, tokens: int, requests: int = 1, uncached: int = 0) -> Refusal | None:
        """The limit that holds `requests` requests of `tokens` in all longest, None if none does."""
        found = self.refusals(now, tokens, requests, uncached)
        return max(found, key=lambda r: r.retry_at) if found else None

    def refusals(self, now: float, tokens: int, requests: int = 1, uncached: int = 0) -> list[Refusal]:
        """Every reason `requests` requests of `tokens` in all (`uncached` of them prompt tokens
        not in the provider's cache) would be refused now."""
        self.end_cooldown_if_due(now)
        if now < self.cooldown_until:
            return [Refusal("cooldown", self.cooldown_until)]
        if self.half_open and self.probe_in_flight:
            return [Refusal("probe", now + 1)]
        found = []
        for name, amount in self._amounts(tokens, requests, uncached).items():
            window = self.windows[name]
            if not window.fits(now, amount):
                found.append(Refusal(name, now + window.seconds_until_fits(now, amount)))
            elif self.provider_remaining(name, now) < amount:
                found.append(Refusal(name, self.synced[name].valid_until))
        return found

    def provider_remaining(self, name: str, now: float) -> float:
        """What the provider last said remains, less what we booked since; inf if unknown."""
        synced = self.synced.get(name)
        if synced is None or now >= synced.valid_until:
            return math.inf
        return synced.remaining - self.windows[name].booked_after(synced.seq)

    def headroom(self, now: float) -> float:
        """The smallest share left of any limited window (1.0 = untouched), for choosing keys."""
        shares = [1.0]
        for name, window in self.windows.items():
            if window.limit:
                left = min(window.limit - window.used(now), self.provider_remaining(name, now))
                shares.append(max(0.0, left) / window.limit)
        return min(shares)


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
        return self._clock()

    def accounts(self) -> list[str]:
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
        entries = {}
        for name, amount in best._amounts(tokens, 1, cost).items():
            entry = best.windows[name].add(now, amount, self._seq)
            if window_kind(name) != "requests":
                entries[name] = (best.windows[name], entry)
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
        for name, (window, entry) in reservation._entries.items():
            window.adjust(entry, uncached if window_kind(name) == "uncached_tokens" else actual_tokens)
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
        """Every account's windows, provider figures and cooldown, times as wall-clock seconds."""
        now = self._clock()
        state: dict[str, Any] = {}
        for name, account in self._accounts.items():
            state[name] = {
                "windows": {
                    **{window: account.windows[window].export(now, wall_offset) for window in WINDOW_NAMES},
                    "other": {
                        name: window.export(now, wall_offset)
                        for name, window in account.windows.items()
                        if name not in WINDOW_NAMES
                    },
                },
                "synced": {
                    window: [figure.remaining, figure.valid_until + wall_offset]
                    for window, figure in account.synced.items()
                    if now < figure.valid_until
                },
                "cooldown": [account.cooldown_until + wall_offset, account.cooldown_reason]
                if now < account.cooldown_until
                else None,
            }
        return state

    def import_state(self, state: dict[str, Any], trio_offset: float) -> int:
        """Restore what `export_state` saved (for accounts that still exist); returns how many."""
        now = self._clock()
        restored = 0
        for name, saved in state.items():
            account = self._accounts.get(name)
            if account is None:
                continue
            windows = {**saved["windows"].get("other", {}), **saved["windows"]}
            for window, kept in account.windows.items():
                # (state saved before a window existed lacks it; one saved as another metering
                # has another shape)
                if window in windows and isinstance(windows[window], list) == isinstance(kept, SlidingWindow):
                    kept.restore(now, windows[window], trio_offset)
            for window, (remaining, valid_until) in saved["synced"].items():
                if window in WINDOW_NAMES and now < valid_until + trio_offset:
                    account.synced[window] = Synced(int(remaining), self._seq, valid_until + trio_offset)
            if saved["cooldown"] is not None:
                until, reason = saved["cooldown"]
                if now < until + trio_offset:
                    account.cooldown_until, account.cooldown_reason = until + trio_offset, str(reason)
            restored += 1
        return restored

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
        return {account.name: self.snapshot(account.name) for account in self._by_provider[provider]}

    def summary(self, provider: str) -> str:
        """Short quota state of a provider's accounts for logs, e.g. `cerebras[rpm 3/12 tpm 4100/132000]`."""
        return " ".join(filter(None, (self.account_summary(a.name) for a in self._by_provider[provider])))

    def account_summary(self, account: str) -> str:
        return summary_line(account, self.snapshot(account))

    def store_status(self) -> dict[str, Any]:
        return {"backend": "memory"}


def account_name(provider: str, index: int, count: int) -> str:
    """`cerebras` for a single key, `cerebras#1`, `cerebras#2`, ... for several."""
    return provider if count == 1 else f"{provider}#{index + 1}"

