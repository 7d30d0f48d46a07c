"""What nothing may get through: bodies nested too deep, failures that leave quota booked, echoes
of huge names, malformed tools, and a provider refusing the proxy's own key.

Every door is driven through real HTTP against the emulated providers; the ledger is read back
through /v1/status, the counts through /metrics.
"""

import functools
import json
import logging
import socket
from typing import Any

import attrs
import httpx
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from support.chat import assert_openai_error
from support.fault_server import HELLO, ROLE, send_then_close, send_then_hold, start_fault_server
from support.proxies import Providers, Proxy, StartProxy, proxy_config
from support.raw_http import SSE_HEAD, json_head
from support.reload import reloadable_proxy
from trioproxy.doors.body import MAX_NESTING
from trioproxy.providers.upstream import OpenAnswer, Upstream
from trioproxy.testing.emulator import Faults

MODEL = "qwen-3-coder"
USER = [{"role": "user", "content": "Say hello."}]
LIMITED = {"requests_per_day": 1_000, "tokens_per_day": 10_000_000}


def nested_body(body: Any, stream: bool, levels: int) -> bytes:
    """`body` with `levels` objects nested in one another ({"a": {"a": ... 1}}) as its value,
    written as text: too deep for `json.dumps` to write."""
    return json.dumps(body("VALUE", stream)).encode().replace(b'"VALUE"', b'{"a":' * levels + b"1" + b"}" * levels)


def depth(raw: bytes) -> int:
    """How deep containers nest in `raw` (whose strings hold no brackets): its own count, not the proxy's."""
    deepest = level = 0
    for byte in raw:
        level += byte in b"{[" or -(byte in b"}]")
        deepest = max(deepest, level)
    return deepest


# Where each door carries a client's JSON schema or free JSON, as (path, body around `value`).
PLACES: dict[str, tuple[str, Any]] = {
    "chat tool parameters": ("/v1/chat/completions", lambda value, stream: {
        "model": MODEL, "messages": USER, "stream": stream,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "x": value}}}]}),
    "chat unknown field": ("/v1/chat/completions", lambda value, stream: {
        "model": MODEL, "messages": USER, "stream": stream, "x_extra": value}),
    "responses tool parameters": ("/v1/responses", lambda value, stream: {
        "model": MODEL, "input": "Say hello.", "stream": stream, "store": False,
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object", "x": value}}]}),
    "responses text format schema": ("/v1/responses", lambda value, stream: {
        "model": MODEL, "input": "Say hello.", "stream": stream, "store": False,
        "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object", "x": value}}}}),
    "messages input_schema": ("/v1/messages", lambda value, stream: {
        "model": MODEL, "max_tokens": 64, "messages": USER, "stream": stream,
        "tools": [{"name": "f", "input_schema": {"type": "object", "x": value}}]}),
    "messages content": ("/v1/messages", lambda value, stream: {
        "model": MODEL, "max_tokens": 64, "stream": stream,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "x": value}]}]}),
    "count_tokens": ("/v1/messages/count_tokens", lambda value, stream: {
        "model": MODEL, "messages": USER, "tools": [{"name": "f", "input_schema": {"type": "object", "x": value}}]}),
    "gemini functionDeclarations": (f"/v1beta/models/{MODEL}:generateContent", lambda value, stream: {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "tools": [{"functionDeclarations": [{"name": "f", "parameters": {"type": "object", "x": value}}]}]}),
}


def is_door_error(path: str, document: Any) -> bool:
    if path.startswith("/v1beta"):
        return document["error"]["status"] == "INVALID_ARGUMENT"
    if path.startswith("/v1/messages"):
        return document.get("type") == "error" and document["error"]["type"] == "invalid_request_error"
    return assert_openai_error(document)["code"] == "invalid_json"


async def cerebras_booked(client: httpx.AsyncClient) -> tuple[int, int]:
    account = (await client.get(str(client.base_url).rstrip("/").removesuffix("/v1") + "/v1/status")).json()["providers"][0]["accounts"]["cerebras"]
    return account["rpd"]["used"], account["tpd"]["used"]


