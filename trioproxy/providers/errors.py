"""Provider error bodies (flat, FastAPI `detail`, wrapped in `error`, or none) as neutral errors."""

from ..errors import ProxyError, default_type
from ..jsoncodec import load_json


def error_from_upstream(status: int, raw: bytes, provider: str) -> ProxyError:
    """The provider's message, type, code and param, whatever shape its body had."""
    try:
        parsed = load_json(raw) if raw else None
    except (ValueError, RecursionError):
        parsed = None
    message, type_, code, param = None, None, None, None
    if isinstance(parsed, dict):
        inner = parsed.get("error") if isinstance(parsed.get("error"), dict) else parsed
        message = inner.get("message") or inner.get("detail") or inner.get("error")
        type_, code, param = inner.get("type"), inner.get("code"), inner.get("param")
    if not isinstance(message, str):
        message = raw[:500].decode("utf-8", "replace").strip() or f"{provider} answered HTTP {status}"
    return ProxyError(
        status,
        message,
        type=type_ if isinstance(type_, str) else default_type(status),
        code=code if isinstance(code, str) else None,
        param=param if isinstance(param, str) else None,
    )
