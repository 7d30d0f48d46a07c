"""HTTP edges below the JSON: framing, request targets, and what the server answers itself."""

import json

import h11
import trio

from support.proxies import Proxy
from support.raw_http import root_of

AMBIGUOUS = (
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    b"content-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"
)


async def exchange(proxy: Proxy, raw: bytes) -> tuple[bytes, bool]:
    """Send `raw` on a fresh connection; what came back within 5 s, and whether the server closed it."""
    host, port = root_of(proxy).removeprefix("http://").rsplit(":", 1)
    received = b""
    with trio.move_on_after(5):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(raw)
            while True:
                try:
                    chunk = await stream.receive_some()
                except trio.BrokenResourceError:  # a reset closes too
                    chunk = b""
                if not chunk:
                    return received, True
                received += chunk
    return received, False


def one_response(received: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """Status, headers and body of the single response in `received`, read by h11."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(received)
    client.receive_data(b"")
    response = client.next_event()
    assert isinstance(response, h11.Response), response
    body = b""
    while isinstance(event := client.next_event(), h11.Data):
        body += event.data
    assert isinstance(event, h11.EndOfMessage)
    return response.status_code, dict(response.headers), body


async def test_content_length_with_transfer_encoding_is_refused_and_closed(proxy: Proxy) -> None:
    """RFC 9112 6.3: a 400 in OpenAI's shape and the connection closed."""
    received, closed = await exchange(proxy, AMBIGUOUS)
    status, headers, body = one_response(received)
    assert closed and status == 400 and headers[b"connection"] == b"close"
    assert json.loads(body)["error"]["code"] == "ambiguous_framing"


async def test_the_edges_guard_answers_in_the_doors_own_shape(proxy: Proxy) -> None:
    """Anthropic's path gets Anthropic's error shape, Gemini's Google's, as the app's own errors do."""
    cases = {b"/v1/messages": lambda body: (body["type"], body["error"]["type"]) == ("error", "invalid_request_error"),
             b"/v1beta/models/m:generateContent": lambda body: body["error"]["status"] == "INVALID_ARGUMENT"}
    for path, shaped in cases.items():
        received, closed = await exchange(proxy, AMBIGUOUS.replace(b"/v1/chat/completions", path))
        status, _, body = one_response(received)
        assert closed and status == 400 and shaped(json.loads(body)), (path, body)


async def test_a_request_smuggled_behind_ambiguous_framing_is_never_served(proxy: Proxy) -> None:
    """The bytes after the chunked body used to be served as a second request on the same connection."""
    received, closed = await exchange(proxy, AMBIGUOUS + b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n")
    assert closed and b'"object":"list"' not in received
    assert received.count(b"HTTP/1.1 ") <= 1  # the 400, unless the close overtook it


async def test_absolute_form_target_is_served(proxy: Proxy) -> None:
    """RFC 9112 3.2.2: a server accepts `GET http://host/path`."""
    received, _ = await exchange(proxy, f"GET {root_of(proxy)}/v1/models?x=1 HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n".encode())
    status, _, body = one_response(received)
    assert status == 200 and json.loads(body)["object"] == "list"


async def test_protocol_refusals_close_the_connection(proxy: Proxy) -> None:
    """What Hypercorn refuses itself (bad request line, header block too large, unknown transfer
    coding) gets its status and a closed connection; the body stays empty (README: HTTP edges)."""
    cases = {
        b"NOT HTTP AT ALL\r\n\r\n": 400,
        b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 70_000 + b"\r\n\r\n": 431,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\n": 501,
    }
    for raw, expected in cases.items():
        received, closed = await exchange(proxy, raw)
        status, headers, _ = one_response(received)
        assert closed and (status, headers[b"connection"]) == (expected, b"close")
