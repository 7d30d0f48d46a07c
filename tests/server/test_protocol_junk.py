"""What breaks HTTP itself, over raw sockets: protocol junk is refused by the HTTP layer (Hypercorn,
before the application sees it) with a 4xx and a closed connection; unknown paths and wrong
methods get OpenAI's shape; HTTP/1.0 and pipelined requests are answered in order."""

from __future__ import annotations

import pytest
import trio

from support.chat import stream_text
from support.fault_server import dumps
from support.proxies import Proxy
from support.raw_http import RawConnection, exchange, raw_request
from support.robustness import (
    CHAT, MODEL, PROTOCOL_JUNK, assert_healthy, assert_openai_error, chat_body, sse_events,
)
from trioproxy.testing.emulator import completion_text


@pytest.mark.parametrize("data", PROTOCOL_JUNK)
async def test_protocol_junk_is_refused_and_closed(proxy: Proxy, caplog: pytest.LogCaptureFixture, data: bytes) -> None:
    """Bytes that are not acceptable HTTP/1.1 are refused by the HTTP layer with a 4xx (or
    simply closed) and the connection ends; the proxy does not notice otherwise."""
    with trio.fail_after(5):
        connection = await RawConnection.open(proxy)
        await connection.send(data)
        assert await connection.closed_within(3), "connection left open after junk"
        await connection.aclose()
    if connection.buffer:
        status = int(bytes(connection.buffer).split(b" ", 2)[1])
        assert 400 <= status < 500 or status == 501, bytes(connection.buffer[:300])
    await assert_healthy(proxy, caplog)


async def test_large_but_acceptable_headers_are_served(proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    """Headers below the HTTP layer's limit (a 12 KB x-request-id, 8 KB of odd bytes) are fine;
    an id that long is replaced by a new one rather than written into every log line."""
    request_id = "r" * 12_000
    with trio.fail_after(5):
        response = await exchange(proxy, raw_request("POST", CHAT, dumps(chat_body()), headers={
            "x-request-id": request_id, "x-odd": "\u00e9\u00ff" * 2000}))
    assert response.status_code == 200, response.text
    assert len(response.headers["x-request-id"]) == 16
    await assert_healthy(proxy, caplog)


# --------------------------------------------------------------------------- paths and methods


@pytest.mark.parametrize(
    "target",
    [
        "/", "/v1", "/v1/", "/v2/chat/completions", "/v1/chat/completions/", "//v1/chat/completions",
        "/v1/chat/completions/../completions", "/v1/completions", "/v1/embeddings", "/V1/CHAT/COMPLETIONS",
"/%00%ff%fe", "/" + "x" * 8000, "*", "http://evil.example/nothing-here",
    ],
)
async def test_unknown_path_is_404(proxy: Proxy, caplog: pytest.LogCaptureFixture, target: str) -> None:
    """Any path the proxy does not serve gets 404 in OpenAI's shape, whatever its bytes."""
    method = "OPTIONS" if target == "*" else "POST"
    response = await exchange(proxy, raw_request(method, target, dumps(chat_body())))
    assert_openai_error(response, (404, 405))
    if target not in ("*", "/"):  # `/` is the dashboard's page: POST there is 405
        assert response.status_code == 404
    await assert_healthy(proxy, caplog)


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", CHAT), ("PUT", CHAT), ("PATCH", CHAT), ("DELETE", CHAT), ("OPTIONS", CHAT), ("TRACE", CHAT),
        ("BREW", CHAT), ("HEAD", CHAT), ("POST", "/v1/models"), ("DELETE", "/v1/models"),
        ("POST", f"/v1/models/{MODEL}"), ("POST", "/healthz"), ("PUT", "/healthz"),
    ],
)
async def test_wrong_method_is_405(proxy: Proxy, caplog: pytest.LogCaptureFixture, method: str, target: str) -> None:
    """A known path with a wrong (or invented) method is 405 with Allow, in OpenAI's shape."""
    head = method == "HEAD"
    response = await exchange(proxy, raw_request(method, target, None if head else dumps(chat_body())), head=head)
    assert response.status_code == 405, response
    assert response.headers.get("allow")
    if not head:
        assert_openai_error(response, 405, "method_not_allowed")
    await assert_healthy(proxy, caplog)


async def test_websocket_upgrade_is_refused_with_a_4xx(proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    """A WebSocket handshake is refused with a 4xx (the proxy speaks no WebSocket), not a 500."""
    response = await exchange(proxy, raw_request("GET", "/v1/chat/completions", headers={
        "upgrade": "websocket", "connection": "upgrade", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        "sec-websocket-version": "13"}, close=False))
    assert 400 <= response.status_code < 500, response
    await assert_healthy(proxy, caplog)


# --------------------------------------------------------------------------- HTTP/1.0, pipelining


async def test_http_1_0_requests(proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    """HTTP/1.0 clients: health, a completion, a bad body and a stream all work and close."""
    health = await exchange(proxy, raw_request("GET", "/healthz", version="HTTP/1.0"))
    assert health.status_code == 200 and health.json()["status"] == "ok"
    plain = await exchange(proxy, raw_request("POST", CHAT, dumps(chat_body()), version="HTTP/1.0"))
    assert plain.status_code == 200 and plain.json()["model"] == MODEL
    bad = await exchange(proxy, raw_request("POST", CHAT, b"{oops", version="HTTP/1.0"))
    assert_openai_error(bad, 400, "invalid_json")
    streamed = await exchange(proxy, raw_request("POST", CHAT, dumps(chat_body(stream=True)), version="HTTP/1.0"))
    assert streamed.status_code == 200
    assert "chunked" not in streamed.headers.get("transfer-encoding", "")  # HTTP/1.0 has no chunking
    events = sse_events(streamed.body)
    assert events[-1] == "[DONE]" and stream_text(events) == completion_text("cerebras")
    await assert_healthy(proxy, caplog)


async def test_pipelined_requests_are_answered_in_order(proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    """Five requests written at once on one connection get five answers in order."""
    requests = [
        raw_request("GET", "/healthz", close=False, headers={"x-request-id": "p1"}),
        raw_request("POST", CHAT, b"{broken", close=False, headers={"x-request-id": "p2"}),
        raw_request("POST", CHAT, dumps(chat_body()), close=False, headers={"x-request-id": "p3"}),
        raw_request("POST", CHAT, dumps(chat_body(stream=True)), close=False, headers={"x-request-id": "p4"}),
        raw_request("GET", "/nowhere", close=True, headers={"x-request-id": "p5"}),
    ]
    with trio.fail_after(10):
        connection = await RawConnection.open(proxy)
        await connection.send(b"".join(requests))
        responses = [await connection.read_response() for _ in requests]
        assert await connection.closed_within(3)
        await connection.aclose()
    assert [r.headers["x-request-id"] for r in responses] == ["p1", "p2", "p3", "p4", "p5"]
    assert responses[0].status_code == 200
    assert_openai_error(responses[1], 400, "invalid_json")
    assert responses[2].status_code == 200 and responses[2].json()["model"] == MODEL
    assert responses[3].status_code == 200 and sse_events(responses[3].body)[-1] == "[DONE]"
    assert_openai_error(responses[4], 404)
    await assert_healthy(proxy, caplog)
