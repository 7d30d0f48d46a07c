"""What every robustness test checks: a bounded chat request, OpenAI's error shape (on an httpx
or a raw response, and as an SSE error event), nothing escaped into the log, and the proxy still
healthy afterwards. Also the bad input and the provider faults thrown at the proxy, shared by
the tests of each and by those that throw all of them at once."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
import trio

from support.chat import stream_text
from support.fault_server import (
    FINISH, HELLO, ROLE, WORLD, Behaviour, dumps, hold, send_then_close, send_then_hold, send_then_reset,
)
from support.proxies import Providers, Proxy
from support.raw_http import SSE_HEAD, RawResponse, json_head, root_of

MODEL = "qwen-3-coder"
MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "Say hello."}]
CHAT = "/v1/chat/completions"
ERROR_KEYS = {"message", "type", "param", "code"}

# Hypercorn (not the proxy) closes a connection that has not finished sending its request head
# after its keep_alive_timeout (5 s by default). A stalled request *body* should be cut off in the
# same order of time; the stall test runs the proxy with request_timeout_ms=2000 and calls a
# connection hung when it is neither answered nor closed after this long.
STALL_BOUND = 6.5
FAULT_TIMEOUT_MS = 250  # request_timeout_ms for provider faults: "no byte for this long"


# One TLS context for every client: httpx builds a new one per client otherwise (~15 ms each),
# and these clients only ever speak plain HTTP to 127.0.0.1.
_TLS = httpx.create_ssl_context()


def http_client(**kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(verify=_TLS, **kwargs)


async def chat_once(proxy: Proxy, stream: bool) -> httpx.Response:
    """One chat request, plain or streamed and read to its end, bounded at 5 s."""
    async with http_client(base_url=proxy.base_url, timeout=5.0) as client:
        with trio.fail_after(5):
            if stream:
                async with client.stream("POST", "/chat/completions", json=chat_body(stream=True)) as response:
                    await response.aread()
                return response
            return await client.post("/chat/completions", json=chat_body())


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": MESSAGES, **extra}


def assert_error_document(document: Any) -> dict[str, Any]:
    """`document` is exactly OpenAI's error shape; returns the inner object."""
    assert isinstance(document, dict) and set(document) == {"error"}, document
    error = document["error"]
    assert set(error) == ERROR_KEYS, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    assert error["code"] is None or isinstance(error["code"], str), error
    assert error["param"] is None or isinstance(error["param"], str), error
    return error


