"""Recent traffic for the dashboard, in memory of a fixed size whatever the uptime or load.

Three parts: the last requests (a ring buffer), one tally per wall-clock minute of the last hour
(a ring of 60 slots, reused as minutes pass), and one tally since start. A tally holds counters
keyed by provider, reroute reason and status (bounded sets) and latency histograms with fixed
buckets, so percentiles come without keeping samples.
"""

import bisect
import operator
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, NamedTuple

from attrs import define, field

from .served import ServedRequest

RECENT_REQUESTS = 100
MINUTES = 60
REQUEST_ID_CHARS = 80  # ids come from clients' headers: keep what the ring holds small
# Upper bounds in seconds, 1 ms to about 13 minutes (long streams), each 25 % above the last:
# a percentile read from them is within that much of the truth.
LATENCY_BOUNDS = tuple(0.001 * 1.25**i for i in range(62))
PERCENTILES = (50, 90, 99)


class RecentRequest(NamedTuple):
    """What the dashboard lists of one request: never its text, never a key.

    A named tuple: built on every request, and the cheapest record Python makes.
    """

    time: float  # wall clock, seconds
    request_id: str
    api: str
    route: str  # the model route the client's model name resolved to, or "-"
    provider: str  # the account that served it, e.g. cerebras#2, or "-"
    reason: str
    stream: bool
    status: int
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: float
    first_byte_ms: float | None
    message: str  # an error answer's message (scrubbed, cut short); "" when served


def _buckets() -> list[int]:
    return [0] * (len(LATENCY_BOUNDS) + 1)


def _percentile(counts: list[int], share: float) -> float | None:
    """The latency below which `share` of the requests fell, interpolated within its bucket."""
    total = sum(counts)
    if not total:
        return None
    rank = share * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            low = LATENCY_BOUNDS[index - 1] if index else 0.0
            high = LATENCY_BOUNDS[index] if index < len(LATENCY_BOUNDS) else LATENCY_BOUNDS[-1]
            return low + (high - low) * (rank - seen) / count
        seen += count
    return LATENCY_BOUNDS[-1]


def _add_into(target: dict[str, list[int]], source: dict[str, list[int]]) -> None:
    for provider, counts in source.items():
        into = target.setdefault(provider, _buckets())
        into[:] = map(operator.add, into, counts)


def _quantiles(histograms: dict[str, list[int]]) -> dict[str, dict[str, float | int | None]]:
    return {
        provider: {"count": sum(counts), **{f"p{p}_ms": _ms(_percentile(counts, p / 100)) for p in PERCENTILES}}
        for provider, counts in sorted(histograms.items())
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


@define
class Tally:
    """Counts of a stretch of time: one minute, or since start."""

    minute: int = -1  # which wall-clock minute a slot of the ring holds
    requests: Counter[str] = field(factory=Counter)  # by provider
    tokens: Counter[str] = field(factory=Counter)  # prompt and completion, by provider
    reroutes: Counter[str] = field(factory=Counter)
    errors: Counter[int] = field(factory=Counter)  # by status
    latency: dict[str, list[int]] = field(factory=dict)  # bucket counts, by provider
    first_byte: dict[str, list[int]] = field(factory=dict)

    def add(self, provider: str, tokens: int, reroute: str | None, error: int | None,
            latency_bucket: int, first_byte_bucket: int | None) -> None:
        """Count one request; `observe` works out the parts shared by every tally once."""
        self.requests[provider] = self.requests.get(provider, 0) + 1
        self.tokens[provider] = self.tokens.get(provider, 0) + tokens
        if reroute is not None:
            self.reroutes[reroute] += 1
        if error is not None:
            self.errors[error] += 1
        histogram = self.latency.get(provider) or self.latency.setdefault(provider, _buckets())
        histogram[latency_bucket] += 1
        if first_byte_bucket is not None:
            histogram = self.first_byte.get(provider) or self.first_byte.setdefault(provider, _buckets())
            histogram[first_byte_bucket] += 1

    def merge(self, other: "Tally") -> None:
        self.requests.update(other.requests)
        self.tokens.update(other.tokens)
        self.reroutes.update(other.reroutes)
        self.errors.update(other.errors)
        _add_into(self.latency, other.latency)
        _add_into(self.first_byte, other.first_byte)

    def summary(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "tokens": dict(self.tokens),
            "reroutes": dict(self.reroutes),
            "errors": {str(status): count for status, count in sorted(self.errors.items())},
            "latency": _quantiles(self.latency),
            "first_byte": _quantiles(self.first_byte),
        }


class TrafficHistory:
    """The last requests, the last hour by minute and the totals since start, for the dashboard."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.started = clock()
        self._recent: deque[RecentRequest] = deque(maxlen=RECENT_REQUESTS)
        self._minutes = [Tally() for _ in range(MINUTES)]
        self._total = Tally()
        # The hour's finished minutes, summed once per minute rather than on every poll (requests
        # are only ever added to the current minute; its `minute` says for which minute it was summed).
        self._earlier = Tally()

    def observe(self, served: ServedRequest, reason: str, latency: float, first_byte: float | None) -> None:
        """Account one finished request; a few counter updates, nothing that grows."""
        now = self._clock()
        minute = int(now // 60)
        slot = self._minutes[minute % MINUTES]
        if slot.minute != minute:
            slot = self._minutes[minute % MINUTES] = Tally(minute)
        route = served.route
        tokens = (route.prompt_tokens or 0) + (route.completion_tokens or 0)
        reroute = reason if reason.startswith(("fallback:", "failover:")) else None
        error = served.status if served.status != 200 else None
        latency_bucket = bisect.bisect_left(LATENCY_BOUNDS, latency)
        first_byte_bucket = None if first_byte is None else bisect.bisect_left(LATENCY_BOUNDS, first_byte)
        for tally in (slot, self._total):
            tally.add(route.provider, tokens, reroute, error, latency_bucket, first_byte_bucket)
        self._recent.append(RecentRequest(
            now, served.request_id[:REQUEST_ID_CHARS], served.api, served.model, route.account if route.account != "-" else route.provider,
            reason, served.stream, served.status, route.prompt_tokens, route.completion_tokens,
            round(latency * 1000, 1), None if first_byte is None else round(first_byte * 1000, 1), served.message,
        ))

    def snapshot(self) -> dict[str, Any]:
        """The last hour minute by minute and as a whole, the totals since start, the last requests."""
        now = self._clock()
        current = int(now // 60)
        minutes = list(range(current - MINUTES + 1, current + 1))
        slots = {slot.minute: slot for slot in self._minutes if slot.minute in range(minutes[0], current + 1)}
        if self._earlier.minute != current:
            self._earlier = Tally(current)
            for minute, slot in slots.items():
                if minute != current:
                    self._earlier.merge(slot)
        hour = Tally()
        hour.merge(self._earlier)
        if current in slots:
            hour.merge(slots[current])
        providers = sorted(set(self._total.requests))
        empty = Tally()

        def series(pick: Callable[[Tally], Counter[str]]) -> dict[str, list[int]]:
            return {p: [pick(slots.get(m, empty))[p] for m in minutes] for p in providers}

        return {
            "now": now,
            "started": self.started,
            "minutes": [m * 60 for m in minutes],
            "per_minute": {"requests": series(lambda t: t.requests), "tokens": series(lambda t: t.tokens)},
            "last_hour": hour.summary(),
            "since_start": self._total.summary(),
            "recent": [r._asdict() for r in reversed(self._recent)],
        }

