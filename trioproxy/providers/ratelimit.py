"""Reading a provider's rate-limit headers: what remains, when it resets, the limits it states."""

import logging
import re
import time
from collections.abc import Mapping
from datetime import timezone
from email.utils import parsedate_to_datetime

import httpx
from attrs import frozen

from ..config.schema import RateLimitHeaders

log = logging.getLogger("trioproxy.ratelimit")

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


def seconds_header(headers: Mapping[str, str], name: str) -> float | None:
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


def quota_figures(headers: Mapping[str, str], pairs: dict[str, tuple[str, str]]) -> dict[str, tuple[float, float]]:
    """`{window: (remaining, seconds to reset)}` from the provider's rate-limit headers."""
    figures = {}
    for window, (remaining_name, reset_name) in pairs.items():
        remaining = headers.get(remaining_name)
        if remaining is None:
            continue
        reset = seconds_header(headers, reset_name)
        if reset is None:
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


def _stated(headers: Mapping[str, str], names: list[tuple[str, str]]) -> dict[str, int]:
    """`{window: limit}` from the headers `names` lists, (header, window) each.

    A figure that is not a number from 1 to LARGEST_LIMIT (negative, NaN, huge, text) is left
    out with a debug line: a broken header must not resize a bucket.
    """
    stated = {}
    for name, window in names:
        raw = headers.get(name)
        if raw is None:
            continue
        figure = _limit_figure(raw)
        if figure is None:
            log.debug("ignored %s: %r is not a limit", name, raw[:40])
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


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After as seconds, in either of its forms (seconds or an HTTP date)."""
    return seconds_header(headers, "retry-after")


def header_dict(headers: httpx.Headers) -> dict[str, str]:
    """A response's headers as a plain dict with lower-case names, a repeated header's values
    joined with ", " (as httpx's `get` gives them): built once per answer, each lookup then a
    dict's, where httpx's case-insensitive one lowers, encodes and scans every header."""
    found: dict[str, str] = {}
    try:
        for key, value in headers.raw:
            name, text = key.lower().decode("ascii"), value.decode("ascii")
            found[name] = f"{found[name]}, {text}" if name in found else text
    except UnicodeDecodeError:  # httpx reads them all as UTF-8 (or Latin-1) then: its own way
        return dict(headers.items())
    return found


@frozen
class QuotaHeaders:
    """One provider's rate-limit header names, lower case, read from a lower-case header dict
    (`header_dict`); the names are worked out once, not on every answer."""

    stated_names: list[tuple[str, str]]  # (header, window) of the limits the provider states
    pairs: dict[str, tuple[str, str]]  # window -> (remaining header, reset header)

    @classmethod
    def of(cls, names: RateLimitHeaders) -> "QuotaHeaders":
        prefix = names.limit_prefix.lower()
        stated = [(prefix + suffix, window) for suffix, window in _STATED_WINDOWS.items()] if prefix else []
        pairs = {window: (remaining.lower(), reset.lower()) for window, (remaining, reset) in names.pairs().items()}
        return cls(stated, pairs)

    def stated_limits(self, headers: Mapping[str, str]) -> dict[str, int]:
        """`{window: limit}` from the provider's `<prefix>{requests,tokens}-{minute,day}`
        headers (none with an empty prefix); garbage figures are left out (`_stated`)."""
        return _stated(headers, self.stated_names) if self.stated_names else {}

    def quota_figures(self, headers: Mapping[str, str]) -> dict[str, tuple[float, float]]:
        """`quota_figures` of these names."""
        return quota_figures(headers, self.pairs) if self.pairs else {}
