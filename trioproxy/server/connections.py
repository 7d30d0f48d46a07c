"""Hypercorn's Trio connection (its TCPServer) with two changes a proxy needs, and `serve` using it.

1. **A client that stops reading.** Hypercorn writes every response chunk with `send_all` in a
   shielded scope, so once the client's socket buffers are full the application's `send` waits
   for as long as the client stays connected, and no cancel reaches it; the provider's stream
   stays open behind it, spending tokens nobody reads. Here each connection's socket gets
   TCP_USER_TIMEOUT = `client_stall_seconds`: bytes that stay unacknowledged that long (a
   client that stopped reading keeps its receive window shut) make the kernel abort the
   connection, the write fails, and Hypercorn tells the application `http.disconnect`, which
   cancels the provider's stream at once and settles the quota. It costs one system call per
   connection; a deadline on every write cost streams about 5 % of their CPU (bench/ab.py).
2. **Lingering close.** Closing a socket that still holds unread input makes the kernel send a
   reset, which destroys an answer still on its way to the client (a 400 for ambiguous framing
   with a pipelined request behind it). Here a close shuts the write side down first, then reads
   and discards input until the client closes too or LINGER_SECONDS pass, as web servers do.

It also does Hypercorn's per-request bookkeeping with fewer trips through Trio's scheduler (the
same behaviour): the keep-alive timer is started with `start_soon` and cancelled without a lock,
and a write takes its connection's lock without a checkpoint when nobody holds it. HTTP/1.1 is
spoken by `http11.Http11Protocol` (on httptools) instead of Hypercorn's h11 protocol.

Hypercorn offers no hook for its connection or protocol class, so `install_into_hypercorn` puts
these in its modules, for the whole process: any other Hypercorn server in it gets them too, and
with a plain Config (no `client_stall_seconds`) its connections have no stall bound, as before.
They override private methods of Hypercorn's TCPServer, so pyproject.toml bounds its version.
"""

import functools
import socket as _socket
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn import protocol as hypercorn_protocol
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, Event, RawData
from hypercorn.trio import run as hypercorn_run
from hypercorn.trio import serve as hypercorn_serve
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer

from .http11 import Http11Protocol

LINGER_SECONDS = 2.0  # how long a closing connection reads on for the client's own close
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError)


class ServerConfig(HypercornConfig):
    """Hypercorn's settings plus how long bytes sent to a client may wait for it to read them."""

    client_stall_seconds: float = 60.0


class ProxyConnection(TCPServer):
    """One client connection: Hypercorn's, bounded in how long a client may leave bytes unread,
    with a lingering close."""

    config: ServerConfig | HypercornConfig  # another Hypercorn server's plain Config too
    _reader: trio.lowlevel.Task | None = None  # the task in `_read_data`, while it reads
    _read_done: trio.Event

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.idle_task = _IdleTask()  # type: ignore[assignment]

    async def protocol_send(self, event: Event) -> None:
        """Hypercorn's, but a free send lock is taken without a trip through the scheduler (the
        write itself is the checkpoint), and nothing is written for no bytes (h11's end of a
        body of known length): each cost every response a pass of the scheduler."""
        if not isinstance(event, RawData):
            await super().protocol_send(event)
            return
        await trio.lowlevel.checkpoint_if_cancelled()
        if not event.data:  # the end of a body of known length: nothing to write
            return
        try:
            self.send_lock.acquire_nowait()
        except trio.WouldBlock:
            await self.send_lock.acquire()
        try:
            try:
                with trio.CancelScope(shield=True):
                    await self.stream.send_all(event.data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await self.protocol.handle(Closed())
        finally:
            self.send_lock.release()

    async def _read_data(self) -> None:
        tcp = getattr(self.stream, "transport_stream", self.stream)  # under TLS, the TCP stream
        stall = getattr(self.config, "client_stall_seconds", None)  # None: another server's plain Config
        if stall is not None and hasattr(_socket, "TCP_USER_TIMEOUT") and isinstance(tcp, trio.SocketStream):  # Linux
            tcp.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_USER_TIMEOUT, int(stall * 1000))
        self._reader, self._read_done = trio.lowlevel.current_task(), trio.Event()
        try:
            await self._read_until_closed()
        finally:
            self._reader = None
            self._read_done.set()

    async def _read_until_closed(self) -> None:
        """Hypercorn's read loop, without a cancel scope per read when no read_timeout is set
        (the default: a scope with no deadline bounded nothing, at a generator's cost per read)."""
        timeout = self.config.read_timeout or None  # as Hypercorn reads it: 0 is none
        while True:
            try:
                if timeout is None:
                    data = await self.stream.receive_some(MAX_RECV)
                else:
                    with trio.fail_after(timeout):
                        data = await self.stream.receive_some(MAX_RECV)
            except (trio.ClosedResourceError, trio.BrokenResourceError, trio.TooSlowError):
                break
            await self.protocol.handle(RawData(bytes(data)))
            if data == b"":
                break
        await self.protocol.handle(Closed())

    async def _close(self) -> None:
        try:
            await self.stream.send_eof()
        except (*_GONE, AttributeError):  # gone already, or TLS (which has no half-close)
            pass
        else:
            # Read on until the client closes (or LINGER_SECONDS pass), so our answer is not
            # reset away. Only one task may read a socket: the reading task, if another runs it.
            with trio.move_on_after(LINGER_SECONDS):
                if self._reader is None or self._reader is trio.lowlevel.current_task():
                    await self._discard_input()
                else:
                    await self._read_done.wait()
        await self.stream.aclose()

    async def _discard_input(self) -> None:
        try:
            while await self.stream.receive_some(MAX_RECV):
                pass
        except _GONE:  # the client reset it
            pass


class _IdleTask:
    """Hypercorn's TrioSingleTask (the keep-alive timer, restarted whenever the connection turns
    idle and stopped when a request arrives) without its lock and its `nursery.start` handshake:
    three trips through the scheduler per request. Neither method checkpoints, so no lock is
    needed; the cancel scope exists before its task runs, so a stop at once still stops it."""

    def __init__(self) -> None:
        self._scope: trio.CancelScope | None = None

    async def restart(self, task_group: Any, action: Callable[[], Awaitable[None]]) -> None:
        if self._scope is not None:
            self._scope.cancel()
        self._scope = scope = trio.CancelScope()

        @functools.wraps(action)  # the task is named after the action, as Hypercorn's is
        async def in_scope() -> None:
            with scope:
                await action()

        task_group.spawn(in_scope)

    async def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
        self._scope = None


def install_into_hypercorn() -> None:
    """Make Hypercorn's Trio server build ProxyConnection and Http11Protocol (idempotent: the
    classes are put in place once and stay, since servers already running look them up too)."""
    if hypercorn_run.TCPServer is not ProxyConnection:
        hypercorn_run.TCPServer = ProxyConnection  # type: ignore[misc]
    if hypercorn_protocol.H11Protocol is not Http11Protocol:
        hypercorn_protocol.H11Protocol = Http11Protocol  # type: ignore[misc]


async def serve(app: Any, config: ServerConfig, *, shutdown_trigger: Any,
                task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """`hypercorn.trio.serve`, every connection a ProxyConnection."""
    install_into_hypercorn()
    await hypercorn_serve(app, config, shutdown_trigger=shutdown_trigger, task_status=task_status)