async def test_nesting_past_the_limit_is_a_400_on_every_door_and_books_nothing(start_proxy: StartProxy) -> None:
    """Depths around the limit and around the interpreter's (where re-encoding used to fail
    after the reservation) on every door, streamed and not: past the limit a 400 in the door's
    shape, and the ledger shows nothing booked; at the limit the request is served."""
    proxy = await start_proxy(cerebras=LIMITED)
    async with httpx.AsyncClient(base_url=root(proxy), timeout=20) as client:
        for name, (path, body) in PLACES.items():
            for stream in (False, True):
                base = depth(nested_body(body, stream, 100)) - 100
                for total in (MAX_NESTING + 1, MAX_NESTING + 2, 974, 975, 980):
                    raw = nested_body(body, stream, total - base)
                    assert depth(raw) == total
                    with trio.fail_after(10):
                        response = await client.post(path, content=raw, headers={"content-type": "application/json"})
                    assert response.status_code == 400, (name, stream, total, response.text[:300])
                    assert is_door_error(path, response.json()), (name, response.text[:300])
        assert await cerebras_booked(client) == (0, 0)
        for name, (path, body) in PLACES.items():
            base = depth(nested_body(body, False, 100)) - 100
            raw = nested_body(body, False, MAX_NESTING - base)
            assert depth(raw) == MAX_NESTING
            response = await client.post(path, content=raw, headers={"content-type": "application/json"})
            assert response.status_code == 200, (name, response.text[:300])


@pytest.mark.parametrize("stream", [False, True])
async def test_a_failure_of_ours_after_the_reservation_is_a_500_and_settles_the_quota(
    start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, stream: bool
) -> None:
    """A bug between booking and sending: the client gets a 500 in its door's shape naming the
    request id, the log one traceback, /metrics the status 500; the booking is given back."""

    async def broken(self: Upstream, body: dict[str, Any], api_key: str) -> OpenAnswer:
        raise RuntimeError("a bug after the reservation")

    monkeypatch.setattr(Upstream, "open_chat", broken)
    proxy = await start_proxy(cerebras=LIMITED)
    caplog.set_level(logging.INFO)
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=10) as client:
        for path, body in (("/chat/completions", {"model": MODEL, "messages": USER, "stream": stream}),
                           ("/messages", {"model": MODEL, "max_tokens": 64, "messages": USER, "stream": stream})):
            with trio.fail_after(10):
                response = await client.post(path, json=body, headers={"x-request-id": "req-bug-1"})
            assert response.status_code == 500, response.text
            assert response.headers["x-request-id"] == "req-bug-1"
            document = response.json()
            message = document["error"]["message"]
            assert "req-bug-1" in message and "a bug" not in message
            if path == "/messages":
                assert document["type"] == "error" and document["error"]["type"] == "api_error"
            else:
                assert assert_openai_error(document)["code"] == "internal_error"
        rpd, tpd = await cerebras_booked(client)
        assert (rpd, tpd) == (2, 0)  # the requests counted, their tokens given back
        metrics = (await client.get(proxy.base_url.removesuffix("/v1") + "/metrics")).text
    assert 'status="500"' in metrics and 'status="0"' not in metrics
    tracebacks = [r for r in caplog.records
                  if r.exc_info and "a bug after the reservation" in logging.Formatter().formatException(r.exc_info)]
    assert len(tracebacks) == 2, [r.getMessage() for r in caplog.records]


async def test_a_failure_of_ours_mid_stream_ends_the_stream_with_the_door_error_event(
    start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trioproxy.doors.chat import ChatExchange

    calls = 0
    original = ChatExchange.stream_events

    def breaks_on_the_second(self: ChatExchange, documents: list[dict[str, Any]]) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("a bug mid-stream")
        return original(self, documents)

    monkeypatch.setattr(ChatExchange, "stream_events", breaks_on_the_second)
    proxy = await start_proxy(cerebras=LIMITED)
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=10) as client:
        with trio.fail_after(10):
            response = await client.post("/chat/completions", json={"model": MODEL, "messages": USER, "stream": True})
        assert response.status_code == 200
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["error"]["code"] == "internal_error"
        # Settled from what was spent, not the whole budget, once the stream is closed behind the client.
        with trio.fail_after(5):
            while (booked := await cerebras_booked(client))[1] > 1_000:
                await trio.sleep(0.01)
        assert booked[0] == 1


