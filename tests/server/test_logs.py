"""Log lines: text or JSON, each line of a request carries its id, secrets never appear."""

import errno
import io
import json
import logging
from collections.abc import Iterator

import attrs
import httpx
import pytest
import trio.testing

from support.chat import chat, client_for
from support.proxies import Providers, StartProxy
from support.proxies import proxy_config
from support.reload import reloadable_proxy
from trioproxy.logs import ACCEPT_LOGGER, OncePerEpisode, configure_logging
from trioproxy.secrets import Sanitizer


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Route all logging through trioproxy's own set-up into a buffer; restore pytest's after."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    buffer = io.StringIO()
    yield buffer
    root.handlers, root.level = saved_handlers, saved_level


async def test_json_lines_carry_the_request_id_on_every_line_of_a_request(
    providers: Providers, start_proxy: StartProxy, captured: io.StringIO
) -> None:
    """A failover produces several lines; each is JSON with the client's x-request-id."""
    configure_logging("INFO", Sanitizer([providers.cerebras.api_key, providers.chutes.api_key]), captured, "json")
    proxy = await start_proxy()
    providers.cerebras.faults.status = 500
    async with client_for(proxy) as client:
        response = await client.post("/chat/completions", json=chat(), headers={"x-request-id": "req-json-1"})
    assert response.status_code == 200
    await trio.testing.wait_all_tasks_blocked()
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    mine = [line for line in lines if line["request_id"] == "req-json-1"]
    assert {line["logger"] for line in mine} >= {"trioproxy.router", "trioproxy.request"}
    assert all(set(line) >= {"time", "level", "logger", "request_id", "message"} for line in lines)
    assert any("failover: 500" in line["message"] for line in mine)
    assert providers.cerebras.api_key not in captured.getvalue()


async def test_text_lines_show_the_request_id(
    providers: Providers, start_proxy: StartProxy, captured: io.StringIO
) -> None:
    configure_logging("INFO", Sanitizer([]), captured, "text")
    proxy = await start_proxy()
    async with client_for(proxy) as client:
        await client.post("/chat/completions", json=chat(), headers={"x-request-id": "req-text-1"})
    await trio.testing.wait_all_tasks_blocked()
    request_lines = [line for line in captured.getvalue().splitlines() if "trioproxy.request" in line]
    assert request_lines and all("[req-text-1]" in line for line in request_lines)


async def test_a_key_a_reload_brings_is_redacted_from_log_lines(providers: Providers, captured: io.StringIO) -> None:
    """Lines are scrubbed by the running configuration's sanitizer: a key that arrived with a
    reload is redacted, whole or as a run of 8 of its characters a provider echoes; the key it
    replaced stays redacted (streams still on the old configuration may log it)."""
    config = proxy_config(providers)
    configure_logging("INFO", Sanitizer([providers.cerebras.api_key, providers.chutes.api_key]), captured, "text")
    new_key = "csk-arrived-with-reload-0123456789"
    async with reloadable_proxy(config) as (_proxy, send_reloads):
        await send_reloads.send(attrs.evolve(config, cerebras=attrs.evolve(config.cerebras, api_key=new_key)))
        await trio.testing.wait_all_tasks_blocked()
        assert "configuration reloaded" in captured.getvalue()
        echo = logging.getLogger("trioproxy.test")
        echo.warning("provider said: Incorrect API key provided: %s.", new_key)
        echo.warning("provider said: key ...%s is not allowed", new_key[-12:])
        echo.warning("old stream said: %s", providers.cerebras.api_key)
    written = captured.getvalue()
    assert new_key not in written and new_key[-12:] not in written
    assert providers.cerebras.api_key not in written and "old stream said: [redacted]" in written
    assert "Incorrect API key provided: [redacted]." in written and "key ...[redacted] is not allowed" in written


def test_secrets_are_redacted_in_json_too(captured: io.StringIO) -> None:
    configure_logging("DEBUG", Sanitizer(["csk-very-secret"]), captured, "json")
    logging.getLogger("trioproxy.test").warning("key is %s", "csk-very-secret")
    line = json.loads(captured.getvalue())
    assert "csk-very-secret" not in captured.getvalue() and "[redacted]" in line["message"]


