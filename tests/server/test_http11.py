"""The client-facing HTTP/1.1 protocol (server/http11.py, on llhttp): h11's rules where llhttp is
more lenient, upgrades, and answers written in as few writes as the app allows."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config
from hypercorn.events import Event, RawData
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState

from support.fault_server import dumps
from support.proxies import Proxy
from support.raw_http import RawConnection, answer_then_close, exchange, raw_request
from support.robustness import CHAT, assert_healthy, chat_body
from trioproxy.server.http11 import Http11Protocol

HOST = b"host: 127.0.0.1\r\n"


@pytest.mark.parametrize(("data", "status"), [
    pytest.param(b"POST " + CHAT.encode() + b" HTTP/1.1\r\n" + HOST + b"transfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
                 501, id="a-coding-before-chunked"),
    pytest.param(b"GET /healthz HTTP/1.1\r\n" + HOST + HOST + b"\r\n", 400, id="two-hosts"),
    pytest.param(b"GET /healthz HTTP/2.0\r\n" + HOST + b"\r\n", 400, id="http-2.0-request-line"),
    pytest.param(b"GET /healthz\r\n\r\n", 400, id="http-0.9"),
])
async def test_what_h11_refused_is_still_refused(proxy: Proxy, caplog: pytest.LogCaptureFixture, data: bytes,
                                                 status: int) -> None:
    """llhttp accepts these; h11 did not, and neither does the proxy: an answer and a close."""
    response, _ = await answer_then_close(proxy, data)
    assert response.status_code == status, response
    await assert_healthy(proxy, caplog)


async def test_http_1_0_is_never_kept_alive(proxy: Proxy) -> None:
    """An HTTP/1.0 request is the connection's last, even with `connection: keep-alive`."""
    request = raw_request("GET", "/healthz", version="HTTP/1.0", headers={"connection": "keep-alive"})
    first, rest = await answer_then_close(proxy, request + raw_request("GET", "/healthz"))
    assert first.status_code == 200 and first.headers["connection"] == "close"
    assert b"HTTP/1.1" not in rest  # the second request was not served


async def test_bytes_after_a_closing_request_are_not_served(proxy: Proxy) -> None:
    """A request behind one that said `connection: close` (even junk) is dropped: one answer, whole."""
    first, rest = await answer_then_close(
        proxy, raw_request("GET", "/healthz", close=True) + raw_request("GET", "/healthz") + b"\x00junk")
    assert first.status_code == 200 and first.json()["status"] == "ok"
    assert not rest


async def test_header_values_lose_surrounding_whitespace(proxy: Proxy) -> None:
    """As h11 did: `x-request-id: p1 \\t` is the id `p1` (llhttp keeps the trailing blanks)."""
    response = await exchange(proxy, b"GET /healthz HTTP/1.1\r\n" + HOST + b"x-request-id: p1 \t\r\nconnection: close\r\n\r\n")
    assert response.status_code == 200 and response.headers["x-request-id"] == "p1"


async def test_a_chunked_body_with_trailers_is_served(proxy: Proxy) -> None:
    body = dumps(chat_body())
    chunked = b"%x\r\n%b\r\n0\r\nx-trailer: yes\r\n\r\n" % (len(body), body)
    response = await exchange(proxy, raw_request("POST", CHAT, chunked, headers={"transfer-encoding": "chunked"}))
    assert response.status_code == 200, response


async def test_expect_100_continue_is_invited_then_served(proxy: Proxy) -> None:
    """`Expect: 100-continue`: a 100 at once, the body sent after it is read and answered."""
    body = dumps(chat_body())
    head = raw_request("POST", CHAT, body, headers={"expect": "100-continue"}).removesuffix(body)
    with trio.fail_after(5):
        connection = await RawConnection.open(proxy)
        await connection.send(head)
        invited = await connection.read_response()
        await connection.send(body)
        response = await connection.read_response()
        await connection.aclose()
    assert invited.status_code == 100
    assert response.status_code == 200, response


async def test_h2c_upgrade_switches_to_http2(proxy: Proxy) -> None:
    """`Upgrade: h2c` without a body: 101, then the server speaks HTTP/2 (its SETTINGS frame)."""
    request = (b"GET /healthz HTTP/1.1\r\n" + HOST + b"connection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\n"
               b"http2-settings: AAMAAABkAAQAAP__\r\n\r\n")
    with trio.fail_after(5):
        connection = await RawConnection.open(proxy)
        await connection.send(request)
        switching = await connection.read_response()
        while len(connection.buffer) < 9:
            assert await connection.fill()
        await connection.aclose()
    assert switching.status_code == 101 and switching.headers["upgrade"] == "h2c"
    assert connection.buffer[3] == 0x4  # an HTTP/2 frame header: type SETTINGS


@pytest.mark.parametrize("body_apart", [False, True], ids=["body-with-head", "body-in-its-own-write"])
async def test_h2c_upgrade_with_a_body_is_served_over_http_1_1(proxy: Proxy, body_apart: bool) -> None:
    """As Hypercorn does: the upgrade is ignored when the request has a body."""
    body = dumps(chat_body())
    request = raw_request("POST", CHAT, body, headers={
        "connection": "Upgrade, HTTP2-Settings", "upgrade": "h2c", "http2-settings": "AAMAAABkAAQAAP__"})
    with trio.fail_after(5):
        connection = await RawConnection.open(proxy)
        if body_apart:
            await connection.send(request.removesuffix(body))
            await trio.testing.wait_all_tasks_blocked()  # the proxy has read the head alone
        await connection.send(body if body_apart else request)
        response = await connection.read_response()
        await connection.aclose()
    assert response.status_code == 200 and response.version == "HTTP/1.1", response


# --------------------------------------------------------------------------- writes per answer

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


async def writes_for(request: bytes, app: App) -> list[bytes]:
    """What Http11Protocol writes to the socket, write by write, while `app` answers `request`."""
    writes: list[bytes] = []

    async def send(event: Event) -> None:
        if isinstance(event, RawData):
            writes.append(event.data)

    with trio.fail_after(5):
        async with TaskGroup() as task_group:
            protocol = Http11Protocol(ASGIWrapper(app), Config(), WorkerContext(None), task_group,
                                      ConnectionState({}), False, ("127.0.0.1", 1), ("127.0.0.1", 2), send)
            await protocol.handle(RawData(request))
    return writes


@pytest.mark.parametrize(("headers", "framed"), [
    pytest.param([(b"content-length", b"2")], b"\r\n\r\nok", id="content-length"),
    pytest.param([], b"transfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", id="chunked"),
])
async def test_a_small_answer_is_one_write(headers: list[tuple[bytes, bytes]], framed: bytes) -> None:
    """Head, body and end in one write when the app sends its body in one message."""
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    writes = await writes_for(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", app)
    assert len(writes) == 1, writes
    assert writes[0].startswith(b"HTTP/1.1 200 \r\n") and writes[0].endswith(framed), writes


async def test_a_stream_head_leaves_with_its_first_chunk_and_ends_chunked() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for part in (b"a", b"bc"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    writes = await writes_for(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}", app)
    assert len(writes) == 3, writes
    assert b"transfer-encoding: chunked\r\n" in writes[0] and writes[0].endswith(b"\r\n\r\n1\r\na\r\n")
    assert writes[1:] == [b"2\r\nbc\r\n", b"0\r\n\r\n"]


async def test_an_answer_that_ends_without_a_body_message_still_sends_its_head() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    writes = await writes_for(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", app)
    assert len(writes) == 1 and writes[0].startswith(b"HTTP/1.1 204 \r\n"), writes
