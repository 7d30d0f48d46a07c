"""ASGI plumbing the server's handlers share: the callable types, request headers, whole responses."""

from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# A scope extension our server (connections.py) adds to every HTTP/1.1 request: a ClientGone.
CLIENT_GONE = "trioproxy.client_gone"


class ClientGone:
    """Tells the app the moment the server would queue `http.disconnect` (the client left, or the
    response is complete), in the server's task, so an app need not keep a task waiting on
    `receive` for it. It remembers the moment: a client may leave before the app is watching."""

    __slots__ = ("_callback", "gone")

    def __init__(self) -> None:
        self._callback: Callable[[], None] | None = None
        self.gone = False

    def watch(self, callback: Callable[[], None] | None) -> None:
        """Call `callback` when the client is gone, at once if it is gone already; None stops watching."""
        self._callback = callback
        if callback is not None and self.gone:
            callback()

    def notify(self) -> None:
        """The server's side: the client is gone (or the response is complete)."""
        self.gone = True
        if self._callback is not None:
            self._callback()


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of request header `name` (lower case), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def encode_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(key.encode(), value.encode()) for key, value in headers.items()]


async def send_response(send: Send, status: int, body: bytes, content_type: str,
                        headers: dict[str, str] | None = None) -> None:
    """A whole response in one body message."""
    encoded = [(b"content-type", content_type.encode()), *encode_headers(headers or {})]
    await send({"type": "http.response.start", "status": status, "headers": encoded})
    await send({"type": "http.response.body", "body": body})
