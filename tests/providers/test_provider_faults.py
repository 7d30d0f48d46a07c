"""Providers that break before or after their first byte, from a tiny raw TCP fault server (for
what the emulator cannot do: garbage bytes, SSE without `[DONE]`, invalid JSON chunks, a server
that accepts and never answers). Before the first byte the proxy fails over, or answers in
OpenAI's shape; after it, the stream is finished by the next provider or ends with an SSE error
event and `[DONE]`. No connection to a faulty provider is left open.

Every wait is bounded; provider faults use a short request_timeout_ms.
"""

from __future__ import annotations

import pytest
import trio

from support.chat import stream_text
from support.fault_server import FINISH, HELLO, ROLE, WORLD, eventually, send_then_close, start_fault_server
from support.proxies import Providers, StartProxy
from support.raw_http import SSE_HEAD
from support.robustness import (
    AFTER_FIRST_BYTE, BEFORE_FIRST_BYTE, MODEL, assert_error_document, assert_healthy, assert_openai_error,
    chat_body, chat_once, fault_config, http_client, sse_events, stream_chat,
)
from trioproxy.testing.emulator import completion_text


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("fault", list(BEFORE_FIRST_BYTE))
async def test_fault_before_first_byte_fails_over_invisibly(
    nursery: trio.Nursery, providers: Providers, start_proxy: StartProxy, caplog: pytest.LogCaptureFixture,
    fault: str, stream: bool,
) -> None:
    """Cerebras misbehaves before its first event: the client gets Chutes' answer, no error."""
    server = await start_fault_server(nursery, BEFORE_FIRST_BYTE[fault][0])
    proxy = await start_proxy(**fault_config(providers, cerebras_url=server.url))
    async with http_client(base_url=proxy.base_url, timeout=5.0) as client:
        with trio.fail_after(5):
            if stream:
                status, _, body = await stream_chat(client, chat_body())
                events = sse_events(body)
                assert status == 200, body
                assert not any(isinstance(e, dict) and "error" in e for e in events), events
                assert stream_text(events) == completion_text("chutes") and events[-1] == "[DONE]"
            else:
                response = await client.post("/chat/completions", json=chat_body())
                assert response.status_code == 200, response.text
                assert response.json()["choices"][0]["message"]["content"] == completion_text("chutes")
    assert server.requests == 1
    assert await eventually(lambda: server.open == 0), "the proxy kept a connection to the faulty provider"
    server.healed = True
    await assert_healthy(proxy, caplog)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("fault", list(BEFORE_FIRST_BYTE))
async def test_fault_at_every_provider_gives_an_openai_error(
    nursery: trio.Nursery, providers: Providers, start_proxy: StartProxy, caplog: pytest.LogCaptureFixture,
    fault: str, stream: bool,
) -> None:
    """Both providers misbehave before any byte: the client gets OpenAI's error shape (JSON,
    not SSE, even for a stream) with 502, or 504 when the providers never answered."""
    behaviour, (plain_status, stream_status) = BEFORE_FIRST_BYTE[fault]
    server = await start_fault_server(nursery, behaviour)
    proxy = await start_proxy(**fault_config(providers, cerebras_url=server.url, chutes_url=server.url))
    response = await chat_once(proxy, stream)
    assert_openai_error(response, stream_status if stream else plain_status)
    assert server.requests == 2
    assert await eventually(lambda: server.open == 0), "the proxy kept a connection to a faulty provider"
    server.healed = True
    await assert_healthy(proxy, caplog)


