"""The emulator's own faults (resets, stalls, error events, 5xx) at the providers: an OpenAI error
with a fitting status in bounded time, an error event once a stream has begun, and no
connection of the proxy's left hanging at an emulator, also when the client leaves first."""

from __future__ import annotations

import attrs
import pytest
import trio

from support.fault_server import dumps, eventually
from support.proxies import Providers, StartProxy
from support.raw_http import RawConnection, raw_request
from support.robustness import (
    CHAT, FAULT_TIMEOUT_MS, assert_error_document, assert_healthy, assert_openai_error, chat_body, chat_once,
    http_client, sse_events, stream_chat, unhandled_errors,
)
from support.task_tree import emulator_task, open_connections
from trioproxy.testing.emulator import Faults


EMULATOR_FAULTS = {
    "reset-before-response": (Faults(reset_before_response=True), 502, "upstream_unavailable"),
    "stall": (Faults(stall=True), 504, "upstream_timeout"),
    "latency-over-timeout": (Faults(latency=0.6), 504, "upstream_timeout"),
    "status-500": (Faults(status=500), 502, None),
    "status-503": (Faults(status=503), 503, None),
    "no-instances": (Faults(no_instances=True), 503, None),
    "error-first-event": (Faults(error_first_event=True), 502, None),
}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("fault", list(EMULATOR_FAULTS))
async def test_emulator_faults_at_both_providers(
    providers: Providers, start_proxy: StartProxy, caplog: pytest.LogCaptureFixture, fault: str, stream: bool
) -> None:
    """Both emulated providers fail the same way: an OpenAI error with a fitting status, in
    bounded time, and no connection of the proxy's left hanging at either emulator."""
    faults, status, code = EMULATOR_FAULTS[fault]
    if fault == "error-first-event" and not stream:
        status, code = 200, None  # the fault acts on streams only
    providers.cerebras.faults = attrs.evolve(faults)
    providers.chutes.faults = attrs.evolve(faults)
    proxy = await start_proxy(request_timeout_ms=FAULT_TIMEOUT_MS)
    response = await chat_once(proxy, stream)
    if status == 200:
        assert response.status_code == 200
    else:
        error = assert_openai_error(response, status, code)
        assert error["message"]
        if status in (429, 503):
            assert int(response.headers["retry-after"]) >= 1
    tasks = [emulator_task(providers.cerebras), emulator_task(providers.chutes)]
    # Pooled keep-alive connections may stay; none may be stuck in a stall or a dead stream.
    assert await eventually(lambda: all(open_connections(t) <= 1 for t in tasks)), [open_connections(t) for t in tasks]
    assert unhandled_errors(caplog) == []


async def test_emulator_reset_mid_stream_ends_with_error_event(
    providers: Providers, start_proxy: StartProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """A TCP reset after the first content, continuation off: the client gets an error event and [DONE]."""
    providers.cerebras.faults = Faults(break_after_events=2, remaining=1)
    proxy = await start_proxy(request_timeout_ms=FAULT_TIMEOUT_MS, max_continuations=0)
    async with http_client(base_url=proxy.base_url, timeout=5.0) as client:
        status, _, body = await stream_chat(client, chat_body())
    events = sse_events(body)
    assert status == 200 and events[-1] == "[DONE]"
    assert_error_document(events[-2])
    await assert_healthy(proxy, caplog)


async def test_client_leaving_cancels_a_stalled_upstream(
    providers: Providers, start_proxy: StartProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """The client gives up on a request whose provider stalls: the proxy drops the upstream
    connection at once, long before its own (here 20 s) timeout."""
    providers.cerebras.faults = Faults(stall=True)
    proxy = await start_proxy(request_timeout_ms=20_000)
    cerebras = emulator_task(providers.cerebras)
    for number, body in enumerate((chat_body(), chat_body(stream=True)), start=1):
        with trio.fail_after(5):
            connection = await RawConnection.open(proxy)
            await connection.send(raw_request("POST", CHAT, dumps(body), close=False))
            assert await eventually(lambda: len(providers.cerebras.received) == number)  # it stalls there now
            await trio.sleep(0.1)
            during = open_connections(cerebras)  # the stalled one, and maybe an idle pooled one
            await connection.aclose()
            assert await eventually(lambda: open_connections(cerebras) < during, 1.0), "upstream kept after the client left"
    providers.cerebras.faults = Faults()
    await assert_healthy(proxy, caplog)
