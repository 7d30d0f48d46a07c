"""Noticing a client that leaves mid-request, so the proxy stops paying for an answer nobody reads."""

import math
from collections.abc import Awaitable, Callable
from types import TracebackType

import trio

from ..errors import ProxyError
from .asgi import CLIENT_GONE, ClientGone, Message, Receive, Scope, Send


class ClientDisconnected(Exception):
    """The client closed its connection before we were done."""


class SentSoFar:
    """A `send` that notes whether the response has started and whether its last body message
    is on its way (one wrapper for both: each layer costs every message a coroutine call)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False
        self.finished = False

    async def __call__(self, message: Message) -> None:
        self.started = True
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.finished = True
        await self._send(message)


class RequestScope:
    """One cancel scope for a request, in two phases: reading its body, bounded to
    `body_deadline` (until `body_read()`), then `serve`, cancelled the moment the client
    disconnects (Hypercorn never cancels us). One scope whose deadline moves: a scope's enter
    and exit are a good part of what Trio costs a request.

    Leaving the block raises ClientDisconnected when the client left (a ProxyError raised
    meanwhile gives way to it), and nothing else of its own: a body that ran out of time ends
    the block early with `body_timed_out` set, the caller's to answer.
    """

    __slots__ = ("_scope", "_send", "_gone", "_cancel", "_body_read", "_disconnected")

    def __init__(self, scope: Scope, send: SentSoFar, body_deadline: float) -> None:
        self._scope = scope
        self._send = send
        self._gone: ClientGone | None = scope.get("extensions", {}).get(CLIENT_GONE)
        self._cancel = trio.CancelScope(deadline=body_deadline)
        self._body_read = False
        self._disconnected = False

    @property
    def body_deadline(self) -> float:
        return self._cancel.deadline

    @property
    def body_timed_out(self) -> bool:
        """The body did not arrive by its deadline."""
        return self._cancel.cancelled_caught and not self._body_read and not self._disconnected

    def __enter__(self) -> "RequestScope":
        self._cancel.__enter__()
        return self

    def body_read(self) -> None:
        """The body is in: from here only the client's leaving ends the request early."""
        self._body_read = True
        self._cancel.deadline = math.inf

    def _client_gone(self) -> None:
        if not self._send.finished:  # the last body message is on its way: a disconnect now is the normal end
            self._disconnected = True
            self._cancel.cancel()

    async def serve(self, receive: Receive, work: Callable[[Send], Awaitable[None]]) -> None:
        """Run `work(send)`, cancelled the moment the client disconnects. Without this, a proxy
        keeps reading, and paying for, upstream tokens nobody will read. Our server says so
        through the scope's ClientGone; under another, a task waits on `receive`."""
        if self._gone is not None:
            self._gone.watch(self._client_gone)
            await work(self._send)
        else:
            await _watching_receive(receive, self._client_gone, lambda: work(self._send))

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> bool:
        if self._gone is not None:
            self._gone.watch(None)
        handled = self._cancel.__exit__(kind, error, traceback)
        if self._disconnected and (error is None or handled or isinstance(error, ProxyError)):
            raise ClientDisconnected()
        return handled


async def _watching_receive(receive: Receive, client_gone: Callable[[], None],
                            work: Callable[[], Awaitable[None]]) -> None:
    """Run `work()` while a task waits on `receive` for `http.disconnect` and then calls `client_gone`."""

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        client_gone()

    refused: ProxyError | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        try:
            await work()
        except ProxyError as error:
            refused = error  # raised below, unwrapped: a nursery would put it in an ExceptionGroup
        nursery.cancel_scope.cancel()
    if refused is not None:
        raise refused
