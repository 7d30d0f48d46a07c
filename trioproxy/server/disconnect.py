"""Noticing a client that leaves mid-request, so the proxy stops paying for an answer nobody reads."""

from collections.abc import Awaitable, Callable

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


async def cancel_on_disconnect(scope: Scope, receive: Receive, send: SentSoFar,
                                work: Callable[[Send], Awaitable[None]]) -> None:
    """Run `work(send)`, cancelling it the moment the client disconnects (Hypercorn never cancels us).

    Without this, a proxy keeps reading, and paying for, upstream tokens nobody will read. Our
    server says so through the scope's ClientGone; under another, a task waits on `receive`.
    """
    disconnected = False
    refused: ProxyError | None = None
    gone: ClientGone | None = scope.get("extensions", {}).get(CLIENT_GONE)
    with trio.CancelScope() as cancel_scope:

        def client_gone() -> None:
            nonlocal disconnected
            if not send.finished:  # the last body message is on its way: a disconnect now is the normal end
                disconnected = True
                cancel_scope.cancel()

        try:
            if gone is not None:
                gone.watch(client_gone)
                await work(send)
            else:
                await _watching_receive(receive, client_gone, lambda: work(send))
        except ProxyError as error:
            refused = error
        finally:
            if gone is not None:
                gone.watch(None)
    if disconnected:
        raise ClientDisconnected()
    if refused is not None:
        raise refused


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
