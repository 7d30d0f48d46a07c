"""HTTP edges the server passes to the app but the app should not serve as they are.

The HTTP layer (`http11.py`, as h11 did) lets a request with both Content-Length and
Transfer-Encoding through, framed by Transfer-Encoding; RFC 9112 (6.3) calls that a possible
smuggling attempt that must not be kept alive, so it gets a 400 and the connection closes
(`connection: close` ends it after the answer, whatever bytes follow). An absolute-form target
(`GET http://host/v1/models`, as sent to a proxy) reaches the app with the whole URL as its
path; the server must accept it (RFC 9112, 3.2.2), so it is reduced to its path here.
The HTTP layer bounds a request head only while it is still arriving (h11_max_incomplete_size,
16 KiB): a head that arrives whole in one read of up to 64 KiB passes. The bound is kept here.
"""

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import trio

from ..errors import ProxyError
from ..jsoncodec import dump_json
from .asgi import Scope, header
from .door_choice import error_door
from .request_id import request_id_from
from .request_log import log_edge_refusal

MAX_HEAD_BYTES = 16 * 1024  # request line and headers, as Hypercorn's h11_max_incomplete_size

def origin_form(scope: Scope) -> Scope:
    """The scope with an absolute-form target (`http://host/path?q`) turned into `/path?q`."""
    raw = scope.get("raw_path") or b""
    if not raw.lower().startswith((b"http://", b"https://")):
        return scope
    path = urlsplit(raw.decode("latin-1")).path or "/"
    return {**scope, "path": unquote(path), "raw_path": path.encode("latin-1")}


class HttpEdges:
    """ASGI middleware in front of the proxy: refuses ambiguous framing, accepts absolute-form targets."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = len(scope["raw_path"]) + len(scope["query_string"])
        length = chunked = False
        for key, value in scope["headers"]:  # one pass for both checks: every request takes it
            head += len(key) + len(value) + 4
            if key == b"content-length":
                length = True
            elif key == b"transfer-encoding":
                chunked = True
        if length and chunked:
            await self._refuse(scope, send, ProxyError(
                400, "A request may not carry both Content-Length and Transfer-Encoding (RFC 9112, 6.3).",
                code="ambiguous_framing"), "both Content-Length and Transfer-Encoding")
            return
        if head > MAX_HEAD_BYTES:
            await self._refuse(scope, send, ProxyError(
                431, f"The request line and headers are larger than {MAX_HEAD_BYTES} bytes.",
                code="request_header_fields_too_large"), f"a request head of {head} bytes")
            return
        await self.app(origin_form(scope), receive, send)

    @staticmethod
    async def _refuse(scope: Scope, send: Any, error: ProxyError, reason: str) -> None:
        """Answer `error` in the shape of the door the path belongs to and close the connection:
        nothing after it is served."""
        request_id = request_id_from(header(scope, b"x-request-id"))
        log_edge_refusal(request_id, error, reason)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        google_key = header(scope, b"x-goog-api-key") is not None or "key" in query
        body = dump_json(error_door(origin_form(scope)["path"], google_key).body(error))
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            (b"x-request-id", request_id.encode()),
        ]
        try:
            await send({"type": "http.response.start", "status": error.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        except (trio.BusyResourceError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client is gone already
