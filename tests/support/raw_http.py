"""HTTP below the clients: the proxy's root URL, a request read off a socket, a scripted server
answering with bytes written by hand, response heads written by hand, a connection closed with
a reset, and a raw client that sends any bytes and parses HTTP/1.x responses off the socket."""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import attrs
import httpx
import trio
import trio.testing

from support.proxies import Proxy


def abort_with_reset(stream: trio.SocketStream) -> None:
    """Make the coming close a TCP RST instead of an orderly FIN."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


SSE_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"connection: close\r\n\r\n")


def json_head(status: int, length: int, content_type: str = "application/json") -> bytes:
    return (f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {length}\r\n"
            "connection: close\r\n\r\n").encode()


async def read_raw_request(stream: trio.SocketStream) -> tuple[str, bytes] | None:
    """(target, body) once the whole request is read; None if the client left first."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = await stream.receive_some(65536)
        if not more:
            return None
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        more = await stream.receive_some(65536)
        if not more:
            return None
        body += more
    return head.split(b" ")[1].decode("latin-1"), body


Handler = Callable[[trio.SocketStream], Awaitable[None]]


async def serve_raw(nursery: trio.Nursery, handler: Handler) -> tuple[str, list[int]]:
    """A scripted HTTP server: `handler` gets each connection. Returns its URL and a list
    that counts connections (its length)."""
    connections: list[int] = []

    async def counted(stream: trio.SocketStream) -> None:
        connections.append(1)
        async with stream:
            await handler(stream)

    listeners = await nursery.start(partial(trio.serve_tcp, counted, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    return f"http://127.0.0.1:{port}/", connections


async def answer_each(responses: list[bytes], stream: trio.SocketStream) -> None:
    """Answer one request per entry on the same connection, then wait for the client to go."""
    for response in responses:
        if not await read_raw_request(stream):
            return
        await stream.send_all(response)
    while await stream.receive_some(65536):
        pass


def root_of(proxy: Proxy) -> str:
    """The proxy's origin, for paths outside /v1 such as /healthz."""
    return proxy.base_url.removesuffix("/v1")


def address(proxy: Proxy) -> tuple[str, int]:
    host, port = proxy.base_url.removeprefix("http://").removesuffix("/v1").rsplit(":", 1)
    return host.strip("[]"), int(port)


@attrs.define
class RawResponse:
    """One HTTP/1.x response as read off a raw socket."""

    version: str
    status_code: int
    headers: httpx.Headers
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


class RawConnection:
    """A raw TCP client: send any bytes, parse HTTP/1.x responses, notice closes and resets."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.eof = False
        self.reset = False

    @classmethod
    async def open(cls, proxy: Proxy) -> RawConnection:
        host, port = address(proxy)
        return cls(await trio.open_tcp_stream(host, port))

    async def send(self, data: bytes) -> bool:
        """Send `data`; False when the proxy has already closed the connection."""
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def fill(self) -> bool:
        """Read what is there into the buffer; False at EOF or reset."""
        if self.eof:
            return False
        try:
            data = await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.reset, data = True, b""
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    async def _until(self, separator: bytes) -> bytes:
        while (index := self.buffer.find(separator)) < 0:
            if not await self.fill():
                raise EOFError(f"closed before {separator!r}; got {bytes(self.buffer[:200])!r}")
        data = bytes(self.buffer[:index])
        del self.buffer[: index + len(separator)]
        return data

    async def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not await self.fill():
                raise EOFError(f"closed {size - len(self.buffer)} bytes short")
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def read_response(self, *, head: bool = False) -> RawResponse:
        """The next complete response (body by content-length, chunked, or until close)."""
        lines = (await self._until(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        version, status, *_ = lines[0].split(" ", 2)
        headers = httpx.Headers([tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]])
        code = int(status)
        if head or code in (204, 304) or code < 200:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            parts = []
            while size := int((await self._until(b"\r\n")).split(b";")[0], 16):
                parts.append(await self._exactly(size))
                await self._until(b"\r\n")
            while await self._until(b"\r\n"):  # trailers, up to the blank line
                pass
            body = b"".join(parts)
        elif "content-length" in headers:
            body = await self._exactly(int(headers["content-length"]))
        else:
            while await self.fill():
                pass
            body, self.buffer = bytes(self.buffer), bytearray()
        return RawResponse(version, code, headers, body)

    async def closed_within(self, seconds: float) -> bool:
        """True when the peer closes (or resets) within `seconds`; what it sent stays buffered."""
        with trio.move_on_after(seconds):
            while await self.fill():
                pass
            return True
        return False


def raw_request(method: str, target: str, body: bytes | None = None, *, version: str = "HTTP/1.1",
                headers: dict[str, str] | None = None, close: bool = True) -> bytes:
    """Bytes of one request; content-length added for a body unless a header says otherwise."""
    lines = [f"{method} {target} {version}", "host: 127.0.0.1"]
    extra = {k.lower(): v for k, v in (headers or {}).items()}
    if body is not None and "content-length" not in extra and "transfer-encoding" not in extra:
        extra["content-length"] = str(len(body))
    if (body is not None or method == "POST") and "content-type" not in extra:
        extra["content-type"] = "application/json"
    if close and version == "HTTP/1.1":
        extra.setdefault("connection", "close")
    lines += [f"{k}: {v}" for k, v in extra.items()]
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + (body or b"")


async def exchange(proxy: Proxy, data: bytes, *, head: bool = False, timeout: float = 5.0) -> RawResponse:
    """Send `data` on a fresh connection and read one response (bounded)."""
    with trio.fail_after(timeout):
        connection = await RawConnection.open(proxy)
        try:
            await connection.send(data)
            return await connection.read_response(head=head)
        finally:
            await connection.aclose()


async def answer_then_close(proxy: Proxy, data: bytes) -> tuple[RawResponse, bytes]:
    """Send `data` on a fresh connection, read one response, and assert that the proxy then
    closes the connection (within 3 s); the response and whatever bytes followed it."""
    with trio.fail_after(5):
        connection = await RawConnection.open(proxy)
        await connection.send(data)
        response = await connection.read_response()
        assert await connection.closed_within(3), "connection left open after the answer"
        await connection.aclose()
    return response, bytes(connection.buffer)