def assert_openai_error(response: httpx.Response | RawResponse, status: int | tuple[int, ...],
                        code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """An HTTP answer with `status` (one of), JSON content type and OpenAI's error body."""
    statuses = (status,) if isinstance(status, int) else status
    text = response.text if isinstance(response, httpx.Response) else response.body[:500]
    assert response.status_code in statuses, (response.status_code, text)
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    assert response.headers.get("x-request-id"), response.headers
    error = assert_error_document(response.json())
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    return error


def sse_events(body: bytes) -> list[Any]:
    """The `data:` payloads of an SSE body, JSON-decoded; "[DONE]" stays a string."""
    events: list[Any] = []
    for block in body.decode("utf-8").split("\n\n"):
        data = "\n".join(line[5:].removeprefix(" ") for line in block.split("\n") if line.startswith("data:"))
        if data:
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


async def stream_chat(client: httpx.AsyncClient, body: dict[str, Any], timeout: float = 5.0) -> tuple[int, httpx.Headers, bytes]:
    """POST a streamed chat (client based at /v1) and read all of it (bounded: a hang fails the test)."""
    with trio.fail_after(timeout):
        async with client.stream("POST", "/chat/completions", json={**body, "stream": True}) as response:
            return response.status_code, response.headers, await response.aread()


def unhandled_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Log records that mean an exception escaped: Hypercorn's 'Error in ASGI', tracebacks."""
    found = []
    for record in caplog.records:
        if record.name.startswith("trioproxy.testing.emulator"):
            continue  # the emulators' own troubles are not the proxy's
        text = record.getMessage()
        if record.exc_info or "Error in ASGI" in text or "Traceback" in text or record.levelno >= logging.ERROR:
            found.append(f"{record.name}: {text}")
    return found


async def assert_healthy(proxy: Proxy, caplog: pytest.LogCaptureFixture | None = None, *, stream: bool = False) -> None:
    """/healthz is 200, a completion (and a streamed one, if asked) works, nothing escaped into the log."""
    with trio.fail_after(5):
        async with http_client(timeout=5.0) as client:
            health = await client.get(root_of(proxy) + "/healthz")
            assert health.status_code == 200, health.text
            assert health.json()["status"] == "ok"
            plain = await client.post(proxy.base_url + "/chat/completions", json=chat_body())
            assert plain.status_code == 200, plain.text
            assert plain.json()["model"] == MODEL
            assert plain.json()["choices"][0]["message"]["content"]
            if stream:
                async with client.stream("POST", proxy.base_url + "/chat/completions", json=chat_body(stream=True)) as r:
                    assert r.status_code == 200
                    events = sse_events(await r.aread())
                assert events[-1] == "[DONE]" and stream_text(events)
    if caplog is not None:
        assert unhandled_errors(caplog) == []


# --------------------------------------------------------------------------- bad input

OK = MESSAGES

BAD_BODIES: list[Any] = [
    # truncated, empty, not JSON at all
    pytest.param(b'{"model": "qwen-3-coder", "messages": [{"role": "us', 400, "invalid_json", None, id="truncated-json"),
    pytest.param(b'{"model": "qwen-3-coder", "messages": []', 400, "invalid_json", None, id="truncated-after-value"),
    pytest.param(b"", 400, "invalid_json", None, id="empty-body"),
    pytest.param(b"   \r\n\t ", 400, "invalid_json", None, id="whitespace-body"),
    pytest.param(b"model=qwen-3-coder&messages=hi", 400, "invalid_json", None, id="form-encoded-body"),
    pytest.param(b'{"model": "qwen-3-coder"} trailing', 400, "invalid_json", None, id="trailing-garbage"),
    pytest.param(b"{'model': 'qwen-3-coder'}", 400, "invalid_json", None, id="single-quotes"),
    # the body is JSON but not an object
    pytest.param(b"[]", 400, None, None, id="body-array"),
    pytest.param(b'"qwen-3-coder"', 400, None, None, id="body-string"),
    pytest.param(b"42", 400, None, None, id="body-number"),
    pytest.param(b"null", 400, None, None, id="body-null"),
    pytest.param(b"true", 400, None, None, id="body-bool"),
    # model: every wrong type
    pytest.param(dumps({"messages": OK}), 400, None, "model", id="model-missing"),
    pytest.param(dumps({"model": None, "messages": OK}), 400, None, "model", id="model-null"),
    pytest.param(dumps({"model": 42, "messages": OK}), 400, None, "model", id="model-number"),
    pytest.param(dumps({"model": True, "messages": OK}), 400, None, "model", id="model-bool"),
    pytest.param(dumps({"model": [MODEL], "messages": OK}), 400, None, "model", id="model-array"),
    pytest.param(dumps({"model": {"id": MODEL}, "messages": OK}), 400, None, "model", id="model-object"),
    pytest.param(dumps({"model": "", "messages": OK}), 400, None, "model", id="model-empty"),
    pytest.param(dumps({"model": "gpt-4o", "messages": OK}), 404, "model_not_found", "model", id="model-unknown"),
    pytest.param(b'{"model": "qwen-3-coder\\ud800", "messages": [{"role": "user", "content": "x"}]}',
                 404, "model_not_found", "model", id="model-lone-surrogate"),
    # messages: every wrong type
    pytest.param(dumps({"model": MODEL}), 400, None, "messages", id="messages-missing"),
    pytest.param(dumps({"model": MODEL, "messages": None}), 400, None, "messages", id="messages-null"),
    pytest.param(dumps({"model": MODEL, "messages": "hi"}), 400, None, "messages", id="messages-string"),
    pytest.param(dumps({"model": MODEL, "messages": 7}), 400, None, "messages", id="messages-number"),
    pytest.param(dumps({"model": MODEL, "messages": True}), 400, None, "messages", id="messages-bool"),
    pytest.param(dumps({"model": MODEL, "messages": {"role": "user"}}), 400, None, "messages", id="messages-object"),
    pytest.param(dumps({"model": MODEL, "messages": []}), 400, None, "messages", id="messages-empty"),
    # each message entry: every wrong type
    pytest.param(dumps({"model": MODEL, "messages": ["hi"]}), 400, None, "messages", id="message-string"),
    pytest.param(dumps({"model": MODEL, "messages": [1]}), 400, None, "messages", id="message-number"),
    pytest.param(dumps({"model": MODEL, "messages": [None]}), 400, None, "messages", id="message-null"),
    pytest.param(dumps({"model": MODEL, "messages": [True]}), 400, None, "messages", id="message-bool"),
    pytest.param(dumps({"model": MODEL, "messages": [[{"role": "user"}]]}), 400, None, "messages", id="message-array"),
    pytest.param(dumps({"model": MODEL, "messages": [*OK, "and then"]}), 400, None, "messages", id="message-mixed"),
    # stream: every wrong type (null means "not given")
    pytest.param(dumps(chat_body(stream="true")), 400, None, "stream", id="stream-string"),
    pytest.param(dumps(chat_body(stream=1)), 400, None, "stream", id="stream-one"),
    pytest.param(dumps(chat_body(stream=0)), 400, None, "stream", id="stream-zero"),
    pytest.param(dumps(chat_body(stream=[True])), 400, None, "stream", id="stream-array"),
    pytest.param(dumps(chat_body(stream={})), 400, None, "stream", id="stream-object"),
    # stream_options: every wrong type (null means "not given")
    pytest.param(dumps(chat_body(stream=True, stream_options="include_usage")), 400, None, "stream_options",
                 id="stream-options-string"),
    pytest.param(dumps(chat_body(stream=True, stream_options=[{"include_usage": True}])), 400, None,
                 "stream_options", id="stream-options-array"),
    pytest.param(dumps(chat_body(stream=True, stream_options=1)), 400, None, "stream_options", id="stream-options-number"),
    pytest.param(dumps(chat_body(stream=True, stream_options=True)), 400, None, "stream_options", id="stream-options-bool"),
    # bytes that are not UTF-8
    pytest.param(b'{"model":"qwen-3-coder","messages":[{"role":"user","content":"\xff\xfe"}]}', 400, "invalid_json",
                 None, id="invalid-utf8"),
    pytest.param(b'{"model":"qwen-3-coder","messages":[{"role":"user","content":"\xc0\xaf"}]}', 400, "invalid_json",
                 None, id="overlong-utf8"),
    pytest.param(b'{"model":"qwen-3-coder","messages":[{"role":"user","content":"\xe2\x82', 400, "invalid_json",
                 None, id="truncated-multibyte"),
    # NUL bytes
    pytest.param(b'{"model":"qwen-3-coder","messages":[{"role":"user","content":"a\x00b"}]}', 400, "invalid_json",
                 None, id="raw-nul-in-string"),
    pytest.param(b'{"model":"qwen-3-coder",\x00"messages":[]}', 400, "invalid_json", None, id="raw-nul-between-tokens"),
    pytest.param(b"\x00" * 64, 400, "invalid_json", None, id="only-nuls"),
    # JSON that Python's parser takes but no JSON peer would (RFC 8259): must not be forwarded
    pytest.param(b'{"model":"qwen-3-coder","messages":[{"role":"user","content":"x"}],"temperature":NaN}', 400,
                 "invalid_json", None, id="nan-literal"),
    pytest.param(b'{"model":"qwen-3-coder","messages":[{"role":"user","content":"x"}],"top_p":-Infinity}', 400,
                 "invalid_json", None, id="infinity-literal"),
    # nesting deep enough to exhaust the parser's recursion
    pytest.param(b'{"model":"qwen-3-coder","messages":[{"role":"user","content":' + b"[" * 100_000 + b"]" * 100_000
                 + b"}]}", 400, "invalid_json", None, id="deep-nesting"),
]


PROTOCOL_JUNK = [
    pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)) + b"\r\n\r\n", id="tls-client-hello"),
    pytest.param(b"\x00" * 32 + b"\r\n\r\n", id="nul-bytes-as-request"),
    pytest.param(b"GET /v1/mo\x00dels HTTP/1.1\r\nhost: x\r\n\r\n", id="nul-in-path"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-evil: a\x00b\r\n\r\n", id="nul-in-header"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nhost: x\r\nno colon here\r\n\r\n", id="header-without-colon"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nhost: x\r\nbad name: v\r\n\r\n", id="space-in-header-name"),
    pytest.param(b"GET /healthz\r\n\r\n", id="http-0.9-request-line"),
    pytest.param(b"GET /healthz HTTP/1.1\r\n\r\n", id="http-1.1-without-host"),
    pytest.param(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n", id="negative-content-length"),
    pytest.param(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 12abc\r\n\r\n", id="non-numeric-content-length"),
    pytest.param(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 7\r\n\r\nhello",
                 id="conflicting-content-lengths"),
    pytest.param(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\n", id="unknown-transfer-encoding"),
    pytest.param(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
                 id="bad-chunk-size"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 200_000 + b"\r\n\r\n", id="one-200kb-header"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nhost: x\r\n" + b"".join(b"x-h%d: %s\r\n" % (i, b"v" * 40) for i in range(5000))
                 + b"\r\n", id="5000-headers"),
    pytest.param(b"GET /" + b"a" * 200_000 + b" HTTP/1.1\r\nhost: x\r\n\r\n", id="200kb-request-line"),
]


# --------------------------------------------------------------------------- provider faults

# Faults before the first byte: the proxy can still fail over (or answer with an error).
BEFORE_FIRST_BYTE: dict[str, tuple[Behaviour, tuple[int, int]]] = {
    # name: (behaviour, (status for a plain request, for a stream) when every provider does it)
    "garbage-bytes": (lambda s: send_then_close(s, b"\x00\xff\xfe\x80garbage\r\n\x07\x1b[31m\r\n\r\n"), (502, 502)),
    "garbage-status-line": (lambda s: send_then_close(s, b"HTTP/1.1 abc Nope\r\n\r\n"), (502, 502)),
    "garbage-json-body": (lambda s: send_then_close(s, json_head(200, 12), b"\xff\xfe<html>oops"), (502, 502)),
    "json-array-body": (lambda s: send_then_close(s, json_head(200, 6), b"[1, 2]"), (502, 502)),
    "truncated-json-body": (lambda s: send_then_close(s, json_head(200, 500), b'{"id": "x", "choi'), (502, 502)),
    "html-500": (lambda s: send_then_close(s, json_head(500, 27, "text/html"), b"<html>Internal Error</html>"), (502, 502)),
    "sse-garbage-then-close": (lambda s: send_then_close(s, SSE_HEAD, b"\xff\xfe\x00garbage\n\n"), (502, 502)),
    # held open after the bad first event: the proxy itself must drop the connection
    "sse-bad-json-first": (lambda s: send_then_hold(s, SSE_HEAD, b"data: {not json\n\n", HELLO), (504, 502)),
    "sse-error-event-first": (lambda s: send_then_hold(s, SSE_HEAD, b'data: {"error": {"message": "boom"}}\n\n'),
                              (504, 502)),
    "sse-detail-event-first": (lambda s: send_then_hold(s, SSE_HEAD, b'data: {"detail": "No instances available"}\n\n'),
                               (504, 502)),
    "sse-only-done": (lambda s: send_then_close(s, SSE_HEAD, b"data: [DONE]\n\n"), (502, 502)),
    "reset-after-request": (lambda s: send_then_reset(s), (502, 502)),
    "accepts-never-answers": (hold, (504, 504)),
    "headers-then-nothing": (lambda s: send_then_hold(s, SSE_HEAD), (504, 504)),
}

# Faults after the first event: too late to fail over; the stream must end with an error event.
AFTER_FIRST_BYTE: dict[str, Behaviour] = {
    "sse-truncated-no-done": lambda s: send_then_close(s, SSE_HEAD, ROLE, HELLO),
    "sse-stops-no-done-held-open": lambda s: send_then_hold(s, SSE_HEAD, ROLE, HELLO),
    "sse-bad-json-mid": lambda s: send_then_hold(s, SSE_HEAD, ROLE, HELLO, b'data: {"choices": [oops\n\n', WORLD),
    "sse-non-object-mid": lambda s: send_then_close(s, SSE_HEAD, ROLE, HELLO, b"data: [1, 2, 3]\n\n", FINISH,
                                                     b"data: [DONE]\n\n"),
    "sse-garbage-bytes-mid": lambda s: send_then_close(s, SSE_HEAD, ROLE, HELLO, b"data: \xff\xfe\x00\x80\x81garbage\n\n",
                                                        FINISH, b"data: [DONE]\n\n"),
    "sse-reset-mid": lambda s: send_then_reset(s, SSE_HEAD, ROLE, HELLO),
}


def fault_config(providers: Providers, cerebras_url: str | None = None, chutes_url: str | None = None) -> dict[str, Any]:
    overrides: dict[str, Any] = {"request_timeout_ms": FAULT_TIMEOUT_MS}
    if cerebras_url:
        overrides["cerebras"] = {"base_url": cerebras_url}
    if chutes_url:
        overrides["chutes"] = {"base_url": chutes_url}
    return overrides