async def test_a_huge_model_name_is_not_echoed_whole(proxy: Proxy) -> None:
    name = "m" * 5_000_000
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=20) as client:
        for path, body in (("/chat/completions", {"model": name, "messages": USER}),
                           ("/messages", {"model": name, "max_tokens": 5, "messages": USER}),
                           ("/responses", {"model": name, "input": "hi"})):
            response = await client.post(path, json=body)
            assert response.status_code == 404
            assert len(response.content) < 2_000
        response = await client.post("/responses", json={"model": MODEL, "input": "hi", "k" * 100_000: 1})
        assert response.status_code == 400 and len(response.content) < 2_000


@pytest.mark.parametrize(("path", "body"), [
    ("/chat/completions", {"model": MODEL, "messages": USER, "tools": True}),
    ("/chat/completions", {"model": MODEL, "messages": USER, "tools": [1]}),
    ("/chat/completions", {"model": MODEL, "messages": USER, "tools": [{"type": "function", "function": {"name": 3}}]}),
    ("/chat/completions", {"model": MODEL, "messages": USER,
                           "tools": [{"type": "function", "function": {"name": "f", "parameters": True}}]}),
    ("/responses", {"model": MODEL, "input": "hi", "tools": True}),
    ("/responses", {"model": MODEL, "input": "hi", "tools": [{"type": "function", "name": "f", "parameters": []}]}),
    ("/messages", {"model": MODEL, "max_tokens": 5, "messages": USER, "tools": True}),
    ("/messages", {"model": MODEL, "max_tokens": 5, "messages": USER, "tools": [{"name": "f", "input_schema": 1}]}),
])
async def test_malformed_tools_are_a_400_on_every_door(providers: Providers, proxy: Proxy, path: str,
                                                        body: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=10) as client:
        response = await client.post(path, json=body)
    assert response.status_code == 400, response.text
    assert providers.cerebras.served == providers.chutes.served == 0


async def test_every_provider_refusing_its_key_is_a_provider_failure(providers: Providers, proxy: Proxy) -> None:
    """A 401 from every provider is the proxy's keys refused, not the client's: a 502 that says so."""
    for provider in (providers.cerebras, providers.chutes):
        provider.faults = Faults(status=401)
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=10) as client:
        response = await client.post("/chat/completions", json={"model": MODEL, "messages": USER})
        anthropic = await client.post("/messages", json={"model": MODEL, "max_tokens": 5, "messages": USER})
    assert response.status_code == 502, response.text
    error = assert_openai_error(response.json())
    assert error["type"] == "api_error" and error["code"] == "provider_key_refused"
    assert "trioproxy's API key" in error["message"] and "Incorrect API key provided" not in error["message"]
    assert anthropic.status_code == 502 and anthropic.json()["error"]["type"] == "api_error"


# --------------------------------------------------------------------------- web pages

