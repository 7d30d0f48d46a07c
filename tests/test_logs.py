"""Log lines: text or JSON, each line of a request carries its id, secrets never appear."""

import io
import json
import logging
from collections.abc import Iterator

import pytest
import trio.testing

from conftest import Providers, StartProxy
from test_routing import chat, client_for
from trioproxy.logs import configure_logging


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
    configure_logging("INFO", [providers.cerebras.api_key, providers.chutes.api_key], captured, "json")
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
    configure_logging("INFO", [], captured, "text")
    proxy = await start_proxy()
    async with client_for(proxy) as client:
        await client.post("/chat/completions", json=chat(), headers={"x-request-id": "req-text-1"})
    await trio.testing.wait_all_tasks_blocked()
    request_lines = [line for line in captured.getvalue().splitlines() if "trioproxy.request" in line]
    assert request_lines and all("[req-text-1]" in line for line in request_lines)


def test_secrets_are_redacted_in_json_too(captured: io.StringIO) -> None:
    configure_logging("DEBUG", ["csk-very-secret"], captured, "json")
    logging.getLogger("trioproxy.test").warning("key is %s", "csk-very-secret")
    line = json.loads(captured.getvalue())
    assert "csk-very-secret" not in captured.getvalue() and "[redacted]" in line["message"]
