"""Quota windows: amounts booked against a limit over time, as a provider meters them: sliding
(what the last span booked), a refilling bucket (Cerebras's per-minute limits) or fixed (emptied
at each boundary, as a daily quota at UTC midnight).

A window holds no lock and never awaits: its owner (an account of the memory ledger, a client's
budget) calls it from one Trio task at a time.
"""

import math
from collections import deque
from typing import Any

from attrs import define, field

from ..config.schema import QuotaWindow

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
        """What counts against the limit at `now` (entries that left the window no longer do)."""
        self._expire(now)
        return self._total

    def fits(self, now: float, amount: int) -> bool:
        """Whether `amount` more stays within the limit at `now` (always, without a limit)."""
        return self.limit is None or self.used(now) + amount <= self.limit

    def _day_of_booking(self) -> int:
        return 0

    def add(self, now: float, amount: int, seq: int = 0) -> WindowBooking:
        """Book `amount` at `now` for the request numbered `seq`, whether it fits or not (the
        caller checked). Returns the booking, which the caller keeps to `adjust` it later."""
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
        """How long from `now` until `amount` more would fit: 0.0 if it does now; an amount
        larger than the limit itself gets a whole window (it never fits; a retry is honest)."""
        raise NotImplementedError

    def set_limit(self, now: float, limit: int | None) -> None:
        """Take a new limit (a reload); what was booked stays booked."""
        self.limit = limit

    def export(self, now: float, offset: float) -> Any:
        """What the state file keeps of this window, times plus `offset` (to wall-clock time);
        plain values, new and the caller's."""
        raise NotImplementedError

    def restore(self, now: float, saved: Any, offset: float) -> None:
        """Book again what `export` saved, times plus `offset` (back to this clock), leaving out
        what has left the window since."""
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

def seconds_until_utc_midnight(wall_time: float) -> float:
    """Seconds from `wall_time` (Unix time) to the next UTC midnight, where daily quotas reset."""
    return DAY - (wall_time % DAY)
