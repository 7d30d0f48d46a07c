"""Bodies too large, lengths that lie, `Expect: 100-continue`: a 413 (or 400) in OpenAI's shape
from raw sockets, the connection closed rather than read to the end, and the proxy healthy."""

from __future__ import annotations

import pytest
import trio

from support.fault_server import dumps
from support.proxies import Providers, Proxy
from support.raw_http import RawConnection, answer_then_close, raw_request
from support.robustness import CHAT, assert_healthy, assert_openai_error, chat_body


async def send_in_background(nursery: trio.Nursery, connection: RawConnection, data: bytes, piece: int = 65536) -> None:
    """Send a large body while the response is read; the proxy may close before it is all sent."""

    async def pump() -> None:
        for start in range(0, len(data), piece):
            if not await connection.send(data[start : start + piece]):
                return

    nursery.start_soon(pump)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_huge_body_over_default_limit_is_413(
    proxy: Proxy, providers: Providers, caplog: pytest.LogCaptureFixture, framing: str
) -> None:
    """A body over the default max_body_bytes (10 MiB), framed either way, is a 413 in OpenAI's
    shape and the connection is closed rather than read to the end."""
    limit = proxy.config.max_body_bytes
    body = dumps(chat_body(messages=[{"role": "user", "content": "x" * (limit + 1000)}]))
    if framing == "chunked":
        payload = b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + 65536]), body[i : i + 65536])
                           for i in range(0, len(body), 65536)) + b"0\r\n\r\n"
        head = raw_request("POST", CHAT, None, headers={"transfer-encoding": "chunked", "content-type": "application/json"})
    else:
        payload = body
        head = raw_request("POST", CHAT, None, headers={"content-length": str(len(body)), "content-type": "application/json"})
    with trio.fail_after(10):
        connection = await RawConnection.open(proxy)
        async with trio.open_nursery() as nursery:
            await connection.send(head)
            await send_in_background(nursery, connection, payload)
            response = await connection.read_response()
            assert await connection.closed_within(5)
            nursery.cancel_scope.cancel()
        await connection.aclose()
    assert_openai_error(response, 413, "request_too_large")
    assert providers.cerebras.received == [] and providers.chutes.received == []
    await assert_healthy(proxy, caplog)


@pytest.mark.parametrize("declared", ["10485761", "999999999999999", "18446744073709551616"])
async def test_absurd_content_length_is_refused_at_once(proxy: Proxy, caplog: pytest.LogCaptureFixture, declared: str) -> None:
    """A content-length far over the limit is refused before any body byte is sent: 413 from
    the proxy (or 400 from the HTTP layer for a number it cannot parse), then the connection closes."""
    response, _ = await answer_then_close(proxy, raw_request("POST", CHAT, None, headers={
        "content-length": declared, "content-type": "application/json"}))
    if response.status_code == 413:
        assert_openai_error(response, 413, "request_too_large")
    else:
        assert response.status_code == 400, response
    await assert_healthy(proxy, caplog)


async def test_expect_100_continue_with_huge_length_is_413_without_continue(
    proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    """`Expect: 100-continue` over the limit: the client is told 413 (not invited to upload)."""
    with trio.fail_after(5):
        connection = await RawConnection.open(proxy)
        await connection.send(raw_request("POST", CHAT, None, headers={
            "content-length": str(proxy.config.max_body_bytes * 2), "content-type": "application/json",
            "expect": "100-continue"}))
        response = await connection.read_response()
        while response.status_code == 100:
            response = await connection.read_response()
        await connection.aclose()
    assert_openai_error(response, 413, "request_too_large")
    await assert_healthy(proxy, caplog)


async def test_content_length_shorter_than_body(proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    """A content-length that cuts the JSON short: 400 invalid_json for the request, and the
    leftover bytes (not a request) are refused by the HTTP layer and the connection closed."""
    body = dumps(chat_body())
    data = raw_request("POST", CHAT, body, headers={"content-length": str(len(body) // 2)}, close=False) + b"\r\n\r\n"
    first, _ = await answer_then_close(proxy, data)
    assert_openai_error(first, 400, "invalid_json")
    await assert_healthy(proxy, caplog)


async def test_content_length_longer_than_body_then_eof(proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    """The client declares more than it sends and half-closes: answered 400 or closed, no hang."""
    body = dumps(chat_body())
    with trio.fail_after(5):
        connection = await RawConnection.open(proxy)
        await connection.send(raw_request("POST", CHAT, body, headers={"content-length": str(len(body) + 50)}))
        await connection.stream.send_eof()
        assert await connection.closed_within(3)
        await connection.aclose()
    if connection.buffer:
        assert connection.buffer.startswith(b"HTTP/1.1 400"), bytes(connection.buffer[:200])
    await assert_healthy(proxy, caplog)
