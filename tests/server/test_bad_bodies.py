"""Malformed chat bodies and content types, sent by httpx and over raw sockets: each gets OpenAI's
error with the right status and param (or is served when it is odd but valid), no provider is
called for it, and the proxy stays healthy.

Every wait is bounded (`trio.fail_after`).
"""

from __future__ import annotations

import pytest
import trio

from support.fault_server import dumps
from support.proxies import Providers, Proxy
from support.raw_http import exchange, raw_request
from support.robustness import (
    BAD_BODIES, CHAT, MODEL, assert_healthy, assert_openai_error, chat_body, http_client, sse_events,
)
from trioproxy.testing.emulator import completion_text


@pytest.mark.parametrize(("raw", "status", "code", "param"), BAD_BODIES)
async def test_bad_chat_body_gets_an_openai_error(
    proxy: Proxy, providers: Providers, caplog: pytest.LogCaptureFixture,
    raw: bytes, status: int, code: str | None, param: str | None,
) -> None:
    """A malformed chat body gets OpenAI's error with the right status and param; no provider
    is called and the proxy stays healthy."""
    async with http_client(base_url=proxy.base_url, timeout=5.0) as client:
        with trio.fail_after(5):
            response = await client.post("/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert_openai_error(response, status, code, param)
    assert providers.cerebras.received == [] and providers.chutes.received == []
    await assert_healthy(proxy, caplog)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(dumps(chat_body(stream=None)), id="stream-null"),
        pytest.param(dumps(chat_body(stream_options=None)), id="stream-options-null"),
        pytest.param(b'{"model":"qwen-3-coder","messages":[{"role":"user","content":"a\\u0000b"}]}', id="escaped-nul"),
        pytest.param('{"model":"qwen-3-coder","messages":[{"role":"user","content":"h\u00e9\u4e16\U0001f600"}]}'
                     .encode(), id="valid-non-ascii"),
        pytest.param(b'\xef\xbb\xbf{"model":"qwen-3-coder","messages":[{"role":"user","content":"bom"}]}', id="utf8-bom"),
        pytest.param(b'{"model":"gpt-4o","model":"qwen-3-coder","messages":[{"role":"user","content":"x"}]}',
                     id="duplicate-key-last-wins"),
    ],
)
async def test_odd_but_valid_chat_body_is_served(proxy: Proxy, caplog: pytest.LogCaptureFixture, raw: bytes) -> None:
    """Bodies that look odd but are valid JSON chat requests are served normally."""
    async with http_client(base_url=proxy.base_url, timeout=5.0) as client:
        with trio.fail_after(5):
            response = await client.post("/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["model"] == MODEL
    await assert_healthy(proxy, caplog)


async def test_lone_surrogate_escape_is_answered_not_crashed(
    proxy: Proxy, providers: Providers, caplog: pytest.LogCaptureFixture
) -> None:
    """A `\\ud800` escape is valid JSON but broken Unicode: Cerebras refuses it (400
    wrong_api_format), the proxy fails over, and the client gets an answer, never a 500."""
    raw = b'{"model":"qwen-3-coder","messages":[{"role":"user","content":"bad \\ud800 and \\udfff"}]}'
    # CPython's json decodes UTF-8 bytes with "surrogatepass": a UTF-8-encoded surrogate is the same case.
    encoded = b'{"model":"qwen-3-coder","messages":[{"role":"user","content":"bad \xed\xa0\x80"}]}'
    async with http_client(base_url=proxy.base_url, timeout=5.0) as client:
        with trio.fail_after(5):
            response = await client.post("/chat/completions", content=raw, headers={"content-type": "application/json"})
            async with client.stream("POST", "/chat/completions", content=raw.replace(b"{", b'{"stream":true,', 1),
                                     headers={"content-type": "application/json"}) as streaming:
                streamed = (streaming.status_code, streaming.headers, await streaming.aread())
            other = await client.post("/chat/completions", content=encoded, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == completion_text("chutes")
    assert streamed[0] == 200 and sse_events(streamed[2])[-1] == "[DONE]"
    if other.status_code != 200:  # refusing invalid UTF-8 outright would be as good
        assert_openai_error(other, 400, "invalid_json")
    assert providers.cerebras.served == 0
    await assert_healthy(proxy, caplog)


# --------------------------------------------------------------------------- content types


@pytest.mark.parametrize(
    ("content_type", "raw", "status"),
    [
        pytest.param("application/json; charset=latin-1", dumps(chat_body()), 200, id="odd-charset-json"),
        pytest.param("application/vnd.example+json", dumps(chat_body()), 200, id="suffix-json"),
        pytest.param("application/json", b"model=qwen-3-coder&messages=hello", 400, id="form-body-said-json"),
        pytest.param("application/json", bytes(range(256)), 400, id="binary-body-said-json"),
        # What a web page may send without asking the browser's leave (no CORS preflight):
        pytest.param("text/plain", dumps(chat_body()), 415, id="text-plain-json"),
        pytest.param("application/x-www-form-urlencoded", dumps(chat_body()), 415, id="form-type-json"),
        pytest.param("multipart/form-data; boundary=xyz",
                     b'--xyz\r\ncontent-disposition: form-data; name="model"\r\n\r\nqwen-3-coder\r\n--xyz--\r\n', 415,
                     id="multipart-body"),
        pytest.param("application/octet-stream", bytes(range(256)), 415, id="binary-body"),
    ],
)
async def test_only_a_body_said_and_found_to_be_json_is_served(
    proxy: Proxy, caplog: pytest.LogCaptureFixture, content_type: str | None, raw: bytes, status: int
) -> None:
    """A POST must say it is JSON (415 in OpenAI's shape otherwise: a web page cannot send JSON
    without the browser asking the proxy first), and what it sends must be JSON (400 invalid_json)."""
    headers = {"content-type": content_type} if content_type else {}
    response = await exchange(proxy, raw_request("POST", CHAT, raw, headers=headers))
    if status == 200:
        assert response.status_code == 200, response.text
        assert response.json()["model"] == MODEL
    elif status == 415:
        assert_openai_error(response, 415, "unsupported_media_type")
    else:
        assert_openai_error(response, 400, "invalid_json")
    await assert_healthy(proxy, caplog)
