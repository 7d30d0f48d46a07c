"""HTTP/1.1 for Hypercorn on httptools (llhttp, Node's C parser) instead of h11.

`Http11Protocol` takes the place of Hypercorn's `H11Protocol` (ProtocolWrapper builds it for
every connection that is not HTTP/2 by ALPN). It feeds Hypercorn's request streams the same
events (Request, Body, EndBody, StreamClosed) and writes the answers itself. Why: h11 parsing each
request and serializing each answer, and Hypercorn's per-event plumbing around it, were a tenth
of a plain request's CPU; llhttp parses in C, and an answer's head waits for its first body
bytes (or its end) so that a small answer leaves in one write instead of up to three.

h11's rules are kept where llhttp is more lenient or Hypercorn relied on h11:
- HTTP/1.0 and 1.1 only (0.9 and other versions: 400); Host required once in 1.1 (400);
- Transfer-Encoding other than `chunked`: 501; Content-Length and Transfer-Encoding together
  are let through framed by Transfer-Encoding, as h11 did (`edges.py` answers them with a 400);
- a request head still incomplete beyond `h11_max_incomplete_size`: 431 (counted in whole
  reads from the one where the head began); so are a chunked body's trailers (reads that bring
  no body bytes), which llhttp, like a head, keeps whole until their line ends;
- the body of a head llhttp stops at (an Upgrade it is not asked for, CONNECT) is read by its
  Content-Length, never as requests behind it;
- a method llhttp does not know but HTTP allows (any token, e.g. `BREW`) reaches the app,
  when the request starts a read (it is parsed as PUT and keeps its own name, upper-cased as
  Hypercorn hands methods on); after another request in the same read, it gets a 400;
- keep-alive only for HTTP/1.1 without `connection: close`; after a request or an answer that
  closes, nothing more is read as a request; pipelined requests wait for the answer before;
- `Expect: 100-continue` is answered with a 100 at once, as Hypercorn does;
- WebSocket handshakes go to Hypercorn's WSStream; `Upgrade: h2c` (no body) and the HTTP/2
  preface (at the start of a read) switch the connection to Hypercorn's HTTP/2, as before.
llhttp is stricter than h11 in a few places: bare LF line ends, obsolete line folding, leading
blank lines being skipped aside, two equal Content-Length headers get a 400.
"""

import re
from collections import deque
from collections.abc import Awaitable, Callable
from time import time
from types import SimpleNamespace
from typing import Any

import httptools
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol.events import (
    Body, Data, EndBody, Event as StreamEvent, Request, Response, StreamClosed,
)
from hypercorn.protocol.h11 import H2CProtocolRequiredError, H2ProtocolAssumedError
from hypercorn.protocol.http_stream import HTTPStream
from hypercorn.protocol.ws_stream import WSStream

from .asgi import CLIENT_GONE, ClientGone

STREAM_ID = 1
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # HTTP/2 with prior knowledge starts so
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")  # what RFC 9110 allows as a method
_FIELD_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # never in an answer's header (splitting)
_NOTED = frozenset((b"host", b"transfer-encoding", b"connection", b"expect", b"upgrade", b"content-length"))
_CHUNKED, _LENGTH, _UNTIL_CLOSE, _NO_BODY = range(4)  # how an answer's body is framed