async def test_unsafe_request_ids_are_replaced(start_proxy: StartProxy, captured: io.StringIO) -> None:
    """Control characters or 10 KB in x-request-id: a new id, in the header and in the log."""
    configure_logging("INFO", Sanitizer([]), captured, "text")
    proxy = await start_proxy()
    async with client_for(proxy) as client:
        ids = {}
        # h11 refuses ASCII controls in a header, but passes C1 controls (the 8-bit CSI) and UTF-8.
        for sent in (b"evil\x9b31m\xe2\x80\xa8forged", b"a" * 10_000, b"trace-id:1/2+3=@x_y.z"):
            response = await client.post("/chat/completions", json=chat(), headers={"x-request-id": sent})
            ids[sent] = response.headers["x-request-id"]
    await trio.testing.wait_all_tasks_blocked()
    assert ids[b"trace-id:1/2+3=@x_y.z"] == "trace-id:1/2+3=@x_y.z"  # a sane id is kept
    for sent in (b"evil\x9b31m\xe2\x80\xa8forged", b"a" * 10_000):
        assert len(ids[sent]) == 16 and f"[{ids[sent]}]" in captured.getvalue()
    assert "\x9b" not in captured.getvalue() and "forged" not in captured.getvalue()
    assert "a" * 200 not in captured.getvalue()


async def test_http2_header_blocks_stay_out_of_the_debug_log(start_proxy: StartProxy, captured: io.StringIO) -> None:
    """At DEBUG, hpack used to print each HTTP/2 header block, Authorization in clear."""
    configure_logging("DEBUG", Sanitizer([]), captured, "text")
    proxy = await start_proxy()
    async with httpx.AsyncClient(base_url=proxy.base_url, http1=False, http2=True) as client:
        response = await client.get("/models", headers={"authorization": "Bearer sk-client-own-key"})
    assert response.status_code == 200 and response.http_version == "HTTP/2"
    assert "sk-client-own-key" not in captured.getvalue()
    assert "trioproxy" in captured.getvalue()  # DEBUG did reach the log: only the libraries are held back


def test_accept_failures_are_logged_once_per_episode(captured: io.StringIO) -> None:
    """EMFILE from accept(): Trio logs a traceback every 0.1 s; one line per episode reaches the log."""
    configure_logging("INFO", Sanitizer([]), captured, "text")
    clock = [0.0]
    logging.getLogger(ACCEPT_LOGGER).filters = [OncePerEpisode(quiet=10.0, clock=lambda: clock[0])]
    try:
        for episode_start in (0.0, 100.0):
            clock[0] = episode_start
            for _ in range(50):  # five seconds of failures, every 0.1 s
                try:
                    raise OSError(errno.EMFILE, "Too many open files")
                except OSError:
                    logging.getLogger(ACCEPT_LOGGER).error("accept returned EMFILE; retrying in 0.1 seconds", exc_info=True)
                clock[0] += 0.1
    finally:
        logging.getLogger(ACCEPT_LOGGER).filters = []
    lines = captured.getvalue().splitlines()
    assert len(lines) == 2 and "Traceback" not in captured.getvalue()
    assert "49 more in the previous episode" in lines[1]


async def test_refusals_and_unknown_paths_say_why(start_proxy: StartProxy, caplog: pytest.LogCaptureFixture) -> None:
    """A refused request's line names the reason; an unknown path is logged with its path."""
    caplog.set_level(logging.INFO)
    proxy = await start_proxy()
    async with client_for(proxy) as client:
        await client.post("/chat/completions", json={**chat(), "model": "gpt-4o"}, headers={"x-request-id": "unknown-model"})
        await client.post("/chat/completions", content=b"{", headers={"x-request-id": "bad-body", "content-type": "application/json"})
        await client.get(proxy.base_url.removesuffix("/v1") + "/wp-admin%0A", headers={"x-request-id": "unknown-path"})
    await trio.testing.wait_all_tasks_blocked()
    lines = {record.getMessage().split()[1]: record.getMessage() for record in caplog.records if record.name == "trioproxy.request"}
    assert "reason='refused: model_not_found (model)'" in lines["unknown-model"]
    assert "reason='refused: invalid_json'" in lines["bad-body"]
    assert "status=404" in lines["unknown-path"] and "path='/wp-admin\\n'" in lines["unknown-path"]