@pytest.mark.parametrize("fault", list(AFTER_FIRST_BYTE))
async def test_fault_after_first_byte_ends_stream_with_error_event_and_done(
    nursery: trio.Nursery, providers: Providers, start_proxy: StartProxy, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    """Cerebras's stream breaks after the client got bytes and continuation is off: what arrived
    is relayed, then an SSE error event in OpenAI's shape and `data: [DONE]`; never a hang, never
    a silent truncation."""
    server = await start_fault_server(nursery, AFTER_FIRST_BYTE[fault])
    proxy = await start_proxy(max_continuations=0, **fault_config(providers, cerebras_url=server.url))
    async with http_client(base_url=proxy.base_url, timeout=5.0) as client:
        status, headers, body = await stream_chat(client, chat_body())
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = sse_events(body)
    assert events[0]["model"] == MODEL and events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert stream_text(events).startswith("Hello")
    assert events[-1] == "[DONE]", events
    assert isinstance(events[-2], dict) and "error" in events[-2], f"no error event before [DONE]: {events}"
    assert_error_document(events[-2])
    assert providers.chutes.received == []
    assert await eventually(lambda: server.open == 0), "the proxy kept the broken stream's connection"
    server.healed = True
    await assert_healthy(proxy, caplog)


@pytest.mark.parametrize("fault", list(AFTER_FIRST_BYTE))
async def test_fault_after_first_byte_is_finished_by_the_next_provider(
    nursery: trio.Nursery, providers: Providers, start_proxy: StartProxy, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    """The same breaks with continuation on (restart): Chutes, answering the same text, finishes
    the answer; the client sees one whole answer and no error."""
    providers.chutes.speaks_as = "cerebras"
    server = await start_fault_server(nursery, AFTER_FIRST_BYTE[fault])
    proxy = await start_proxy(**fault_config(providers, cerebras_url=server.url))
    async with http_client(base_url=proxy.base_url, timeout=5.0) as client:
        with trio.fail_after(5):
            status, _, body = await stream_chat(client, chat_body())
    events = sse_events(body)
    assert status == 200 and events[-1] == "[DONE]"
    assert not any(isinstance(e, dict) and "error" in e for e in events), events
    assert stream_text(events) == completion_text("cerebras")
    assert len(providers.chutes.received) == 1
    assert await eventually(lambda: server.open == 0), "the proxy kept the broken stream's connection"
    server.healed = True
    await assert_healthy(proxy, caplog)


# What a provider sends after its SSE head, and the text the client reads from the proxy's stream.
SSE_READINGS: dict[str, tuple[tuple[bytes, ...], str]] = {
    # It finishes its answer (finish_reason) but closes without `[DONE]`: the client still gets
    # the whole answer and a `[DONE]`.
    "no-done-after-finish": ((ROLE, HELLO, WORLD, FINISH), "Hello world"),
    # Text that is not valid UTF-8 is read with U+FFFD for the invalid bytes, not refused; a
    # `[DONE]` with blanks around it still ends the stream.
    "invalid-utf8": ((ROLE, HELLO.replace(b"Hello", b"Hel\xfflo"), WORLD, FINISH, b"data:  [DONE] \n\n"),
                     "Hel\ufffdlo world"),
    # Comments and `event:`/`id:`/`retry:` lines carry nothing; `data:` with or without its
    # space, and an event's several `data:` lines joined by newlines, are the event's data.
    "sse-fields": ((b": keep-alive\n\n", ROLE, b"event: chunk\nid: 7\n" + HELLO.replace(b'"choices": ', b'"choices":\ndata: '),
                    b"retry: 100\n\n", WORLD.replace(b"data: ", b"data:"), FINISH, b"data: [DONE]\n\n"), "Hello world"),
}


@pytest.mark.parametrize("case", list(SSE_READINGS))
async def test_a_providers_stream_is_read_as_sse_says(
    nursery: trio.Nursery, providers: Providers, start_proxy: StartProxy, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    """The client gets the provider's whole text and a `[DONE]`, no error event, nothing failed over."""
    parts, text = SSE_READINGS[case]
    server = await start_fault_server(nursery, lambda s: send_then_close(s, SSE_HEAD, *parts))
    proxy = await start_proxy(**fault_config(providers, cerebras_url=server.url))
    async with http_client(base_url=proxy.base_url, timeout=5.0) as client:
        status, _, body = await stream_chat(client, chat_body())
    events = sse_events(body)
    assert status == 200 and stream_text(events) == text and events[-1] == "[DONE]"
    assert not any(isinstance(e, dict) and "error" in e for e in events)
    assert providers.chutes.received == []
    assert await eventually(lambda: server.open == 0)
    server.healed = True
    await assert_healthy(proxy, caplog)
