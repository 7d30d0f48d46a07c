"""Requests the proxy did not answer with 200, for people: why, in the log line's format, and
counts and the last few for `/v1/status`, the dashboard and `/metrics`.

Everything here has a fixed size whatever the traffic: counters keyed by status (a small set),
the last `RECENT_REFUSALS` refusals, and unknown paths by method and a path family whose set is
capped (a scanner that tries thousands of paths adds one family, `other`).
"""

import re
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, NamedTuple

from ..errors import ProxyError

MESSAGE_CHARS = 200  # a refusal's message as logged and shown: the gist, not a document
RECENT_REFUSALS = 20
PATH_FAMILIES = 32  # distinct unknown-path families counted before the rest count as `other`
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
_SEGMENT = re.compile(r"[A-Za-z0-9._~-]{1,32}")


def refusal_reason(error: ProxyError) -> str:
    """`refused: model_not_found (model)`, `refused: invalid_json`, `refused: not_found`."""
    reason = f"refused: {error.code or error.type}"
    return f"{reason} ({error.param})" if error.param else reason


def path_family(method: str, path: str) -> tuple[str, str]:
    """(method, family) of an unknown path, from a bounded vocabulary: methods outside HTTP's
    own are `OTHER`; the family is the first segment and `/*` when more follows
    (`/api/hello` -> `/api/*`, `/v1beta/models/x:generateContent` -> `/v1beta/*`), `/?` when
    that segment is not a plain word."""
    method = method if method in _METHODS else "OTHER"
    first, _, rest = path.lstrip("/").partition("/")
    family = "/" + first if _SEGMENT.fullmatch(first) else ("/" if not first else "/?")
    return method, family + ("/*" if rest else "")


class Refusal(NamedTuple):
    """One request answered with an error: what the client was told, never its body or key."""

    time: float  # wall clock, seconds
    request_id: str
    api: str  # the front door, or "none" when refused before one took it
    method: str
    path: str
    status: int
    reason: str
    message: str  # scrubbed and cut to MESSAGE_CHARS


class Refusals:
    """Counts of error answers by status, the last few with their message, unknown paths.

    `refused` counts the requests the proxy turned down itself (bad input, unknown model or path, a
    missing key); `failed`, the other error answers (no provider could serve, timeouts, a client
    that left: 499).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.refused: Counter[int] = Counter()
        self.failed: Counter[int] = Counter()
        self.unknown_paths: Counter[tuple[str, str]] = Counter()  # (method, family)
        self._recent: deque[Refusal] = deque(maxlen=RECENT_REFUSALS)

    def observe(self, request_id: str, api: str, method: str, path: str, status: int, reason: str, message: str,
                refused: bool) -> None:
        """Count one error answer: `refused` when the proxy turned the request down itself."""
        (self.refused if refused else self.failed)[status] += 1
        self._recent.append(Refusal(self._clock(), request_id[:80], api, method[:16], path[:120], status, reason,
                                    message))

    def unknown_path(self, method: str, path: str) -> tuple[str, str]:
        """Count a request for a path the proxy does not serve; returns its (method, family)."""
        key = path_family(method, path)
        if key not in self.unknown_paths and len(self.unknown_paths) >= PATH_FAMILIES:
            key = (key[0], "other")
        self.unknown_paths[key] += 1
        return key

    def view(self) -> dict[str, Any]:
        """For /v1/status: counts by status (as strings, JSON's keys), unknown paths, the last refusals."""
        return {
            "refused": {str(status): count for status, count in sorted(self.refused.items())},
            "failed": {str(status): count for status, count in sorted(self.failed.items())},
            "unknown_paths": [{"method": method, "path": family, "count": count}
                              for (method, family), count in self.unknown_paths.most_common()],
            "recent": [refusal._asdict() for refusal in reversed(self._recent)],
        }
