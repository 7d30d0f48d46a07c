"""The lean transport reading responses off the wire, against scripted servers on 127.0.0.1.

How a body's end is found (length, chunks, the end of the connection, none at all), which
connections are kept, heads that arrive in pieces, malformed answers (always httpx's
RemoteProtocolError), and the request as it goes on the wire.
"""

from collections.abc import AsyncIterator
from functools import partial

import httpx
import pytest
import trio
import trio.testing

from support.raw_http import answer_each, read_raw_request, serve_raw
from trioproxy.providers.transport import LeanTransport

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def answer_then_hold(response: bytes, stream: trio.SocketStream) -> None:
    """Answer the first request, then keep the connection open until the client closes it."""
    await answer_each([response], stream)


async def answer_then_close(response: bytes, stream: trio.SocketStream) -> None:
    if await read_raw_request(stream):
        await stream.send_all(response)


def dechunked(body: bytes) -> bytes:
    """A chunked body's content; AssertionError if it is not framed right."""
    content = b""
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        assert body[size:size + 2] == b"\r\n"
        content, body = content + body[:size], body[size + 2:]
        if size == 0:
            assert body == b""
            return content


async def two_requests(url: str) -> list[httpx.Response]:
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        return [await client.get(url), await client.get(url)]


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n",
])
async def test_no_body_whatever_the_length_says_and_the_connection_is_reused(
    nursery: trio.Nursery, head: bytes
) -> None:
    url, connections = await serve_raw(nursery, partial(answer_each, [head, OK]))
    first, second = await two_requests(url)
    assert (first.content, second.content) == (b"", b"ok")
    assert len(connections) == 1


async def test_chunked_overrides_a_content_length(nursery: trio.Nursery) -> None:
    both = (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n"
            b"5\r\nfirst\r\n0\r\n\r\n")
    url, connections = await serve_raw(nursery, partial(answer_each, [both, OK]))
    first, second = await two_requests(url)
    assert (first.content, second.content) == (b"first", b"ok")
    assert len(connections) == 1


async def test_body_without_a_length_ends_with_the_connection(nursery: trio.Nursery) -> None:
    url, connections = await serve_raw(
        nursery, partial(answer_then_close, b"HTTP/1.1 200 OK\r\n\r\nuntil the end"))
    first, second = await two_requests(url)
    assert (first.content, second.content) == (b"until the end", b"until the end")
    assert len(connections) == 2


@pytest.mark.parametrize("response", [
    b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
    OK + b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",  # a second answer nobody asked for
    OK + b"not HTTP at all",
])
async def test_connection_the_server_ends_or_garbles_is_not_reused(nursery: trio.Nursery, response: bytes) -> None:
    """The server keeps each of these connections open: only the answer says not to reuse it."""
    url, connections = await serve_raw(nursery, partial(answer_then_hold, response))
    first, second = await two_requests(url)
    assert (first.content, second.content) == (b"ok", b"ok")
    assert len(connections) == 2


