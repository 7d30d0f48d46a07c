"""The quota windows of an emulated provider: per-minute buckets, daily counters, and the
rolling request counts of Chutes's plans."""

from __future__ import annotations

import math
from collections import deque

from attrs import define, field

DAY_SECONDS = 86400.0


@define
class Bucket:
    """A continuously refilling bucket that refills completely in one minute.

    The capacity is passed in on every call (not stored) so a test may change a provider's
    limit at any time. A bucket starts full at its first use.
    """

    level: float | None = None
    updated: float = 0.0

    def refill(self, capacity: float, now: float) -> float:
        """Bring the level up to `now` and return it."""
        if self.level is None:
            self.level = capacity
        else:
            gained = max(0.0, now - self.updated) * capacity / 60.0
            self.level = min(capacity, self.level + gained)
        self.updated = now
        return self.level

    def wait_for(self, amount: float, capacity: float, now: float) -> float:
        """Seconds until `amount` is available (0 if it is now). An amount above the
        capacity can never be served; it gets the time of a full refill (60 s)."""
        level = self.refill(capacity, now)
        if amount > capacity or capacity <= 0:
            return 60.0
        return max(0.0, amount - level) * 60.0 / capacity

    def take(self, amount: float) -> None:
        """Remove `amount` (call `wait_for` first); the level may not drop below zero."""
        self.level = max(0.0, (self.level or 0.0) - amount)

    def give(self, amount: float, capacity: float) -> None:
        """Return an unused reservation."""
        self.level = min(capacity, (self.level or 0.0) + amount)

    def seconds_to_full(self, capacity: float) -> float:
        """Seconds until the bucket is full again at the current level."""
        if self.level is None or capacity <= 0:
            return 0.0
        return (capacity - self.level) * 60.0 / capacity


@define
class Day:
    """Daily counters; the day restarts every 86400 s of clock time from the first roll."""

    start: float | None = None
    index: int = 0
    requests: int = 0
    tokens: int = 0

    def roll(self, now: float) -> None:
        """Reset the counters when `now` lies in a later day than the last call."""
        if self.start is None:
            self.start = now
        index = int((now - self.start) // DAY_SECONDS)
        if index != self.index:
            self.index, self.requests, self.tokens = index, 0, 0

    def place(self, now: float, start: float, tokens: int) -> None:
        """Make `start` the beginning of a day and count `tokens` as already used today."""
        self.start = start
        self.index = math.floor((now - start) / DAY_SECONDS)
        self.requests, self.tokens = 0, tokens

    def reset_in(self, now: float) -> float:
        """Seconds until the next day boundary."""
        self.roll(now)
        assert self.start is not None
        return DAY_SECONDS - ((now - self.start) % DAY_SECONDS)


@define
class RollingCount:
    """Requests admitted within the last `span` seconds (Chutes meters plans over a rolling
    4-hour window and a monthly one): at most `limit` of them."""

    span: float
    limit: int
    times: deque[float] = field(factory=deque)

    def full(self, now: float) -> bool:
        while self.times and self.times[0] <= now - self.span:
            self.times.popleft()
        return len(self.times) >= self.limit

    def take(self, now: float) -> None:
        self.times.append(now)
