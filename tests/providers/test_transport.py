"""The lean httpx transport (trioproxy/providers/transport.py) against real servers on 127.0.0.1.

Keep-alive reuse, stale and expired idle connections, bodies cut short or left unread, timeouts,
refused connections, and TLS, both on the transport alone and through the whole proxy.
"""

import json
import ssl
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing
import trustme

from support.chat import chat, client_for, post, stream, stream_text
from support.proxies import Providers, StartProxy
from support.raw_http import answer_each, read_raw_request, serve_raw
from trioproxy.providers.transport import LeanTransport
from trioproxy.testing import emulator

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def test_sequential_requests_share_one_connection(nursery: trio.Nursery) -> None:
    url, connections = await serve_raw(nursery, partial(answer_each, [OK] * 3))
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        for _ in range(3):
            response = await client.post(url, content=b"{}")
            assert (response.status_code, response.content) == (200, b"ok")
    assert len(connections) == 1


async def test_idle_connection_closed_by_the_server_is_replaced(nursery: trio.Nursery) -> None:
    async def answer_then_close(stream: trio.SocketStream) -> None:
        await read_raw_request(stream)
        await stream.send_all(OK)  # keep-alive by the headers, but the server closes anyway

    url, connections = await serve_raw(nursery, answer_then_close)
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        assert (await client.get(url)).content == b"ok"
        await trio.testing.wait_all_tasks_blocked()  # the server's FIN has arrived
        assert (await client.get(url)).content == b"ok"
    assert len(connections) == 2


async def test_idle_connection_past_keepalive_expiry_is_not_reused(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    url, connections = await serve_raw(nursery, partial(answer_each, [OK] * 3))
    async with httpx.AsyncClient(transport=LeanTransport(keepalive_expiry=5)) as client:
        await client.get(url)
        mock_clock.jump(4)
        await client.get(url)
        assert len(connections) == 1
        mock_clock.jump(6)
        await client.get(url)
    assert len(connections) == 2


async def test_body_cut_short_raises(nursery: trio.Nursery) -> None:
    async def cut_short(stream: trio.SocketStream) -> None:
        await read_raw_request(stream)
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b")

    url, _ = await serve_raw(nursery, cut_short)
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        async with client.stream("GET", url) as response:
            with pytest.raises(httpx.RemoteProtocolError):
                await response.aread()


async def test_body_left_unread_closes_the_connection(nursery: trio.Nursery) -> None:
    unfinished = (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                  b"5\r\nfirst\r\n")  # and never the rest
    responses = iter([unfinished, OK])

    async def next_response(stream: trio.SocketStream) -> None:
        await answer_each([next(responses)], stream)

    url, connections = await serve_raw(nursery, next_response)
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        async with client.stream("GET", url) as response:
            async for part in response.aiter_raw():
                assert part == b"first"
                break
        # The first connection is mid-message, so the next request needs a new one.
        assert (await client.get(url)).content == b"ok"
    assert len(connections) == 2


async def test_chunked_body_arrives_in_parts_and_the_connection_is_reused(nursery: trio.Nursery) -> None:
    chunked = (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
               b"5\r\nfirst\r\n6\r\nsecond\r\n0\r\n\r\n")
    url, connections = await serve_raw(nursery, partial(answer_each, [chunked, OK]))
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        assert (await client.get(url)).content == b"firstsecond"
        assert (await client.get(url)).content == b"ok"
    assert len(connections) == 1


async def test_chunks_that_arrive_together_are_handed_on_as_one_piece(nursery: trio.Nursery) -> None:
    """Stream events that one network read brought leave the proxy in one write: the body's
    chunks already received come as one piece, and nothing waits for chunks still to come."""
    more = trio.Event()

    async def two_reads(stream: trio.SocketStream) -> None:
        await read_raw_request(stream)
        await stream.send_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                              b"5\r\nfirst\r\n6\r\nsecond\r\n")
        await more.wait()
        await stream.send_all(b"5\r\nthird\r\n0\r\n\r\n")

    url, _ = await serve_raw(nursery, two_reads)
    pieces: list[bytes] = []
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        async with client.stream("GET", url) as response:
            async for piece in response.aiter_raw():
                pieces.append(piece)
                more.set()
    assert pieces == [b"firstsecond", b"third"]


async def test_informational_response_is_skipped(nursery: trio.Nursery) -> None:
    url, _ = await serve_raw(nursery, partial(answer_each, [b"HTTP/1.1 100 Continue\r\n\r\n" + OK]))
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        response = await client.post(url, content=b"{}")
    assert (response.status_code, response.content) == (200, b"ok")