DOORS = [
    ("/v1/chat/completions", {"model": MODEL, "messages": USER}),
    ("/v1/responses", {"model": MODEL, "input": "hi"}),
    ("/v1/messages", {"model": MODEL, "max_tokens": 5, "messages": USER}),
    ("/v1/messages/count_tokens", {"model": MODEL, "messages": USER}),
    (f"/v1beta/models/{MODEL}:generateContent", {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
    (f"/v1beta/models/{MODEL}:countTokens", {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
]


def root(proxy: Proxy) -> str:
    return proxy.base_url.removesuffix("/v1")


@pytest.mark.parametrize("content_type", [None, "text/plain", "text/plain;charset=UTF-8",
                                          "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])
async def test_a_post_that_is_not_declared_json_is_a_415_in_the_door_shape(
    providers: Providers, start_proxy: StartProxy, content_type: str | None
) -> None:
    """What a page may send without a CORS preflight never reaches a provider."""
    proxy = await start_proxy(cerebras=LIMITED)
    async with httpx.AsyncClient(base_url=root(proxy), timeout=10) as client:
        for path, body in DOORS:
            headers = {"content-type": content_type} if content_type else {}
            request = client.build_request("POST", path, content=json.dumps(body).encode(), headers=headers)
            request.headers.pop("content-type", None)
            if content_type is not None:
                request.headers["content-type"] = content_type
            response = await client.send(request)
            assert response.status_code == 415, (path, response.text)
            if path.startswith("/v1beta"):
                assert response.json()["error"]["code"] == 415
            elif path.startswith("/v1/messages"):
                assert response.json()["type"] == "error"
            else:
                assert assert_openai_error(response.json())["code"] == "unsupported_media_type"
        assert await cerebras_booked(client) == (0, 0)
        for content_type in ("application/json", "application/json; charset=utf-8", "Application/JSON"):
            response = await client.post(DOORS[0][0], content=json.dumps(DOORS[0][1]),
                                         headers={"content-type": content_type})
            assert response.status_code == 200, response.text
    assert providers.cerebras.served == 3


@pytest.mark.parametrize("host", ["evil.example", "evil.example:3000", "localhost.evil.example", "127.0.0.1.nip.io"])
async def test_a_host_not_allowed_reads_nothing_and_spends_nothing(
    providers: Providers, proxy: Proxy, host: str
) -> None:
    """After DNS rebinding a page is same-origin with the proxy, but it names its own host."""
    async with httpx.AsyncClient(base_url=root(proxy), timeout=10, headers={"host": host}) as client:
        for method, path in (("GET", "/v1/status"), ("GET", "/v1/models"), ("GET", "/"), ("GET", "/dashboard"),
                             ("GET", "/metrics"), ("POST", "/v1/chat/completions")):
            response = await client.request(method, path, json=DOORS[0][1])
            assert response.status_code == 403, (path, response.text)
            assert "allowed_hosts" in response.json()["error"]["message"]
            assert "data" not in response.json()
    assert providers.cerebras.served == providers.chutes.served == 0


async def test_allowed_hosts_loopback_names_and_addresses_are_served(start_proxy: StartProxy) -> None:
    proxy = await start_proxy(allowed_hosts=("proxy.lan", ".corp.example"))
    port = root(proxy).rpartition(":")[2]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", "api.localhost", "[::1]:3000", "10.1.2.3",
                 "proxy.lan", f"proxy.lan:{port}", "corp.example", "a.corp.example"):
        async with httpx.AsyncClient(base_url=root(proxy), timeout=10, headers={"host": host}) as client:
            assert (await client.get("/v1/models")).status_code == 200, host
    async with httpx.AsyncClient(base_url=root(proxy), timeout=10, headers={"host": "proxy.lan.evil"}) as client:
        assert (await client.get("/v1/models")).status_code == 403


async def test_a_page_of_another_origin_is_refused_and_gets_no_cors_headers(providers: Providers, proxy: Proxy) -> None:
    port = root(proxy).rpartition(":")[2]
    async with httpx.AsyncClient(base_url=root(proxy), timeout=10) as client:
        for origin in ("http://evil.example", f"http://127.0.0.1:{int(port) + 1}", "null", f"https://localhost:{port}"):
            for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/status"), ("OPTIONS", "/v1/chat/completions")):
                response = await client.request(method, path, json=DOORS[0][1], headers={"origin": origin})
                assert response.status_code == 403, (origin, path, response.text)
                assert not any(name.startswith("access-control-") for name in response.headers)
        # The proxy's own pages (the dashboard) send its own origin.
        own = await client.post("/v1/chat/completions", json=DOORS[0][1], headers={"origin": f"http://127.0.0.1:{port}"})
        assert own.status_code == 200
        assert not any(name.startswith("access-control-") for name in own.headers)
    assert providers.cerebras.served == 1


async def test_allowed_origins_get_cors_headers_and_a_preflight(providers: Providers, start_proxy: StartProxy) -> None:
    proxy = await start_proxy(allowed_origins=("http://app.example", "vscode-webview://*"))
    async with httpx.AsyncClient(base_url=root(proxy), timeout=10) as client:
        for origin in ("http://app.example", "vscode-webview://abc123"):
            preflight = await client.options("/v1/chat/completions", headers={
                "origin": origin, "access-control-request-method": "POST",
                "access-control-request-headers": "authorization, content-type"})
            assert preflight.status_code == 204
            assert preflight.headers["access-control-allow-origin"] == origin
            assert "POST" in preflight.headers["access-control-allow-methods"]
            assert preflight.headers["access-control-allow-headers"] == "authorization, content-type"
            response = await client.post("/v1/chat/completions", json=DOORS[0][1], headers={"origin": origin})
            assert response.status_code == 200
            assert response.headers["access-control-allow-origin"] == origin
        refused = await client.post("/v1/chat/completions", json=DOORS[0][1], headers={"origin": "http://other.example"})
        assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers


# --------------------------------------------------------------------------- the HTTP edge

AMBIGUOUS = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
             b"content-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n")


async def read_all(stream: trio.SocketStream, seconds: float = 5) -> bytes:
    data = b""
    with trio.fail_after(seconds):
        try:
            while chunk := await stream.receive_some(65536):
                data += chunk
        except trio.BrokenResourceError:  # a reset: what arrived before it is what the client got
            pass
    return data


def port_of(proxy: Proxy) -> int:
    return int(root(proxy).rpartition(":")[2])


async def test_a_refused_framing_answer_arrives_whole_with_a_pipelined_request_behind_it(proxy: Proxy) -> None:
    """The 400 for Content-Length plus Transfer-Encoding, then the close: the pipelined bytes that
    arrive meanwhile neither cut the answer short nor reset it away."""
    for attempt in range(20):
        stream = await trio.open_tcp_stream("127.0.0.1", port_of(proxy))
        await stream.send_all(AMBIGUOUS)
        await trio.sleep(0.002)  # the pipelined bytes arrive after the proxy read the request
        try:
            await stream.send_all(b"GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n" * 50)
        except trio.BrokenResourceError:
            pass
        data = await read_all(stream)
        await stream.aclose()
        assert data.startswith(b"HTTP/1.1 400 ") and data.endswith(b"}"), (attempt, data[:300])
        assert b"ambiguous_framing" in data and data.count(b"HTTP/1.1 ") == 1


@pytest.mark.parametrize("size", [17 * 1024, 40 * 1024, 63 * 1024])
async def test_a_request_head_over_16_kib_is_a_431(proxy: Proxy, size: int) -> None:
    """README: a request line and headers over 16 KiB get a 431, however they arrive."""
    stream = await trio.open_tcp_stream("127.0.0.1", port_of(proxy))
    await stream.send_all(b"GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: " + b"a" * size + b"\r\n\r\n")
    data = await read_all(stream)
    assert data.startswith(b"HTTP/1.1 431 "), data[:200]
    stream = await trio.open_tcp_stream("127.0.0.1", port_of(proxy))
    await stream.send_all(b"GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\nx-big: "
                          + b"a" * 15_000 + b"\r\n\r\n")
    assert (await read_all(stream)).startswith(b"HTTP/1.1 200 ")


async def test_a_reload_that_moves_host_or_port_says_it_needs_a_restart(
    providers: Providers, caplog: pytest.LogCaptureFixture
) -> None:
    """The socket stays where it was bound: the log says so, and says nothing of the new address
    as if the proxy listened there (no "LISTENING ON 0.0.0.0 WITHOUT CLIENT KEYS")."""

    caplog.set_level(logging.INFO)
    config = proxy_config(providers)
    async with reloadable_proxy(config) as (proxy, send_reloads):
        await send_reloads.send(attrs.evolve(config, host="0.0.0.0", port=3999))
        with trio.fail_after(5):
            while "configuration reloaded" not in caplog.text:
                await trio.sleep(0.01)
        async with httpx.AsyncClient(base_url=proxy.base_url, timeout=10) as client:
            assert (await client.get("/models")).status_code == 200
    reloaded = next(r.getMessage() for r in caplog.records if "configuration reloaded" in r.getMessage())
    assert "need a restart: still listening on 127.0.0.1:0, not 0.0.0.0:3999" in reloaded
    assert any("only after a restart" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert "LISTENING ON 0.0.0.0" not in caplog.text


# --------------------------------------------------------------------------- answers bounded

BOUND = 20_000


def big_answer(size: int) -> bytes:
    return json.dumps({"id": "x", "object": "chat.completion", "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "y" * size}, "finish_reason": "stop"}]}).encode()


@pytest.mark.parametrize("declared", [True, False])
async def test_an_answer_over_max_answer_bytes_fails_over_then_is_a_502(
    nursery: trio.Nursery, providers: Providers, start_proxy: StartProxy, declared: bool
) -> None:
    """A provider's 200 larger than the bound is not read whole: the next provider serves, and
    when none can, the client gets a 502 in its door's shape."""

    body = big_answer(BOUND * 3)
    head = json_head(200, len(body)) if declared else (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n")
    server = await start_fault_server(nursery, lambda s: send_then_close(s, head, body))
    proxy = await start_proxy(max_answer_bytes=BOUND, cerebras={"base_url": server.url})
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=10) as client:
        with trio.fail_after(10):
            served = await client.post("/chat/completions", json={"model": MODEL, "messages": USER})
        assert served.status_code == 200 and providers.chutes.served == 1
        proxy2 = await start_proxy(max_answer_bytes=BOUND, cerebras={"base_url": server.url},
                                   chutes={"base_url": server.url})
        with trio.fail_after(10):
            refused = await client.post(proxy2.base_url + "/messages",
                                        json={"model": MODEL, "max_tokens": 5, "messages": USER})
    assert refused.status_code == 502
    assert refused.json()["type"] == "error" and f"limit of {BOUND} bytes" in refused.json()["error"]["message"]


async def test_a_stream_event_over_max_stream_event_bytes_ends_the_stream(
    nursery: trio.Nursery, providers: Providers, start_proxy: StartProxy
) -> None:
    """An event that never ends (no blank line) is not buffered without bound (continuation off,
    so the failure reaches the client)."""

    endless = b'data: {"choices": [{"index": 0, "delta": {"content": "' + b"z" * (BOUND * 3)
    server = await start_fault_server(nursery, lambda s: send_then_hold(s, SSE_HEAD, ROLE, HELLO, endless))
    proxy = await start_proxy(max_stream_event_bytes=BOUND, cerebras={"base_url": server.url}, max_continuations=0)
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=10) as client:
        with trio.fail_after(10):
            response = await client.post("/chat/completions", json={"model": MODEL, "messages": USER, "stream": True})
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert f"limit of {BOUND} bytes" in json.loads(events[-2])["error"]["message"]
    with trio.fail_after(5):
        while server.open:  # the provider's connection is closed behind the failure
            await trio.sleep(0.01)


# --------------------------------------------------------------------------- a client that stops reading


async def test_a_client_that_stops_reading_a_stream_loses_it_and_the_provider_stream_closes(
    nursery: trio.Nursery, providers: Providers, start_proxy: StartProxy
) -> None:
    """Hypercorn's writes wait, unbounded and uncancellable, for a client whose socket takes no
    bytes; bytes unacknowledged for client_stall_timeout_ms make the kernel abort the connection
    (TCP_USER_TIMEOUT), and the provider's stream behind it is closed. (Real time: the kernel's
    socket buffers must fill first.)"""

    chunk = json.dumps({"id": "c", "object": "chat.completion.chunk", "model": "m",
                        "choices": [{"index": 0, "delta": {"content": "w" * 4000}}]}).encode()
    sent = 0

    async def endless(stream: trio.SocketStream) -> None:
        nonlocal sent
        await stream.send_all(SSE_HEAD + ROLE)
        for _ in range(20_000):  # 80 MB at most: far more than every buffer on the way holds
            await stream.send_all(b"data: " + chunk + b"\n\n")
            sent += 1

    server = await start_fault_server(nursery, endless)
    proxy = await start_proxy(client_stall_timeout_ms=500, cerebras={"base_url": server.url})
    client = trio.socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await client.connect(("127.0.0.1", port_of(proxy)))
    body = json.dumps({"model": MODEL, "messages": USER, "stream": True}).encode()
    await client.send(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                      b"content-length: %d\r\n\r\n%s" % (len(body), body))
    with trio.fail_after(30):
        while server.requests == 0 or server.open:  # never reading, the client holds it until cut off
            await trio.sleep(0.05)
    assert 0 < sent < 20_000
    client.close()
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=10) as http:  # still serving
        assert (await http.get("/models")).status_code == 200


async def test_a_plain_hypercorn_server_in_the_same_process_still_answers(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    """trioproxy puts its connection class into Hypercorn's modules; another Hypercorn server
    with Hypercorn's own Config (no client_stall_seconds) serves on beside it."""
    proxy = await start_proxy()

    async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"plain hypercorn"})

    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    stop = trio.Event()
    bound = await nursery.start(functools.partial(hypercorn_serve, hello, config, shutdown_trigger=stop.wait))
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.get(bound[0] + "/")
            assert (answer.status_code, answer.text) == (200, "plain hypercorn")
            assert (await http.get(proxy.base_url + "/models")).status_code == 200
    finally:
        stop.set()
