"""Provider error bodies (flat, FastAPI `detail`, wrapped in `error`, or none) as neutral errors.

An error can also come inside a stream that began with 200 (an `error` event, a Responses
`response.failed`); it has no status line, so the status it stands for is read from its code
or type, through the one table below, and it is then handled like that status.
"""

from typing import Any

from ..errors import ProxyError, default_type
from ..jsoncodec import load_json

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


def error_from_upstream(status: int, raw: bytes, provider: str) -> ProxyError:
    """The provider's message, type, code and param, whatever shape its body had."""
    try:
        parsed = load_json(raw) if raw else None
    except (ValueError, RecursionError):
        parsed = None
    message, type_, code, param = None, None, None, None
    if isinstance(parsed, dict):
        inner = _inner(parsed)
        message = inner.get("message") or inner.get("detail") or inner.get("error")
        type_, code, param = inner.get("type"), _code(inner.get("code")), inner.get("param")
    if not isinstance(message, str):
        message = raw[:500].decode("utf-8", "replace").strip() or f"{provider} answered HTTP {status}"
    return ProxyError(
        status,
        message,
        type=type_ if isinstance(type_, str) else default_type(status),
        code=code,
        param=param if isinstance(param, str) else None,
    )


def carried_error(document: dict[str, Any]) -> bool:
    """Whether a 200's JSON document (a body or a stream event) is an error instead of an answer."""
    return (document.get("error") is not None or document.get("detail") is not None
            or document.get("type") == "response.failed")


def status_of_error(raw: bytes) -> int:
    """The status an error that came without one (inside a 200) stands for: a status-like number
    it names, else its code or type looked up in STATUS_OF_CODE, else UNKNOWN_ERROR_STATUS."""
    try:
        parsed = load_json(raw)
    except (ValueError, RecursionError):
        return UNKNOWN_ERROR_STATUS
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