async def test_silent_server_raises_read_timeout(nursery: trio.Nursery, autojump_clock: object) -> None:
    async def never_answer(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    url, _ = await serve_raw(nursery, never_answer)
    async with httpx.AsyncClient(transport=LeanTransport(), timeout=30) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(url)


async def test_closed_without_answer_raises_protocol_error(nursery: trio.Nursery) -> None:
    async def close_at_once(stream: trio.SocketStream) -> None:
        await read_raw_request(stream)

    url, _ = await serve_raw(nursery, close_at_once)
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(url)


async def test_refused_connection_raises_connect_error() -> None:
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        async with httpx.AsyncClient(transport=LeanTransport()) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://127.0.0.1:{port}/")


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


def server_context(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    return context


async def test_tls_connection_is_verified_and_reused(nursery: trio.Nursery, authority: trustme.CA) -> None:
    provider = emulator.cerebras()
    url = await nursery.start(partial(emulator.serve, provider, ssl_context=server_context(authority)))
    assert url.startswith("https://")
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)
    headers = {"authorization": f"Bearer {provider.api_key}"}
    async with httpx.AsyncClient(transport=LeanTransport(ssl_context=trusting)) as client:
        for _ in range(2):
            response = await client.get(f"{url}/models", headers=headers)
            assert response.status_code == 200
            assert response.json()["data"]
    assert provider.connections == 1
    async with httpx.AsyncClient(transport=LeanTransport()) as untrusting:  # the system CAs only
        with pytest.raises(httpx.ConnectError):
            await untrusting.get(f"{url}/models", headers=headers)


async def test_proxy_reaches_providers_over_tls(
    nursery: trio.Nursery, providers: Providers, start_proxy: StartProxy,
    authority: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real providers are HTTPS; a CA bundle from SSL_CERT_FILE is honoured as httpx does."""
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    tls_url = await nursery.start(partial(emulator.serve, providers.cerebras,
                                          ssl_context=server_context(authority)))
    proxy = await start_proxy(cerebras={"base_url": tls_url})
    async with client_for(proxy) as client:
        plain = await post(client, chat())
        # The prober's first model list may still hold a connection of its own while the plain
        # request is sent: counted from here, as the connections the stream opened.
        connections = providers.cerebras.connections
        streamed = await stream(client, chat())
    assert plain.status_code == 200 and plain.json()["choices"][0]["message"]["content"]
    assert streamed.status == 200 and stream_text(streamed.events) and streamed.events[-1] == "[DONE]"
    assert (providers.cerebras.served, providers.chutes.served) == (2, 0)
    assert providers.cerebras.connections == connections  # the stream reused a connection it found


async def test_proxy_from_the_environment_carries_chat_requests(
    nursery: trio.Nursery, providers: Providers, start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With HTTP_PROXY set, chat requests leave through that proxy (httpx's client path), not
    straight to the provider (the transport-only fast path)."""
    targets: list[str] = []
    completion = json.dumps({
        "id": "chatcmpl-proxied", "object": "chat.completion", "created": 0, "model": "upstream-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "via the proxy"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }).encode()
    models = json.dumps({"object": "list", "data": [{"id": providers.cerebras.model, "object": "model"}]}).encode()

    async def forward_proxy(stream: trio.SocketStream) -> None:
        while (request := await read_raw_request(stream)) is not None:
            targets.append(request[0])
            body = models if request[0].endswith("/models") else completion
            await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                  b"content-length: %d\r\n\r\n%s" % (len(body), body))

    proxy_url, _ = await serve_raw(nursery, forward_proxy)
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy_url)
    proxy = await start_proxy()
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=10, trust_env=False) as client:
        response = await post(client, chat())
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "via the proxy"
    assert f"{providers.cerebras_url}/chat/completions" in targets  # absolute-form: a proxy request
    assert providers.cerebras.received == []


async def test_no_proxy_sends_chat_requests_straight_to_the_provider(
    nursery: trio.Nursery, providers: Providers, start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch,
) -> None:
    targets: list[str] = []

    async def forward_proxy(stream: trio.SocketStream) -> None:
        if (request := await read_raw_request(stream)) is not None:
            targets.append(request[0])

    proxy_url, _ = await serve_raw(nursery, forward_proxy)
    monkeypatch.setenv("HTTP_PROXY", proxy_url)
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    proxy = await start_proxy()
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=10, trust_env=False) as client:
        response = await post(client, chat())
    assert response.status_code == 200, response.text
    assert len(providers.cerebras.received) == 1 and targets == []
