"""HTTP below the clients: the proxy's root URL, a request read off a socket, response heads
written by hand, and a connection closed with a reset."""

from __future__ import annotations

import socket
import struct

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


def root_of(proxy: Proxy) -> str:
    """The proxy's origin, for paths outside /v1 such as /healthz."""
    return proxy.base_url.removesuffix("/v1")
