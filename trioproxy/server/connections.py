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
3. **Bytes after `connection: close`.** Once the answer says `connection: close`, h11 treats any
   further byte from the client as a protocol error, and Hypercorn then closes the connection at
   once, between the answer's head and its body. Such bytes are never served, so they are
   dropped instead and the answer completes.

Hypercorn offers no hook for its connection or protocol class, so `install_into_hypercorn` puts
these in its modules, for the whole process: any other Hypercorn server in it gets them too, and
with a plain Config (no `client_stall_seconds`) its connections have no stall bound, as before.
They override private methods of Hypercorn's TCPServer, so pyproject.toml bounds its version.
"""

import socket as _socket
from typing import Any

import h11
import trio
from hypercorn import protocol as hypercorn_protocol
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Event, RawData
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio import run as hypercorn_run
from hypercorn.trio import serve as hypercorn_serve
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer

_CLOSING = (h11.MUST_CLOSE, h11.CLOSED, h11.ERROR)
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

    async def _read_data(self) -> None:
        tcp = getattr(self.stream, "transport_stream", self.stream)  # under TLS, the TCP stream
        stall = getattr(self.config, "client_stall_seconds", None)  # None: another server's plain Config
        if stall is not None and hasattr(_socket, "TCP_USER_TIMEOUT") and isinstance(tcp, trio.SocketStream):  # Linux
            tcp.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_USER_TIMEOUT, int(stall * 1000))
        self._reader, self._read_done = trio.lowlevel.current_task(), trio.Event()
        try:
            await super()._read_data()
        finally:
            self._reader = None
            self._read_done.set()

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


class ProxyH11Protocol(H11Protocol):
    """Hypercorn's HTTP/1.1 protocol, dropping what a client sends once the connection is closing
    (after we said `connection: close`, or a protocol error): none of it will be served."""

    async def handle(self, event: Event) -> None:
        if (isinstance(event, RawData) and event.data and isinstance(self.connection, h11.Connection)
                and (self.connection.their_state in _CLOSING or self.connection.our_state in _CLOSING)):
            return
        await super().handle(event)


def install_into_hypercorn() -> None:
    """Make Hypercorn's Trio server build ProxyConnection and ProxyH11Protocol (idempotent: the
    classes are put in place once and stay, since servers already running look them up too)."""
    if hypercorn_run.TCPServer is not ProxyConnection:
        hypercorn_run.TCPServer = ProxyConnection  # type: ignore[misc]
    if hypercorn_protocol.H11Protocol is not ProxyH11Protocol:
        hypercorn_protocol.H11Protocol = ProxyH11Protocol  # type: ignore[misc]


async def serve(app: Any, config: ServerConfig, *, shutdown_trigger: Any,
                task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """`hypercorn.trio.serve`, every connection a ProxyConnection."""
    install_into_hypercorn()
    await hypercorn_serve(app, config, shutdown_trigger=shutdown_trigger, task_status=task_status)
