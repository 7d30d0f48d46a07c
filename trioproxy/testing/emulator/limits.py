"""The quota model: admit a request against the limits, settle it, report the headers."""

from __future__ import annotations

import math
from typing import Literal

from .actions import Action, Reply, Stream
from .errors import error, quota_429
from .provider import DEFAULT_RESERVED_COMPLETION, EmulatedProvider, QuotaRefusal


def admit(provider: EmulatedProvider, prompt: int, cap: int | None, cached: int = 0) -> Reply | None:
    """Charge the request to the limits, or return the 429 when one is exhausted. `cached`:
    the prompt tokens the prompt cache held (not charged to the uncached bucket)."""
    if provider.flavor == "chutes":
        return _admit_chutes(provider)
    reservation = prompt + (cap or DEFAULT_RESERVED_COMPLETION)
    now = provider.clock()
    refused = (_day_refusal(provider, prompt, now) or _minute_refusal(provider, reservation, now)
               or _uncached_refusal(provider, prompt - cached, now))
    if refused:
        limit, reply = refused
        available = {"tpm": provider.tpm_bucket.level, "utpm": provider.utpm_bucket.level,
                     "tpd": None if provider.tokens_per_day is None
                     else provider.tokens_per_day - provider.today.tokens}.get(limit)
        provider.quota_refusals.append(QuotaRefusal(now, limit, prompt, reservation, available,
                                                    len(provider.received) - 1, cached))
        return reply
    _charge(provider, reservation, prompt - cached)
    return None


def _admit_chutes(provider: EmulatedProvider) -> Reply | None:
    """Chutes has a fuzzy requests/minute limit, and its plans' rolling windows when enabled
    (`plan_windows`); no rate-limit headers, and its 429s name no reset time."""
    now = provider.clock()
    if any(window.full(now) for window in provider.plan_windows):
        return error("chutes", 429, "Subscription quota exceeded for this usage window.")
    for window in provider.plan_windows:
        window.take(now)
    limit = provider.requests_per_minute
    if limit is None:
        return None
    if provider.rpm_bucket.wait_for(1, limit, provider.clock()) > 0:
        return error("chutes", 429, "Infrastructure is at maximum capacity, try again later")
    provider.rpm_bucket.take(1)
    return None


_Refused = tuple[Literal["rpm", "tpm", "utpm", "rpd", "tpd"], Reply]


def _day_refusal(provider: EmulatedProvider, prompt: int, now: float) -> _Refused | None:
    """429 when today's requests are used up or the prompt no longer fits today's tokens."""
    day = provider.today
    day.roll(now)
    retry = _retry_after(day.reset_in(now))
    if provider.requests_per_day is not None and day.requests >= provider.requests_per_day:
        return "rpd", quota_429("Requests per day limit exceeded - too many requests sent.",
                                "too_many_requests_error", "request_quota_exceeded", retry)
    if provider.tokens_per_day is not None and day.tokens + prompt > provider.tokens_per_day:
        return "tpd", quota_429("Tokens per day limit exceeded - too many tokens processed.",
                                "too_many_tokens_error", "token_quota_exceeded", retry)
    return None


def _minute_refusal(provider: EmulatedProvider, reservation: int, now: float) -> _Refused | None:
    """429 when the requests/minute or tokens/minute bucket cannot cover this request."""
    if provider.requests_per_minute is not None:
        wait = provider.rpm_bucket.wait_for(1, provider.requests_per_minute, now)
        if wait > 0:
            return "rpm", quota_429("Requests per minute limit exceeded - too many requests sent.",
                                    "too_many_requests_error", "request_quota_exceeded",
                                    _retry_after(wait))
    if provider.tokens_per_minute is not None:
        wait = provider.tpm_bucket.wait_for(reservation, provider.tokens_per_minute, now)
        if wait > 0:
            return "tpm", quota_429("Tokens per minute limit exceeded - too many tokens processed.",
                                    "too_many_tokens_error", "token_quota_exceeded",
                                    _retry_after(wait))
    return None


def _uncached_refusal(provider: EmulatedProvider, uncached: int, now: float) -> _Refused | None:
    """429 when the uncached-token bucket cannot cover the prompt's uncached part (exactly
    known at admission: it settles as booked)."""
    if provider.uncached_tokens_per_minute is None:
        return None
    wait = provider.utpm_bucket.wait_for(uncached, provider.uncached_tokens_per_minute, now)
    if wait <= 0:
        return None
    return "utpm", quota_429("Uncached tokens per minute limit exceeded - too many uncached input tokens processed.",
                             "too_many_tokens_error", "token_quota_exceeded", _retry_after(wait))


def _charge(provider: EmulatedProvider, reservation: int, uncached: int) -> None:
    """Take one request and the token reservations (buckets were refilled by the checks)."""
    if provider.requests_per_minute is not None:
        provider.rpm_bucket.take(1)
    if provider.tokens_per_minute is not None:
        provider.tpm_bucket.take(reservation)
    if provider.uncached_tokens_per_minute is not None:
        provider.utpm_bucket.take(uncached)
    provider.today.requests += 1


def settle(provider: EmulatedProvider, reservation: int, used: int) -> None:
    """Cerebras: refund the unused reservation and count the real usage for the day.

    The emulated model answers instantly, so this runs as soon as the completion is composed,
    before it is written: a client that has read the answer sees the settled quota.
    """
    if provider.flavor != "cerebras":
        return
    if provider.tokens_per_minute is not None:
        provider.tpm_bucket.give(max(0, reservation - used), provider.tokens_per_minute)
    provider.today.tokens += used


def _retry_after(seconds: float) -> str:
    """Whole seconds, at least 1; the epsilon keeps float noise from adding a second."""
    return str(max(1, math.ceil(seconds - 1e-6)))


def with_limit_headers(provider: EmulatedProvider, action: Action) -> Action:
    """Add Cerebras's rate-limit headers to an answer (Chutes sends none)."""
    if provider.flavor != "cerebras" or not isinstance(action, (Reply, Stream)):
        return action
    action.headers.extend(_limit_headers(provider))
    return action


def _limit_headers(provider: EmulatedProvider) -> list[tuple[str, str]]:
    """The x-ratelimit-* headers for the limits that are set, as of now."""
    now = provider.clock()
    headers: list[tuple[str, str]] = []
    if provider.requests_per_day is not None:
        day = provider.today
        reset = day.reset_in(now)
        remaining = max(0, provider.requests_per_day - day.requests)
        headers += [("x-ratelimit-limit-requests-day", str(provider.requests_per_day)),
                    ("x-ratelimit-remaining-requests-day", str(remaining)),
                    ("x-ratelimit-reset-requests-day", f"{reset:.2f}")]
    if provider.tokens_per_minute is not None:
        bucket, limit = provider.tpm_bucket, provider.tokens_per_minute
        level = bucket.refill(limit, now)
        headers += [("x-ratelimit-limit-tokens-minute", str(limit)),
                    ("x-ratelimit-remaining-tokens-minute", str(max(0, int(level)))),
                    ("x-ratelimit-reset-tokens-minute", f"{bucket.seconds_to_full(limit):.2f}")]
    return headers