async def test_head_answer_has_no_body_whatever_the_length_says(nursery: trio.Nursery) -> None:
    url, _ = await serve_raw(nursery, partial(answer_each, [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"] * 2))
    async with httpx.AsyncClient(transport=LeanTransport(), timeout=5) as client:
        first = await client.head(url)
        second = await client.head(url)
    assert (first.status_code, first.content, second.status_code, second.content) == (200, b"", 200, b"")


async def test_head_in_pieces(nursery: trio.Nursery) -> None:
    """A response written a few bytes at a time, each piece read on its own, parses as a whole."""
    pieces = [b"HTTP/1.1 2", b"01 Crea", b"ted\r\nx-ra", b"te: 7  \r\ncontent-", b"length: 5\r\n\r",
              b"\nfir", b"st"]

    async def in_pieces(stream: trio.SocketStream) -> None:
        await read_raw_request(stream)
        for piece in pieces:
            await trio.testing.wait_all_tasks_blocked()  # the client has read what came before
            await stream.send_all(piece)
        await answer_each([OK], stream)

    url, connections = await serve_raw(nursery, in_pieces)
    first, second = await two_requests(url)
    assert (first.status_code, first.reason_phrase, first.content) == (201, "Created", b"first")
    assert first.headers["x-rate"] == "7"  # without the trailing whitespace
    assert second.content == b"ok"
    assert len(connections) == 1


async def test_bare_line_feeds_end_lines(nursery: trio.Nursery) -> None:
    url, _ = await serve_raw(nursery, partial(answer_then_hold, b"HTTP/1.1 200 OK\ncontent-length: 2\n\nok"))
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        assert (await client.get(url)).content == b"ok"


@pytest.mark.parametrize("response", [
    b"not HTTP at all\r\n\r\n",
    b"HTTP/1.1 2x0 OK\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 099 Early\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon here\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx-bad: a\x00b\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nzipped",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nfirst\r\n0\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\nframes",
    b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n",
    b"HTTP/1.1 200 O",
])
async def test_malformed_or_cut_short_answer_is_a_remote_protocol_error(
    nursery: trio.Nursery, response: bytes
) -> None:
    url, _ = await serve_raw(nursery, partial(answer_then_close, response))
    async with httpx.AsyncClient(transport=LeanTransport(), timeout=5) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(url)


async def test_head_that_never_ends_is_refused(nursery: trio.Nursery) -> None:
    endless = b"HTTP/1.1 200 OK\r\nx-filler: " + b"a" * 20000
    url, _ = await serve_raw(nursery, partial(answer_then_hold, endless))
    async with httpx.AsyncClient(transport=LeanTransport(), timeout=5) as client:
        with pytest.raises(httpx.RemoteProtocolError):  # not a read timeout
            await client.get(url)


async def test_header_with_a_line_break_is_not_sent(nursery: trio.Nursery) -> None:
    url, connections = await serve_raw(nursery, partial(answer_each, [OK]))
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        with pytest.raises(httpx.LocalProtocolError):
            await client.post(url, content=b"{}", headers={"authorization": "Bearer k\r\nx-injected: 1"})
    assert connections == []


async def test_request_line_keeps_the_raw_path_and_a_streamed_body_goes_chunked(nursery: trio.Nursery) -> None:
    received: list[bytes] = []

    async def record(stream: trio.SocketStream) -> None:
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            data += await stream.receive_some(65536)
        received.append(data)
        await stream.send_all(OK)

    async def parts() -> AsyncIterator[bytes]:
        yield b'{"a": '
        yield b"1}"

    url, _ = await serve_raw(nursery, record)
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        response = await client.post(url + "v1/chat?x=1", content=parts())
    assert response.content == b"ok"
    head, _, body = received[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/chat?x=1 HTTP/1.1\r\n")
    assert b"\r\ntransfer-encoding: chunked" in head.lower()
    assert dechunked(body) == b'{"a": 1}'


async def test_request_larger_than_the_socket_takes_at_once_arrives_whole(nursery: trio.Nursery) -> None:
    """A body of several socket buffers: the part the first write leaves is sent as the server reads."""
    body = bytes(range(256)) * 16384  # 4 MiB
    received: list[bytes] = []

    async def read_slowly(stream: trio.SocketStream) -> None:
        await trio.testing.wait_all_tasks_blocked()  # the client's write has filled the buffers
        request = await read_raw_request(stream)
        assert request is not None
        received.append(request[1])
        await stream.send_all(OK)

    url, _ = await serve_raw(nursery, read_slowly)
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        assert (await client.post(url, content=body)).content == b"ok"
    assert received == [body]


@pytest.mark.parametrize("trailers", [
    pytest.param(b"x-filler: " + b"a" * 200_000, id="one-endless-trailer"),
    pytest.param(b"x-t: a\r\n" * 25_000, id="trailers-without-end"),
])
async def test_trailers_that_never_end_are_refused(nursery: trio.Nursery, trailers: bytes) -> None:
    """A chunked body's trailers are a header block too: bounded as the head is, never read
    (and kept) for as long as the server sends them."""
    endless = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n" + trailers
    url, _ = await serve_raw(nursery, partial(answer_then_hold, endless))
    async with httpx.AsyncClient(transport=LeanTransport(), timeout=5) as client:
        with pytest.raises(httpx.RemoteProtocolError):  # not a read timeout
            await client.get(url)
