"""What every door needs of a request body: a JSON object, or a 400 saying why not."""

from typing import Any

from ..errors import ProxyError
from ..jsoncodec import dump_json, load_json

# Real tool schemas nest about 10-30 levels (a request adds 5: body, tools, tool, function,
# parameters); 128 leaves room for the deepest of them. Re-encoding a document recurses once per
# level in msgspec and the json module, under Python's limit of 1,000 frames, part of which the
# server's own call stack takes: 128 levels stay far below it, where ~970 made the encoder fail
# after the quota was booked.
MAX_NESTING = 128
_CONTAINERS = (dict, list)


def json_object_body(raw: bytes) -> dict[str, Any]:
    """`raw` as a JSON object no deeper than MAX_NESTING; a 400 saying what is wrong otherwise."""
    try:
        body = load_json(raw)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise ProxyError(400, f"Request body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise _too_deep() from None
    if not isinstance(body, dict):
        raise ProxyError(400, "Request body must be a JSON object.", code="invalid_request_body")
    # Fewer brackets than the limit cannot nest deeper: most bodies skip the walk.
    if raw.count(b"{") + raw.count(b"[") > MAX_NESTING and nested_deeper_than(body, MAX_NESTING):
        raise _too_deep()
    return body


def nested_deeper_than(document: Any, limit: int) -> bool:
    """Whether `document` has containers (objects, arrays) more than `limit` levels deep.

    Level by level, without recursion: a document too deep to recurse into is the point.
    """
    level = [document] if isinstance(document, _CONTAINERS) else []
    for _ in range(limit):
        below: list[Any] = []
        for node in level:
            below += [child for child in (node.values() if type(node) is dict else node) if type(child) in _CONTAINERS]
        if not below:
            return False
        level = below
    return bool(level)


def _too_deep() -> ProxyError:
    return ProxyError(400, f"Request body is nested more than {MAX_NESTING} levels deep.", code="invalid_json")


def check_function_tools(tools: Any, param: str = "tools") -> None:
    """A 400 unless `tools` is an array of objects whose function tools name their function
    and give their parameters (if any) as a schema object, as every provider requires."""
    if not isinstance(tools, list) or not all(isinstance(tool, dict) for tool in tools):
        raise ProxyError(400, f"`{param}` must be an array of objects.", code="invalid_type", param=param)
    for tool in tools:
        function = tool.get("function", tool)  # Chat nests the function; Responses does not
        if tool.get("type") == "function" and not (
            isinstance(function, dict)
            and isinstance(function.get("name"), str)
            and isinstance(function.get("parameters", {}), dict)
        ):
            raise ProxyError(400, f"Every function tool in `{param}` needs a `name` and, if it has `parameters`, "
                             "a JSON schema object.", code="invalid_type", param=param)


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
