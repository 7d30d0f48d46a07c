"""A lean HTTP/1.1 transport for httpx: llhttp over Trio, a stack of idle connections per origin.

httpx's default transport (httpcore) rescans every pooled connection, with one poll() each, on
every request and again on every response close. With the 64 connections a busy proxy keeps,
that bookkeeping was a fifth of trioproxy's CPU (bench/profile.py). Here a request takes the
most recently used idle connection of its origin and checks only that one: O(1).

Responses are parsed by httptools (llhttp, the C parser uvicorn uses), one parser per
connection, whose callbacks fill in the response being read; requests are written by hand, head
and body in one write. On plain TCP the socket is tried before Trio's stream: most writes and
many reads need no wait, and then cost no cancel scope and no pass through the scheduler.

httpx stays the interface (requests, responses, timeouts, exceptions); only the wire work is
ours. httpx ignores HTTP(S)_PROXY for a client given its own transport, so a provider reached
through such a proxy is not served by this one (see upstream.ProviderClient).
"""

import math
import socket
import ssl
from collections.abc import AsyncIterator
from types import TracebackType

import httptools
import httpx
import trio

_READ_SIZE = 65536
_MAX_HEAD = 16384  # bytes of a response head (or of trailers) before it is refused (h11's bound)
_DEFAULT_PORTS = {b"http": 80, b"https": 443}
_PARSER_ERRORS = (httptools.HttpParserError, httptools.HttpParserUpgrade)
_NO_TIMEOUTS: dict[str, float | None] = {}  # read only: a request without httpx's timeout extension

Origin = tuple[bytes, str, int]


class _Malformed(Exception):
    """The response breaks HTTP/1.1 in a way the parser cannot see: cut short, or a head too long."""


class _Connection:
    """One connection and the response being read on it.

    The connection is the parser's protocol: llhttp calls the `on_*` methods as it parses, and
    they record the final response's status, reason, headers and body parts here. 1xx responses
    are parsed and passed over.
    """

    __slots__ = ("stream", "socket", "idle_since", "_direct", "_parser", "status", "reason", "headers",
                 "body", "complete", "keep_alive", "_head_only", "_fault", "_past_body")

    def __init__(self, stream: trio.abc.Stream, tcp: trio.socket.SocketType, direct: socket.socket | None) -> None:
        self.stream = stream
        self.socket = tcp  # the TCP socket under a TLS stream too: for the liveness check
        self._direct = direct  # plain TCP's stdlib socket, tried before the stream; None under TLS
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        # As h11 did: Transfer-Encoding overrides Content-Length, and a bare LF ends a line.
        self._parser.set_dangerous_leniencies(lenient_chunked_length=True, lenient_optional_cr_before_lf=True)
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []  # reused: httpx copies them into its Headers
        self.body: list[bytes] = []  # parts parsed and not yet handed on
        self.expect("POST")

    def expect(self, method: str) -> None:
        """Get ready to read the response to a `method` request."""
        self.status = 0  # set once the final response's head is complete
        self.complete = False
        self.keep_alive = False
        self._head_only = method == "HEAD"
        self._fault = ""  # what makes the head unacceptable though llhttp parses it
        self._past_body = 0  # bytes read since the last body bytes: trailers or chunk framing

    def on_message_begin(self) -> None:
        if self.status:  # a response after the one asked for: the connection is out of step
            self.keep_alive = False
        else:
            self.reason = b""
            self.headers.clear()

    def on_status(self, reason: bytes) -> None:
        self.reason += reason  # in pieces when the status line spans reads

    def on_header(self, name: bytes, value: bytes) -> None:
        value = value.rstrip(b" \t")  # llhttp strips the leading whitespace only
        if len(name) == 17 and name.lower() == b"transfer-encoding" and value.lower() != b"chunked":
            self._fault = f"transfer coding {value!r} is not supported"  # llhttp would pass it on undecoded
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if self.status or 100 <= status < 200:
            return  # an informational response, or one after the final response
        self.status = status
        if status < 100:
            self._fault = f"status code {status}"
        if self._head_only:  # no body follows whatever the head says; llhttp cannot be told so
            self.complete = True

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if self.status and not self.complete:
            self.complete = True
            # Read here: llhttp forgets the message's connection header once it completes.
            self.keep_alive = self._parser.should_keep_alive()

    def feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except _PARSER_ERRORS:
            if not self.complete:
                raise
            self.keep_alive = False  # what follows a whole response is no HTTP: not reused

    async def receive(self, read_timeout: float | None) -> bytes:
        if self._direct is not None:
            try:
                return self._direct.recv(_READ_SIZE)
            except BlockingIOError:
                pass
        # move_on_after, not fail_after: the same scope without a generator.
        with trio.move_on_after(_seconds(read_timeout)):
            return await self.stream.receive_some(_READ_SIZE)
        raise trio.TooSlowError

    async def send_all(self, data: bytes, write_timeout: float | None) -> None:
        if self._direct is not None:
            try:
                sent = self._direct.send(data)
            except BlockingIOError:
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        with trio.move_on_after(_seconds(write_timeout)):
            return await self.stream.send_all(data)
        raise trio.TooSlowError

    async def read_head(self, read_timeout: float | None) -> bool:
        """Read until the final response's head is complete; False if the server closed the
        connection without sending a byte."""
        received = 0
        while not self.status:
            data = await self.receive(read_timeout)
            if not data:
                if received:
                    raise _Malformed("connection closed within the response head")
                return False
            received += len(data)
            self.feed(data)
            if not self.status and received > _MAX_HEAD:
                raise _Malformed(f"response head longer than {_MAX_HEAD} bytes")
        if self._fault:
            raise _Malformed(self._fault)
        return True

    async def read_body(self, read_timeout: float | None) -> None:
        """Read once more of the body; at the end of the connection, the body is complete if its
        head gave it no length (it ends there), and cut short otherwise."""
        data = await self.receive(read_timeout)
        if data:
            parts = len(self.body)
            self.feed(data)
            if self.complete or len(self.body) > parts:
                self._past_body = 0
            else:  # llhttp keeps a trailer whole until its end: bounded as the head is
                self._past_body += len(data)
                if self._past_body > _MAX_HEAD:
                    raise _Malformed(f"more than {_MAX_HEAD} bytes of trailers or chunk framing")
        elif any(name.lower() in (b"content-length", b"transfer-encoding") for name, _ in self.headers):
            raise _Malformed("connection closed before the body was complete")
        else:
            self.complete = True  # keep_alive stays False: the connection has ended

    def reusable(self) -> bool:
        """The response was read whole and both sides keep the connection: ready for the next request."""
        return self.complete and self.keep_alive


