"""Every way a provider fails, as one neutral fact: which provider, what kind, what it said.

A transport exception, an error status and its body, a 200 whose body or stream event is an
error: each becomes one `UpstreamFailure` here, through the tables below (as httpcore maps
exceptions), its texts scrubbed. Bodies come flat, as FastAPI's `detail`, wrapped in `error`, or
not at all. An error inside a stream that began with 200 has no status line, so the status it
stands for is read from its code or type (STATUS_OF_CODE) and it is then classified like that
status. Nothing here decides what a client is told, whether another provider is tried or a key
cools down: routing's table does, by `kind`.
"""

import enum
import re
from collections.abc import Mapping
from typing import Any

import httpx

from ..jsoncodec import load_json
from ..secrets import Sanitizer
from .ratelimit import retry_after, seconds_header


class Kind(enum.Enum):
    """What went wrong, in the words routing decides by."""

    TIMEOUT = "timeout"  # the provider did not answer (or go on) in time
    CONNECTION = "connection"  # could not be reached, or dropped the connection
    PROTOCOL = "protocol"  # answered something that is not a valid answer
    RATE_LIMITED = "rate_limited"  # 429: quota spent or too busy for this key
    OVERLOADED = "overloaded"  # 503: busy for everyone
    MODEL_MISSING = "model_missing"  # the model id does not exist there (404 or 503 saying so)
    KEY_REFUSED = "key_refused"  # 401 or 403: trioproxy's key for it was refused
    NOT_HERE = "not_here"  # a refusal peculiar to this provider: another may well accept the request
    BAD_REQUEST = "bad_request"  # the request itself is wrong: any provider would refuse it
    PROVIDER_ERROR = "provider_error"  # any other 5xx: the provider's own fault


# Transport exceptions, most specific first (httpcore's way of mapping them).
KIND_OF_EXCEPTION: tuple[tuple[type[httpx.HTTPError], Kind], ...] = (
    (httpx.TimeoutException, Kind.TIMEOUT),
    (httpx.HTTPError, Kind.CONNECTION),
)
# Statuses with a kind of their own; other 4xx are BAD_REQUEST, other 5xx PROVIDER_ERROR.
KIND_OF_STATUS = {
    401: Kind.KEY_REFUSED, 403: Kind.KEY_REFUSED, 429: Kind.RATE_LIMITED, 503: Kind.OVERLOADED,
    402: Kind.NOT_HERE, 404: Kind.NOT_HERE, 408: Kind.NOT_HERE, 409: Kind.NOT_HERE,
}
# A 400 with these codes is the provider's peculiarity rather than the client's fault.
NOT_HERE_CODES = frozenset({"wrong_api_format", "context_length_exceeded"})

# The HTTP status a provider's error code or type stands for, when no status line says it.
STATUS_OF_CODE = {
    # quota and rate limits: a 429, whose cooldown rules apply
    "rate_limit_error": 429, "rate_limit_exceeded": 429, "too_many_requests_error": 429,
    "too_many_tokens_error": 429, "request_quota_exceeded": 429, "token_quota_exceeded": 429,
    "insufficient_quota": 429, "queue_exceeded": 429,
    "1302": 429, "1303": 429, "1304": 429, "1308": 429,  # Z.AI: concurrency, frequency, daily, 5-hour limits
    # overload: a 503
    "overloaded_error": 503, "service_unavailable": 503, "1305": 503,
    # the request itself: a 400
    "context_length_exceeded": 400, "invalid_request_error": 400,
    # the provider's own fault: a 500
    "server_error": 500, "internal_error": 500, "internal_server_error": 500, "api_error": 500,
}
UNKNOWN_ERROR_STATUS = 502  # an error event that names nothing we know

# How providers say a model id does not exist: Cerebras's 404 "Model X does not exist or you do
# not have access to it" (and a 503 for retired ids), vLLM's "model not found: X".
_MODEL_MISSING = re.compile(r"model\b.*\b(does not exist|not found|not exist|no longer available|retired)"
                            r"|(unknown|no such|invalid) model", re.IGNORECASE)
