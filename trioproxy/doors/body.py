"""What every door needs of a request body: a JSON object, or a 400 saying why not."""

from typing import Any

from ..errors import ProxyError
from ..jsoncodec import dump_json, load_json


def json_object_body(raw: bytes) -> dict[str, Any]:
    try:
        body = load_json(raw)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise ProxyError(400, f"Request body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise ProxyError(400, "Request body is nested too deeply.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ProxyError(400, "Request body must be a JSON object.", code="invalid_request_body")
    return body


def optional_bool(body: dict[str, Any], key: str) -> bool:
    """`body[key]` as a boolean; absent or null is false, anything else not a boolean is a 400."""
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ProxyError(400, f"`{key}` must be a boolean.", code="invalid_type", param=key)
    return value


SSE_CONTENT_TYPE = b"text/event-stream; charset=utf-8"


def sse_event(name: str | None, document: Any) -> bytes:
    """One server-sent event; `name` becomes its `event:` line when given."""
    head = b"event: " + name.encode() + b"\n" if name else b""
    return head + b"data: " + dump_json(document) + b"\n\n"


def sse_events(events: list[dict[str, Any]]) -> bytes:
    """Events named by their own `type` field, as Anthropic's and the Responses API's streams are."""
    return b"".join(sse_event(event["type"], event) for event in events)
