"""HTTP edges the server passes to the app but the app should not serve as they are.

Hypercorn (through h11) lets a request with both Content-Length and Transfer-Encoding through,
framed by Transfer-Encoding; RFC 9112 (6.3) calls that a possible smuggling attempt that must
not be kept alive, so it gets a 400 and the connection closes (`connection: close` makes h11
end it after the answer, whatever bytes follow). An absolute-form target
(`GET http://host/v1/models`, as sent to a proxy) reaches the app with the whole URL as its
path; the server must accept it (RFC 9112, 3.2.2), so it is reduced to its path here.
"""

import logging
from typing import Any
from urllib.parse import unquote, urlsplit

import trio

from ..doors.chat import error_body
from ..errors import ProxyError
from ..jsoncodec import dump_json
from .asgi import Scope, header
from .request_id import request_id_from

log = logging.getLogger("trioproxy.request")

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
        if header(scope, b"content-length") is not None and header(scope, b"transfer-encoding") is not None:
            await self._refuse_ambiguous_framing(scope, send)
            return
        await self.app(origin_form(scope), receive, send)

    @staticmethod
    async def _refuse_ambiguous_framing(scope: Scope, send: Any) -> None:
        request_id = request_id_from(header(scope, b"x-request-id"))
        error = ProxyError(
            400,
            "A request may not carry both Content-Length and Transfer-Encoding (RFC 9112, 6.3).",
            code="ambiguous_framing",
        )
        log.info("request %s refused: status=400 reason='both Content-Length and Transfer-Encoding'", request_id)
        body = dump_json(error_body(error))
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            (b"x-request-id", request_id.encode()),
        ]
        try:
            await send({"type": "http.response.start", "status": 400, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        except (trio.BusyResourceError, trio.BrokenResourceError, trio.ClosedResourceError):
            # Bytes pipelined after the request make h11 give up on the connection once our
            # `connection: close` is out, and Hypercorn closes it while the body is on its way.
            pass