class _Refused(Exception):
    """The request is refused with `status` before the app sees it (raised inside the parser)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Head:
    """A request head as parsed, waiting its turn (pipelined requests wait for the answer before)."""

    __slots__ = ("method", "target", "headers", "version", "keep_alive", "expect_continue",
                 "websocket", "h2c", "upgrade_rest", "upgrade_length")

    def __init__(self, method: str, target: bytes, headers: list[tuple[bytes, bytes]], version: str) -> None:
        self.method, self.target, self.headers, self.version = method, target, headers, version
        self.keep_alive = version == "1.1"
        self.expect_continue = self.websocket = self.h2c = False
        self.upgrade_rest = b""  # what followed a head llhttp stopped at (Upgrade, CONNECT)
        self.upgrade_length = 0  # the body of such a head, which llhttp leaves to us


class _Refusal:
    """A refusal waiting its turn: `new_message` when it is for a request not yet started."""

    __slots__ = ("status", "new_message")

    def __init__(self, status: int, new_message: bool) -> None:
        self.status, self.new_message = status, new_message


class ProxyHTTPStream(HTTPStream):
    """Hypercorn's HTTP/1.1 request stream, whose scope carries a ClientGone (asgi.CLIENT_GONE):
    its callback is called where Hypercorn queues `http.disconnect` for the app. `ending` says
    the app's last body message is being sent: its bytes may wait for the answer's end."""

    _client_gone: ClientGone | None = None
    ending = False

    async def app_send(self, message: Any) -> None:
        if message is not None and message["type"] == "http.response.body" and not message.get("more_body", False):
            self.ending = True
        await super().app_send(message)

    async def handle(self, event: Any) -> None:
        if isinstance(event, StreamClosed) and not self.closed and self._client_gone is not None:
            self._client_gone.notify()
        await super().handle(event)
        if isinstance(event, Request) and not self.closed:
            # The app's task was started with start_soon and has not run yet (nothing above
            # checkpoints after starting it): it finds the extension in its scope.
            self._client_gone = self.scope["extensions"][CLIENT_GONE] = ClientGone()


class Http11Protocol:
    """One HTTP/1.1 connection for Hypercorn (its H11Protocol's constructor and interface:
    `initiate`, `handle` of RawData and Closed, and `stream_send` for its streams)."""

    def __init__(self, app: Any, config: Config, context: Any, task_group: Any, connection_state: Any,
                 ssl: bool, client: tuple[str, int] | None, server: tuple[str, int] | None,
                 send: Callable[[Event], Awaitable[None]]) -> None:
        self.app, self.config, self.context, self.task_group = app, config, context, task_group
        self.connection_state, self.ssl, self.client, self.server, self.send = connection_state, ssl, client, server, send
        self.can_read = context.event_class()  # set when an answer is done: the next request may start
        self.keep_alive_requests = 0
        self.stream: HTTPStream | WSStream | None = None
        self._parser = self._new_parser()
        self._queue: deque[Any] = deque()  # parsed heads, bodies, refusals, in their order
        # the parser's place
        self._head: _Head | None = None  # the request being parsed
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._noted: dict[bytes, list[bytes]] = {}
        self._in_head = self._in_body = False
        self._head_size = 0  # bytes read since the head being parsed began, or since the body last moved on
        self._method_override: str | None = None
        self._completed = 0  # requests the current read completed
        self._raw_left = 0  # body bytes of an upgrade head that llhttp left to us
        self._their_close = False  # a request said it is the last: later bytes are dropped
        self._websocket = False  # bytes go to the WebSocket stream as they are
        # the answer's place
        self._cycle_open = False  # from a request's start to its answer's end
        self._their_done = self._our_done = self._response_started = False
        self._keep_alive = True
        self._method, self._version = "GET", "1.1"  # the request being answered
        self._framing = _NO_BODY
        self._length_left = 0
        self._pending = b""  # the answer's head, until its first body bytes or its end
        self._closing = False  # the connection is being closed: nothing more is read or written
        self._date: tuple[int, list[tuple[bytes, bytes]]] = (0, [])

    def _new_parser(self) -> httptools.HttpRequestParser:
        parser = httptools.HttpRequestParser(self)
        parser.set_dangerous_leniencies(lenient_chunked_length=True)  # CL + TE: as h11, edges.py refuses it
        return parser

    async def initiate(self) -> None:
        pass

    async def handle(self, event: Event) -> None:
        """Parse bytes the client sent and hand the requests on, one at a time; or close."""
        if isinstance(event, RawData):
            if self._closing or (self._their_close and not self._raw_left):
                return  # never served: the connection ends after the answer under way
            if self._websocket:
                self._queue.append(Data(stream_id=STREAM_ID, data=event.data))
            else:
                self._read(event.data)
            await self._hand_on()
        elif isinstance(event, Closed):
            self._closing = True
            await self.can_read.set()  # a reader waiting for an answer's end stops
            await self._close_stream()

    # ------------------------------------------------------------------ reading

    def _read(self, data: bytes) -> None:
        """Feed `data` to the parser; its callbacks queue what it finds."""
        if self._raw_left:
            data = self._read_raw_body(data)
            if not data:
                return
        if not data:  # the client closed its side
            if self._in_head or self._in_body:
                self._queue.append(_Refusal(400, new_message=self._in_head))
            return
        at_start = not self._in_head and not self._in_body
        self._completed = 0
        queued = len(self._queue)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgraded(data[int(upgrade.args[0]):])
        except httptools.HttpParserError as error:
            self._failed(error, data, at_start and not self._completed)
        else:
            if self._in_head or (self._in_body and len(self._queue) == queued):
                # A head, or trailers (and chunk framing) that brought no body bytes: llhttp
                # keeps a header line whole until its end, so both are bounded as h11 bounded them.
                self._head_size += len(data)
                if self._head_size > self.config.h11_max_incomplete_size:
                    self._refuse(431)
            elif self._in_body:
                self._head_size = 0

    def _failed(self, error: httptools.HttpParserError, data: bytes, at_start: bool) -> None:
        if self._their_close:
            return  # bytes after a last request: dropped
        if isinstance(error.__context__, _Refused):
            self._refuse(error.__context__.status)
            return
        if at_start and isinstance(error, httptools.HttpParserInvalidMethodError):
            method, space, rest = data.lstrip(b"\r\n").partition(b" ")
            if space and _TOKEN.fullmatch(method):  # a method llhttp does not know: HTTP allows it
                # upper-cased, as Hypercorn hands the app h11's method (`get` is GET)
                self._parser, self._method_override = self._new_parser(), method.decode("ascii").upper()
                self._in_head = False
                self._read(b"PUT " + rest)
                return
        if at_start and data.startswith(PREFACE) and not self._cycle_open and not self._queue:
            raise H2ProtocolAssumedError(data)  # ProtocolWrapper switches to HTTP/2
        self._refuse(400)

    def _refuse(self, status: int) -> None:
        self._queue.append(_Refusal(status, new_message=not self._in_body))
        self._in_head = self._in_body = False
        self._closing_parser()

    def _closing_parser(self) -> None:
        """No more requests are parsed on this connection."""
        self._their_close = True

    def _upgraded(self, rest: bytes) -> None:
        """llhttp stopped after an upgrade's head (Upgrade + Connection: upgrade, or CONNECT)."""
        head = self._head
        assert head is not None
        if head.websocket:
            self._websocket = True
            if rest:
                self._queue.append(Data(stream_id=STREAM_ID, data=rest))
        elif head.h2c:
            head.upgrade_rest = rest  # HTTP/2 takes it once the 101 is out
            self._closing_parser()
        else:  # served as HTTP/1.1 (h2c with a body, as Hypercorn did; CONNECT), then the next request
            self._raw_left = head.upgrade_length
            if rest:
                self._read(rest)

    def _read_raw_body(self, data: bytes) -> bytes:
        """The body bytes of an upgrade head llhttp stopped at; returns what follows it."""
        if not data:
            self._raw_left = 0
            self._queue.append(_Refusal(400, new_message=False))
            return b""
        body, rest = data[:self._raw_left], data[self._raw_left:]
        self._raw_left -= len(body)
        self._queue.append(Body(stream_id=STREAM_ID, data=body))
        if not self._raw_left:
            self._queue.append(EndBody(stream_id=STREAM_ID))
        return rest

    # llhttp's callbacks (httptools calls them during feed_data)

    def on_message_begin(self) -> None:
        if self._their_close:
            raise _Refused(400)  # stops the parser; the bytes are dropped
        self._in_head, self._url, self._headers, self._noted = True, b"", [], {}

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a chunked body's trailers: ignored, as Hypercorn does
        name = name.lower()
        value = value.rstrip(b" \t")
        self._headers.append((name, value))
        if name in _NOTED:
            self._noted.setdefault(name, []).append(value)

    def on_headers_complete(self) -> None:
        self._in_head, self._in_body, self._head_size = False, True, 0
        parser, noted = self._parser, self._noted
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise _Refused(400)
        hosts = noted.get(b"host", ())
        if len(hosts) > 1 or (not hosts and version == "1.1"):
            raise _Refused(400)
        encodings = noted.get(b"transfer-encoding")
        if encodings is not None and (len(encodings) > 1 or encodings[0].lower() != b"chunked"):
            raise _Refused(501)
        method = self._method_override or parser.get_method().decode("ascii")
        self._method_override = None
        head = self._head = _Head(method, self._url, self._headers, version)
        if b"connection" in noted or b"expect" in noted or b"upgrade" in noted or parser.should_upgrade():  # CONNECT
            self._note_connection(head, noted, encodings is not None)
        self._queue.append(head)

    def _note_connection(self, head: _Head, noted: dict[bytes, list[bytes]], chunked: bool) -> None:
        """Keep-alive, 100-continue and upgrades, from the headers that say them."""
        tokens = {token.strip() for value in noted.get(b"connection", ()) for token in value.lower().split(b",")}
        if b"close" in tokens:
            head.keep_alive = False
        if head.version == "1.1":
            head.expect_continue = any(b"100-continue" in value.lower() for value in noted.get(b"expect", ()))
        upgrade = b",".join(noted.get(b"upgrade", ())).strip().lower()
        length = noted.get(b"content-length")
        if upgrade == b"websocket" and b"upgrade" in tokens and head.method == "GET":
            head.websocket = True
        elif upgrade == b"h2c" and length is None and not chunked:
            head.h2c = True
        elif self._parser.should_upgrade() and (chunked or (length and length[0] != b"0")):
            if chunked:
                raise _Refused(400)  # a chunked body behind an upgrade llhttp stops at: not served
            head.upgrade_length = int(length[0])

    def on_body(self, body: bytes) -> None:
        self._queue.append(Body(stream_id=STREAM_ID, data=body))

    def on_message_complete(self) -> None:
        self._in_body = False
        self._completed += 1
        head = self._head
        assert head is not None
        if not head.websocket and not head.upgrade_length:
            self._queue.append(EndBody(stream_id=STREAM_ID))
        if not head.keep_alive:
            self._closing_parser()

    # ------------------------------------------------------------------ handing on

    async def _hand_on(self) -> None:
        """Hand what was parsed to the request stream; a new request waits for the answer before."""
        queue = self._queue
        while queue:
            item = queue[0]
            if self._cycle_open and (type(item) is _Head or (type(item) is _Refusal and item.new_message)):
                await self.can_read.clear()
                await self.can_read.wait()
                if self._closing:
                    queue.clear()
                    return
                continue
            queue.popleft()
            if type(item) is _Head:
                await self._start(item)
            elif type(item) is _Refusal:
                await self._refused(item.status)
                return
            else:
                if type(item) is EndBody:
                    self._their_done = True
                if self.stream is not None:  # None: the answer is over, the rest of the body unread
                    await self.stream.handle(item)

    async def _start(self, head: _Head) -> None:
        self._cycle_open, self._keep_alive = True, head.keep_alive
        self._their_done = self._our_done = self._response_started = False
        self._method, self._version = head.method, head.version
        await self.send(Updated(idle=False))
        if head.h2c:
            await self._write(b"HTTP/1.1 101 \r\n" + self._fields(
                [*self._server_headers(), (b"connection", b"upgrade"), (b"upgrade", b"h2c")]))
            raise H2CProtocolRequiredError(head.upgrade_rest, SimpleNamespace(  # type: ignore[arg-type]
                method=head.method.encode("ascii"), target=head.target, headers=head.headers))
        stream_class = WSStream if head.websocket else ProxyHTTPStream
        self.stream = stream_class(self.app, self.config, self.context, self.task_group, self.ssl, self.client,
                                   self.server, self.stream_send, STREAM_ID)
        await self.stream.handle(Request(stream_id=STREAM_ID, headers=head.headers, http_version=head.version,
                                         method=head.method, raw_path=head.target, state=self.connection_state))
        self.keep_alive_requests += 1
        await self.context.mark_request()
        if head.expect_continue:
            await self._write(b"HTTP/1.1 100 \r\n" + self._fields(self._server_headers()))

    async def _refused(self, status: int) -> None:
        """Answer `status` (unless an answer has started) and close the connection."""
        self._queue.clear()
        answered, self._response_started, self._closing = self._response_started, True, True  # the app's answer is dropped
        if not answered:
            await self._write(b"HTTP/1.1 %d \r\n" % status + self._fields(
                [(b"content-length", b"0"), (b"connection", b"close"), *self._server_headers()]))
        await self.send(Closed())

    async def _close_stream(self) -> None:
        if self.stream is not None:
            stream, self.stream = self.stream, None
            await stream.handle(StreamClosed(stream_id=STREAM_ID))

    # ------------------------------------------------------------------ writing

    async def stream_send(self, event: StreamEvent) -> None:
        """Write what the request stream answers; an answer's head waits for its first body bytes."""
        if type(event) is Body:
            if self._closing:
                return
            data = self._pending + self._framed(event.data)
            if getattr(self.stream, "ending", False):
                self._pending = data  # the end follows at once: one write for both
            elif data:
                self._pending = b""
                await self._write(data)
        elif type(event) is EndBody:
            if self._closing:
                return
            data, self._pending = self._pending + self._end(), b""
            self._our_done = True
            if data:
                await self._write(data)
        elif type(event) is Response:
            if self._closing:
                return
            if event.status_code >= 200:
                self._response_started = True
                self._pending = self._response_head(event.status_code, event.headers)
            else:
                await self._write(b"HTTP/1.1 %d \r\n" % event.status_code + self._fields(
                    [*event.headers, *self._server_headers()]))
        elif type(event) is Data:  # a WebSocket's frames
            if not self._closing:
                await self._write(event.data)
        elif type(event) is StreamClosed:
            await self._recycle()
        # InformationalResponse (early hints), EndData, Trailers: nothing for HTTP/1.1

    def _response_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
        """The answer's head, framed as h11 frames it: the app's Content-Length or
        Transfer-Encoding, else chunked (HTTP/1.1) or until the close (HTTP/1.0). An answer
        that starts before the request's body was read says `connection: close`: the
        connection ends after it (as with h11), and a client told so does not send another
        request on it."""
        headers = [*headers, *self._server_headers()]
        if self.keep_alive_requests >= self.config.keep_alive_max_requests:
            headers.append((b"connection", b"close"))
        length = encoding = None
        closes = not self._request_read()  # answered before its body came: the connection ends
        for name, value in headers:
            lowered = name.lower()
            if lowered == b"content-length":
                length = value
            elif lowered == b"transfer-encoding":
                encoding = value
            elif lowered == b"connection" and b"close" in value.lower():
                closes = True
        if status in (204, 304):
            self._framing = _NO_BODY
        elif encoding is None and length is not None:
            self._framing, self._length_left = _LENGTH, int(length)
        else:  # chunked for HTTP/1.1, until the close for HTTP/1.0
            if encoding is not None or length is not None:
                headers = [(n, v) for n, v in headers if n.lower() not in (b"content-length", b"transfer-encoding")]
            if self._version == "1.1":
                self._framing = _CHUNKED
                headers.append((b"transfer-encoding", b"chunked"))
            else:
                self._framing = _UNTIL_CLOSE
                closes = closes or self._method != "HEAD"
        if self._method == "HEAD":
            self._framing = _NO_BODY
        if closes or not self._keep_alive:
            self._keep_alive = False
            headers = self._closing_headers(headers)
        return b"HTTP/1.1 %d \r\n" % status + self._fields(headers)

    @staticmethod
    def _closing_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """`headers` whose Connection says close (and not keep-alive), as h11 rewrites it."""
        tokens = {b"close"}
        kept = []
        for name, value in headers:
            if name.lower() == b"connection":
                tokens.update(token.strip() for token in value.lower().split(b",") if token.strip())
            else:
                kept.append((name, value))
        tokens.discard(b"keep-alive")
        return [*kept, (b"connection", b", ".join(sorted(tokens)))]

    @staticmethod
    def _fields(headers: list[tuple[bytes, bytes]]) -> bytes:
        """Header lines and the blank line; a control character (response splitting) raises."""
        lines = [name + b": " + value for name, value in headers]
        if _FIELD_CTL.search(b"".join(lines)):
            raise ValueError("a response header holds a control character")
        lines.append(b"\r\n")
        return b"\r\n".join(lines)

    def _server_headers(self) -> list[tuple[bytes, bytes]]:
        """Hypercorn's own answer headers (date, server, alt-svc), built once a second."""
        second = int(time())
        if self._date[0] != second:
            self._date = (second, self.config.response_headers("h11"))
        return self._date[1]

    def _framed(self, data: bytes) -> bytes:
        if not data:
            return b""
        if self._framing == _CHUNKED:
            return b"%x\r\n%b\r\n" % (len(data), data)
        if self._framing == _LENGTH:
            if len(data) > self._length_left:
                raise ValueError("the body is longer than the answer's Content-Length")
            self._length_left -= len(data)
        elif self._framing == _NO_BODY:
            raise ValueError("this answer has no body")
        return data

    def _end(self) -> bytes:
        if self._framing == _CHUNKED:
            return b"0\r\n\r\n"
        if self._framing == _LENGTH and self._length_left:
            self._keep_alive = False  # the client waits for bytes that will not come: close
        return b""

    def _request_read(self) -> bool:
        """Whether the request answered was read whole: handed on, or its end parsed and queued
        (the app may answer before the reader hands on what it already has)."""
        if self._their_done:
            return True
        for item in self._queue:
            if type(item) is not Body:
                return type(item) is EndBody
        return False

    async def _write(self, data: bytes) -> None:
        await self.send(RawData(data=data))

    async def _recycle(self) -> None:
        """The answer is done: ready for the next request, or close."""
        request_read = self._request_read()
        await self._close_stream()
        if self._pending and not self._closing:  # an answer that ended without a body message
            data, self._pending = self._pending, b""
            await self._write(data)
        if (request_read and self._our_done and self._keep_alive and not self._closing
                and not self._websocket and not self.context.terminated.is_set()):
            self._cycle_open = self._response_started = self._our_done = False
            await self.can_read.set()
            await self.send(Updated(idle=True))
        else:
            self._closing = True
            await self.can_read.set()
            await self.send(Closed())
