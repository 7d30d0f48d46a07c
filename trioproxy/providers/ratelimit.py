"""Reading a provider's rate-limit answers: what kind of refusal, and when capacity returns."""

import logging
import re
import time
from datetime import timezone
from email.utils import parsedate_to_datetime

import httpx
from attrs import frozen

from .upstream import UpstreamFailure

log = logging.getLogger("trioproxy.ratelimit")

# Codes and messages that say "busy right now" rather than "your quota is spent".
_CAPACITY_CODES = frozenset({"queue_exceeded"})
_CAPACITY_WORDS = ("capacity", "high traffic", "no instances", "try again soon")


@frozen
class Backoff:
    """How long to leave a provider alone, and a short label for logs and state."""

    seconds: float
    kind: str  # "rpm", "tpm", "utpm", "rpd", "tpd", "capacity" or "unknown"
    from_provider: bool  # the provider named the time (Retry-After or a reset header)


def refusal_kind(failure: UpstreamFailure) -> str:
    """Tell apart per-minute, per-day and capacity refusals (Cerebras's `param` is "quota" for all)."""
    message = failure.error.message.lower()
    if failure.error.code in _CAPACITY_CODES or failure.status == 503 or any(w in message for w in _CAPACITY_WORDS):
        return "capacity"
    per_day = "per day" in message
    if "uncached" in message and not per_day:
        return "utpm"
    if "token" in message:
        return "tpd" if per_day else "tpm"
    if "request" in message:
        return "rpd" if per_day else "rpm"
    return "unknown"


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?")


def parse_seconds(raw: str) -> float | None:
    """Seconds from `11.38` (Cerebras) or a duration such as `1m30s` or `250ms`; None if neither."""
    raw = raw.strip()
    try:
        value = float(raw)
    except ValueError:
        match = _DURATION.fullmatch(raw)
        if not raw or match is None:
            return None
        hours, minutes, seconds, millis = (float(part) if part else 0.0 for part in match.groups())
        value = hours * 3600 + minutes * 60 + seconds + millis / 1000
    return value if value >= 0 and value != float("inf") else None


def seconds_header(headers: httpx.Headers, name: str) -> float | None:
    """A header holding a time to wait, as seconds (`11.38`), a duration (`1m30s`) or an HTTP
    date (`Wed, 02 Dec 2026 10:00:00 GMT`); None when absent or malformed."""
    raw = headers.get(name)
    if raw is None:
        return None
    seconds = parse_seconds(raw)
    return seconds if seconds is not None else _seconds_until_date(raw)


def _seconds_until_date(raw: str) -> float | None:
    try:
        moment = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # "-0000": a time in UTC whose source zone is unknown
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, moment.timestamp() - time.time())


def quota_figures(headers: httpx.Headers, pairs: dict[str, tuple[str, str]]) -> dict[str, tuple[float, float]]:
    """`{window: (remaining, seconds to reset)}` from the provider's rate-limit headers."""
    figures = {}
    for window, (remaining_name, reset_name) in pairs.items():
        remaining, reset = headers.get(remaining_name), seconds_header(headers, reset_name)
        if remaining is None or reset is None:
            continue
        try:
            figures[window] = (max(0.0, float(remaining)), reset)
        except ValueError:
            continue
    return figures


# Stated limits: the header's suffix after the prefix -> our window.
_STATED_WINDOWS = {"requests-minute": "rpm", "tokens-minute": "tpm", "requests-day": "rpd", "tokens-day": "tpd"}
# Above this a figure is garbage, not a limit (Cerebras's largest plans state about 1e8 a day).
LARGEST_LIMIT = 10**12


def stated_limits(headers: httpx.Headers, prefix: str) -> dict[str, int]:
    """`{window: limit}` from the provider's `<prefix>{requests,tokens}-{minute,day}` headers.

    A figure that is not a number from 1 to LARGEST_LIMIT (negative, NaN, huge, text) is left
    out with a debug line: a broken header must not resize a bucket.
    """
    if not prefix:
        return {}
    stated = {}
    for suffix, window in _STATED_WINDOWS.items():
        raw = headers.get(prefix + suffix)
        if raw is None:
            continue
        figure = _limit_figure(raw)
        if figure is None:
            log.debug("ignored %s%s: %r is not a limit", prefix, suffix, raw[:40])
        else:
            stated[window] = figure
    return stated


def _limit_figure(raw: str) -> int | None:
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    if not (1 <= value <= LARGEST_LIMIT):  # NaN fails every comparison
        return None
    return int(value)


def retry_after(headers: httpx.Headers) -> float | None:
    """Retry-After as seconds, in either of its forms (seconds or an HTTP date)."""
    return seconds_header(headers, "retry-after")


_RESET_HEADER = {
    "tpm": "x-ratelimit-reset-tokens-minute",
    "rpd": "x-ratelimit-reset-requests-day",
    "tpd": "x-ratelimit-reset-requests-day",  # Cerebras's only daily reset header
}


def backoff_for(
    failure: UpstreamFailure, quota_cooldown: float, capacity_backoff: float, honour_hints: bool = True
) -> Backoff | None:
    """The cooldown a 429 or 503 calls for; None for failures that need none.

    The provider's own figure wins (Retry-After, then the matching reset header); without
    one, a quota refusal waits `quota_cooldown` and a capacity refusal `capacity_backoff`.
    With `honour_hints` off (the original design), every 429 waits `quota_cooldown`.
    """
    if failure.status not in (429, 503):
        return None
    kind = refusal_kind(failure)
    if not honour_hints:
        return Backoff(quota_cooldown, kind, False) if failure.status == 429 else None
    named = retry_after(failure.headers)
    if named is None and kind in _RESET_HEADER:
        named = seconds_header(failure.headers, _RESET_HEADER[kind])
    if named is not None:
        return Backoff(max(named, 1.0), kind, True)
    return Backoff(capacity_backoff if kind == "capacity" else quota_cooldown, kind, False)
