"""A lean HTTP/1.1 transport for httpx: h11 over Trio, a stack of idle connections per origin.

httpx's default transport (httpcore) rescans every pooled connection, with one poll() each, on
every request and again on every response close. With the 64 connections a busy proxy keeps,
that bookkeeping was a fifth of trioproxy's CPU (bench/profile.py). Here a request takes the
most recently used idle connection of its origin and checks only that one: O(1).

httpx stays the interface (requests, responses, timeouts, exceptions); only the wire work is
ours. httpx ignores HTTP(S)_PROXY for a client given its own transport, so a provider reached
through such a proxy is not served by this one (see upstream.ProviderClient).
"""

import math
import ssl
from collections.abc import AsyncIterator
from types import TracebackType

import h11
import httpx
import trio
from attrs import define

_READ_SIZE = 65536
_DEFAULT_PORTS = {b"http": 80, b"https": 443}

Origin = tuple[bytes, str, int]


@define(eq=False)
class _Connection:
    stream: trio.abc.Stream
    socket: trio.socket.SocketType  # the TCP socket under a TLS stream too: for the liveness check
    h11: h11.Connection
    idle_since: float = 0.0

    async def next_event(self, read_timeout: float | None) -> object:
        """The next h11 event, reading from the network as needed."""
        while (event := self.h11.next_event()) is h11.NEED_DATA:
            # move_on_after and a check, not fail_after: the same scope without a generator.
            with trio.move_on_after(_seconds(read_timeout)) as waited:
                self.h11.receive_data(await self.stream.receive_some(_READ_SIZE))
            if waited.cancelled_caught:
                raise trio.TooSlowError
        return event

    async def send_all(self, data: bytes, write_timeout: float | None) -> None:
        with trio.move_on_after(_seconds(write_timeout)) as waited:
            await self.stream.send_all(data)
        if waited.cancelled_caught:
            raise trio.TooSlowError

    def reusable(self) -> bool:
        """Both sides finished a keep-alive exchange: ready for the next request."""
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            return True
        return False


def _seconds(timeout: float | None) -> float:
    return math.inf if timeout is None else timeout


