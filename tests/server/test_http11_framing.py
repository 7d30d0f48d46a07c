"""Request framing at the client-facing edge (server/http11.py, on llhttp) as an attacker meets
it: what llhttp leaves to the server (the body of a head it stops at, trailers it keeps whole)
is framed and bounded as h11 framed and bounded it."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from support.fault_server import dumps
from support.proxies import Proxy
from support.raw_http import RawConnection, answer_then_close, raw_request
from support.robustness import CHAT, assert_healthy, chat_body


def healthz(request_id: str, *, close: bool = False) -> bytes:
    return raw_request("GET", "/healthz", headers={"x-request-id": request_id}, close=close)


async def answers_until_closed(proxy: Proxy, data: bytes) -> list[tuple[int, str | None]]:
    """(status, x-request-id) of every answer to `data`, read until the proxy closes."""
    answers = []
    with trio.fail_after(5):
        connection = await RawConnection.open(proxy)
        await connection.send(data)
        while True:
            try:
                response = await connection.read_response()
            except EOFError:
                break
            answers.append((response.status_code, response.headers.get("x-request-id")))
        await connection.aclose()
    return answers


async def test_the_body_of_a_connect_request_is_never_served_as_a_request(proxy: Proxy) -> None:
    """llhttp stops at a CONNECT's head and leaves what follows as another protocol's bytes; as
    h11 did, the server reads its Content-Length as its body, never as a request behind it."""
    smuggled = healthz("smuggled")
    connect = (b"CONNECT 127.0.0.1:80 HTTP/1.1\r\nhost: 127.0.0.1\r\nx-request-id: connect\r\n"
               b"content-length: %d\r\n\r\n" % len(smuggled))
    answers = await answers_until_closed(proxy, connect + smuggled + healthz("after", close=True))
    assert "smuggled" not in [request_id for _, request_id in answers], answers
    assert answers[0][1] == "connect" and 400 <= answers[0][0] < 500, answers
    assert answers[1:] in ([], [(200, "after")]), answers


@pytest.mark.parametrize("trailers", [
    pytest.param(b"x-filler: " + b"a" * 200_000, id="one-endless-trailer"),
    pytest.param(b"x-t: a\r\n" * 25_000, id="trailers-without-end"),
])
async def test_trailers_that_never_end_are_a_431(proxy: Proxy, caplog: pytest.LogCaptureFixture,
                                                 trailers: bytes) -> None:
    """A chunked body's trailers are bounded as the head is (h11_max_incomplete_size): llhttp
    keeps a trailer whole until its end, so bytes sent for as long as the client likes must not
    be read (and kept) for as long as it sends them."""
    body = dumps(chat_body())
    request = raw_request("POST", CHAT, b"%x\r\n%b\r\n0\r\n" % (len(body), body) + trailers,
                          headers={"transfer-encoding": "chunked"})
    response, _ = await answer_then_close(proxy, request)
    assert response.status_code == 431, response
    await assert_healthy(proxy, caplog)


@pytest.mark.parametrize("method", [b"get", b"Get"])
async def test_a_method_in_lower_case_is_served_upper_cased_as_hypercorn_served_it(proxy: Proxy, method: bytes) -> None:
    """llhttp knows methods in capitals only; Hypercorn gave the app h11's method upper-cased."""
    answers = await answers_until_closed(proxy, method + b" /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                                         b"x-request-id: lower\r\nconnection: close\r\n\r\n")
    assert answers == [(200, "lower")]


async def test_the_body_of_a_last_request_llhttp_stops_at_is_read_when_it_comes_later(proxy: Proxy) -> None:
    """An Upgrade head that is also the connection's last (`connection: upgrade, close`): its
    body, sent after the head, is still read and the request served (not left to time out)."""
    body = dumps(chat_body())
    head = raw_request("POST", CHAT, headers={"connection": "upgrade, close", "upgrade": "foo",
                                              "content-length": str(len(body))})
    with trio.fail_after(5):
        connection = await RawConnection.open(proxy)
        await connection.send(head)
        await trio.testing.wait_all_tasks_blocked()  # the head is read on its own
        await connection.send(body)
        response = await connection.read_response()
        await connection.aclose()
    assert response.status_code == 200, response