# Codes and messages that say "busy right now" rather than "your quota is spent".
_CAPACITY_CODES = frozenset({"queue_exceeded"})
_CAPACITY_WORDS = ("capacity", "high traffic", "no instances", "try again soon")
# The reset header that tells when a refused window has room again, when Retry-After does not.
_RESET_HEADER = {
    "tpm": "x-ratelimit-reset-tokens-minute",
    "rpd": "x-ratelimit-reset-requests-day",
    "tpd": "x-ratelimit-reset-requests-day",  # Cerebras's only daily reset header
}
_NO_HEADERS: Mapping[str, str] = {}


class UpstreamFailure(Exception):
    """A provider did not deliver: neutral facts, every text scrubbed, in no client's shape.

    `status` is the status line's (or the one an error event stands for), None for transport
    and protocol failures. `window` says which limit a 429 or 503 refused ("rpm", "tpm", "utpm",
    "rpd", "tpd", "capacity", "unknown"), "" otherwise; `retry_after` the seconds the provider
    named (Retry-After, else the refused window's reset header); `headers` are the response's.
    """

    def __init__(self, provider: str, kind: Kind, message: str, status: int | None = None, *,
                 type: str | None = None, code: str | None = None, param: str | None = None,
                 window: str = "", retry_after: float | None = None,
                 headers: Mapping[str, str] = _NO_HEADERS) -> None:
        super().__init__(f"{provider}: {kind.value} {status or ''} {message}")
        self.provider = provider
        self.kind = kind
        self.message = message
        self.status = status
        self.type = type
        self.code = code
        self.param = param
        self.window = window
        self.retry_after = retry_after
        self.headers = headers

    @property
    def label(self) -> str:
        """Short reason for logs: the status, the error code, or the kind."""
        if self.status is not None:
            return f"{self.status} {self.code}" if self.code else str(self.status)
        return self.kind.value


def transport_failure(provider: str, exc: httpx.HTTPError) -> UpstreamFailure:
    """An httpx exception as its failure."""
    kind = next(kind for cls, kind in KIND_OF_EXCEPTION if isinstance(exc, cls))
    if kind is Kind.TIMEOUT:
        return UpstreamFailure(provider, kind, f"{provider} did not answer in time.")
    return UpstreamFailure(provider, kind, f"{provider} could not be reached or dropped the connection.")


def timeout_failure(provider: str, seconds: float, what: str) -> UpstreamFailure:
    """A deadline of ours ran out: the provider did not `what` within `seconds`."""
    return UpstreamFailure(provider, Kind.TIMEOUT, f"{provider} did not {what} within {seconds:g} s.")


def protocol_failure(provider: str, what: str) -> UpstreamFailure:
    """The provider answered something that is not a valid answer: `what` is wrong with it."""
    return UpstreamFailure(provider, Kind.PROTOCOL, f"{provider} sent an invalid response: {what}.")


def status_failure(provider: str, status: int, raw: bytes, scrub: Sanitizer,
                   headers: Mapping[str, str] = _NO_HEADERS) -> UpstreamFailure:
    """An error status and its body (at most MAX_ERROR_BODY_BYTES of it) as its failure: the
    provider's message, type, code and param, whatever shape its body had, scrubbed."""
    return _failure(provider, status, raw, _parsed(raw), scrub, headers)


def _failure(provider: str, status: int, raw: bytes, parsed: Any, scrub: Sanitizer,
             headers: Mapping[str, str] = _NO_HEADERS) -> UpstreamFailure:
    """`status_failure` of a body already parsed (`parsed`: None when it is not JSON)."""
    message, type_, code, param = None, None, None, None
    if isinstance(parsed, dict):
        inner = _inner(parsed)
        message = inner.get("message") or inner.get("detail") or inner.get("error")
        type_, code, param = inner.get("type"), _code(inner.get("code")), inner.get("param")
    if not isinstance(message, str):
        message = raw[:500].decode("utf-8", "replace").strip() or f"{provider} answered HTTP {status}"
    message = scrub.text(message)
    code = scrub.text(code, limit=100) if code is not None else None
    type_ = scrub.text(type_, limit=100) if isinstance(type_, str) else None
    param = scrub.text(param, limit=100) if isinstance(param, str) else None
    kind = _kind_of_status(status, code, message)
    window = _window(status, code, message) if kind in (Kind.RATE_LIMITED, Kind.OVERLOADED) else ""
    return UpstreamFailure(provider, kind, message, status, type=type_, code=code, param=param, window=window,
                           retry_after=_named_wait(headers, window), headers=headers)