class _HttpxErrors:
    """Raise what httpx's own transport would: callers handle only httpx's exception types.

    A class rather than a generator-based context manager: it wraps every phase of every request.
    """

    __slots__ = ("_request", "_timeout", "_network")

    def __init__(self, request: httpx.Request, timeout: type[httpx.TimeoutException],
                 network: type[httpx.NetworkError]) -> None:
        self._request, self._timeout, self._network = request, timeout, network

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if exc is None:
            return
        request = self._request
        if isinstance(exc, trio.TooSlowError):
            raise self._timeout(str(exc) or self._timeout.__name__, request=request) from exc
        if isinstance(exc, (OSError, trio.BrokenResourceError, trio.ClosedResourceError)):
            raise self._network(str(exc) or type(exc).__name__, request=request) from exc
        if isinstance(exc, h11.RemoteProtocolError):
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        if isinstance(exc, h11.LocalProtocolError):
            raise httpx.LocalProtocolError(str(exc), request=request) from exc


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with keep-alive; no limit on open connections, up to `max_idle` idle per origin."""

    def __init__(self, *, max_idle: int = 64, keepalive_expiry: float = 5.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._idle: dict[Origin, list[_Connection]] = {}
        self._max_idle = max_idle
        self._keepalive_expiry = keepalive_expiry
        # httpx's default: certifi's CA bundle, or SSL_CERT_FILE / SSL_CERT_DIR when set.
        self._ssl_context = ssl_context or httpx.create_ssl_context()
        self._ssl_context.set_alpn_protocols(["http/1.1"])

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        url = request.url
        origin: Origin = (url.raw_scheme, url.host, url.port or _DEFAULT_PORTS.get(url.raw_scheme, 80))
        conn = await self._idle_connection(origin)
        if conn is None:
            with _HttpxErrors(request, httpx.ConnectTimeout, httpx.ConnectError):
                conn = await self._connect(origin, timeouts.get("connect"))
        try:
            with _HttpxErrors(request, httpx.WriteTimeout, httpx.WriteError):
                # Head and body in one write: trioproxy's bodies are in memory, and a write
                # per part would cost a system call each.
                outgoing = [conn.h11.send(h11.Request(method=request.method, target=url.raw_path,
                                                      headers=request.headers.raw))]
                async for chunk in request.stream:  # type: ignore[union-attr]
                    outgoing.append(conn.h11.send(h11.Data(data=chunk)))
                outgoing.append(conn.h11.send(h11.EndOfMessage()))
                await conn.send_all(b"".join(filter(None, outgoing)), timeouts.get("write"))
            with _HttpxErrors(request, httpx.ReadTimeout, httpx.ReadError):
                head = await conn.next_event(timeouts.get("read"))
                while isinstance(head, h11.InformationalResponse):
                    head = await conn.next_event(timeouts.get("read"))
        except BaseException:
            await trio.aclose_forcefully(conn.stream)
            raise
        if not isinstance(head, h11.Response):  # h11 raises for anything malformed; this is EOF
            await trio.aclose_forcefully(conn.stream)
            raise httpx.RemoteProtocolError("server closed the connection without answering", request=request)
        body = _ResponseBody(self, origin, conn, request, timeouts.get("read"))
        return httpx.Response(head.status_code, headers=head.headers.raw_items(), stream=body,
                              extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason})

    async def _idle_connection(self, origin: Origin) -> _Connection | None:
        """The most recently used idle connection that is still good, closing stale ones."""
        stack = self._idle.get(origin)
        now = trio.current_time()
        while stack:
            conn = stack.pop()
            # Readable while idle means the server closed it (or broke protocol): not reusable.
            if now - conn.idle_since <= self._keepalive_expiry and not conn.socket.is_readable():
                return conn
            await trio.aclose_forcefully(conn.stream)
        return None

    async def _connect(self, origin: Origin, connect_timeout: float | None) -> _Connection:
        scheme, host, port = origin
        with trio.fail_after(_seconds(connect_timeout)):
            tcp = await trio.open_tcp_stream(host, port)
            stream: trio.abc.Stream = tcp
            if scheme == b"https":
                tls = trio.SSLStream(tcp, self._ssl_context, server_hostname=host, https_compatible=True)
                try:
                    await tls.do_handshake()
                except BaseException:
                    await trio.aclose_forcefully(tcp)
                    raise
                stream = tls
        return _Connection(stream, tcp.socket, h11.Connection(h11.CLIENT))

    async def release(self, origin: Origin, conn: _Connection) -> None:
        """Keep a connection whose exchange completed for the next request, or close it."""
        stack = self._idle.setdefault(origin, [])
        if conn.reusable() and len(stack) < self._max_idle:
            conn.idle_since = trio.current_time()
            stack.append(conn)
        else:
            await trio.aclose_forcefully(conn.stream)

    async def aclose(self) -> None:
        idle = [conn for stack in self._idle.values() for conn in stack]
        self._idle.clear()
        for conn in idle:
            await trio.aclose_forcefully(conn.stream)


class _ResponseBody(httpx.AsyncByteStream):
    """The body as it arrives; the connection goes back to the pool once the body is complete."""

    def __init__(self, transport: LeanTransport, origin: Origin, conn: _Connection,
                 request: httpx.Request, read_timeout: float | None) -> None:
        self._transport = transport
        self._origin = origin
        self._conn: _Connection | None = conn
        self._request = request
        self._read_timeout = read_timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        with _HttpxErrors(self._request, httpx.ReadTimeout, httpx.ReadError):
            event = await conn.next_event(self._read_timeout)
            while isinstance(event, h11.Data):
                # h11 hands a chunked body over chunk by chunk (an SSE event is often a chunk):
                # the chunks one network read brought go on as one piece, so the events that
                # arrived together are relayed in one write, as Upstream.event_batches intends.
                parts = [event.data]
                while isinstance(event := conn.h11.next_event(), h11.Data):
                    parts.append(event.data)
                yield b"".join(parts)
                if event is h11.NEED_DATA:
                    event = await conn.next_event(self._read_timeout)
        if not isinstance(event, h11.EndOfMessage):
            raise httpx.RemoteProtocolError("connection closed before the body was complete",
                                            request=self._request)
        self._conn = None
        await self._transport.release(self._origin, conn)

    async def aclose(self) -> None:
        """Closed before the end of the body: the connection is mid-message, so it cannot be reused."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await trio.aclose_forcefully(conn.stream)