def _seconds(timeout: float | None) -> float:
    return math.inf if timeout is None else timeout


async def _outgoing(request: httpx.Request) -> bytes:
    """The request as it goes on the wire: its head and body in one piece.

    trioproxy's bodies are in memory, and a write per part would cost a system call each.
    """
    fields = request.headers.raw
    head = b"\r\n".join([b"%s %s HTTP/1.1" % (request.method.encode(), request.url.raw_path),
                         *map(b": ".join, fields)])
    # A CR or LF inside a field would split it into lines of the attacker's choosing.
    if head.count(b"\n") != len(fields) or head.count(b"\r") != len(fields):
        raise httpx.LocalProtocolError("a request header contains CR or LF", request=request)
    try:
        body = request.content
    except httpx.RequestNotRead:  # a streamed body: read whole, framed as its headers say
        body = await request.aread()
        if "transfer-encoding" in request.headers:  # httpx sets it only to chunked
            body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
    return b"".join((head, b"\r\n\r\n", body))


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
        if isinstance(exc, (_Malformed, *_PARSER_ERRORS)):
            raise httpx.RemoteProtocolError(str(exc) or type(exc).__name__, request=request) from exc


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
        timeouts = request.extensions.get("timeout", _NO_TIMEOUTS)
        url = request.url
        origin: Origin = (url.raw_scheme, url.host, url.port or _DEFAULT_PORTS.get(url.raw_scheme, 80))
        outgoing = await _outgoing(request)
        conn = await self._idle_connection(origin)
        if conn is None:
            with _HttpxErrors(request, httpx.ConnectTimeout, httpx.ConnectError):
                conn = await self._connect(origin, timeouts.get("connect"))
        conn.expect(request.method)
        try:
            with _HttpxErrors(request, httpx.WriteTimeout, httpx.WriteError):
                await conn.send_all(outgoing, timeouts.get("write"))
            with _HttpxErrors(request, httpx.ReadTimeout, httpx.ReadError):
                answered = await conn.read_head(timeouts.get("read"))
        except BaseException:
            await trio.aclose_forcefully(conn.stream)
            raise
        if not answered:
            await trio.aclose_forcefully(conn.stream)
            raise httpx.RemoteProtocolError("server closed the connection without answering", request=request)
        body = _ResponseBody(self, origin, conn, request, timeouts.get("read"))
        return httpx.Response(conn.status, headers=conn.headers, stream=body,
                              extensions={"http_version": b"HTTP/1.1", "reason_phrase": conn.reason})

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
            if scheme == b"https":
                tls = trio.SSLStream(tcp, self._ssl_context, server_hostname=host, https_compatible=True)
                try:
                    await tls.do_handshake()
                except BaseException:
                    await trio.aclose_forcefully(tcp)
                    raise
                return _Connection(tls, tcp.socket, None)
        # The same connection, its stdlib socket kept: Trio hands out only its own wrapper.
        direct = socket.socket(fileno=tcp.socket.detach())
        tcp = trio.SocketStream(trio.socket.from_stdlib_socket(direct))
        return _Connection(tcp, tcp.socket, direct)

    async def release(self, origin: Origin, conn: _Connection) -> None:
        """Keep a connection whose exchange completed for the next request, or close it."""
        stack = self._idle.get(origin)
        if stack is None:  # the origin's first: setdefault would build a list on every release
            stack = self._idle[origin] = []
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
        parts = conn.body
        with _HttpxErrors(self._request, httpx.ReadTimeout, httpx.ReadError):
            while True:
                if parts:
                    # llhttp hands a chunked body over chunk by chunk (an SSE event is often a
                    # chunk): the parts one network read brought go on as one piece, so the events
                    # that arrived together are relayed in one write, as Upstream.event_batches intends.
                    piece = b"".join(parts)
                    parts.clear()
                    yield piece
                if conn.complete:
                    break
                await conn.read_body(self._read_timeout)
        self._conn = None
        await self._transport.release(self._origin, conn)

    async def aclose(self) -> None:
        """Closed before the end of the body: the connection is mid-message, so it cannot be reused."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await trio.aclose_forcefully(conn.stream)