def carried_error(document: dict[str, Any]) -> bool:
    """Whether a 200's JSON document (a body or a stream event) is an error instead of an answer."""
    return (document.get("error") is not None or document.get("detail") is not None
            or document.get("type") == "response.failed")


def carried_failure(provider: str, raw: bytes, scrub: Sanitizer) -> UpstreamFailure:
    """An error a 200 carried (its body or a stream event) as the failure of the status it stands for."""
    parsed = _parsed(raw)
    return _failure(provider, _status_named(parsed), raw, parsed, scrub)


def status_of_error(raw: bytes) -> int:
    """The status an error that came without one (inside a 200) stands for: a status-like number
    it names, else its code or type looked up in STATUS_OF_CODE, else UNKNOWN_ERROR_STATUS."""
    return _status_named(_parsed(raw))


def _status_named(parsed: Any) -> int:
    inner = _inner(parsed) if isinstance(parsed, dict) else {}
    for name in ("status", "status_code", "code"):
        value = inner.get(name)
        if type(value) is int and 400 <= value <= 599:
            return value
    for name in ("code", "type"):
        status = STATUS_OF_CODE.get(_code(inner.get(name)) or "")
        if status is not None:
            return status
    return UNKNOWN_ERROR_STATUS


def _kind_of_status(status: int, code: str | None, message: str) -> Kind:
    if status in (404, 503) and (code == "model_not_found" or _MODEL_MISSING.search(message)):
        return Kind.MODEL_MISSING
    kind = KIND_OF_STATUS.get(status)
    if kind is not None:
        return kind
    if status >= 500:
        return Kind.PROVIDER_ERROR
    return Kind.NOT_HERE if status == 400 and code in NOT_HERE_CODES else Kind.BAD_REQUEST


def _window(status: int, code: str | None, message: str) -> str:
    """Which limit refused: per minute, per day, or capacity (Cerebras's `param` is "quota" for all)."""
    message = message.lower()
    if code in _CAPACITY_CODES or status == 503 or any(word in message for word in _CAPACITY_WORDS):
        return "capacity"
    per_day = "per day" in message
    if "uncached" in message and not per_day:
        return "utpm"
    if "token" in message:
        return "tpd" if per_day else "tpm"
    if "request" in message:
        return "rpd" if per_day else "rpm"
    return "unknown"


def _named_wait(headers: Mapping[str, str], window: str) -> float | None:
    """The wait the provider named for a refusal: Retry-After, else the window's reset header."""
    if not window:
        return None
    named = retry_after(headers)
    if named is None and window in _RESET_HEADER:
        named = seconds_header(headers, _RESET_HEADER[window])
    return named


def _parsed(raw: bytes) -> Any:
    """`raw` as JSON; None when it is empty or not JSON."""
    try:
        return load_json(raw) if raw else None
    except (ValueError, RecursionError):
        return None


def _inner(parsed: dict[str, Any]) -> dict[str, Any]:
    """The object holding the error's fields: `error`, a failed response's `error`, or the body."""
    if parsed.get("type") == "response.failed" and isinstance(parsed.get("response"), dict):
        parsed = parsed["response"]
    return parsed["error"] if isinstance(parsed.get("error"), dict) else parsed


def _code(value: Any) -> str | None:
    """A code as text: providers send strings (`token_quota_exceeded`) or numbers (Z.AI's 1302)."""
    if isinstance(value, str):
        return value
    if type(value) is int:
        return str(value)
    return None
