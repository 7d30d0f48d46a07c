"""Bad input and provider faults thrown at a running trioproxy.

Part 1 throws malformed requests at the proxy, from raw sockets (`trio.open_tcp_stream`) for
what an HTTP library would refuse to send, and from httpx for the rest. Each must get a clear
answer: OpenAI's error shape for anything that reaches the application, and for what breaks the
HTTP protocol itself (answered by Hypercorn before the application sees it) a 4xx and a closed
connection, or a close after a bounded time. After each, the proxy must still be healthy.

Part 2 breaks the providers: the emulator's own faults (resets, stalls, error events, 5xx) and,
for what the emulator cannot do (garbage bytes, SSE without `[DONE]`, invalid JSON chunks, a
server that accepts and never answers), a tiny raw TCP fault server in this file. The client
must get OpenAI's shape (or, once a stream has begun, an SSE error event and `[DONE]`), and
nothing may be left behind: no task, no upstream connection, and the proxy shuts down promptly.

Every wait is bounded (`trio.fail_after`); provider faults use a short request_timeout_ms.
"""

from __future__ import annotations

import collections
import functools
import json
import logging
from collections.abc import Iterator
from typing import Any

import attrs
import httpx
import pytest
import trio

from support.chat import stream_text
from support.fault_server import (
    FINISH,
    HELLO,
    MODELS_LIST,
    ROLE,
    WORLD,
    Behaviour,
    dumps,
    eventually,
    hold,
    send_then_close,
    send_then_hold,
    send_then_reset,
    start_fault_server,
)
from support.proxies import Providers, Proxy, StartProxy, proxy_config
from support.raw_http import SSE_HEAD, abort_with_reset, json_head, read_raw_request
from trioproxy.process.supervisor import run_proxy
from trioproxy.testing.emulator import EmulatedProvider, Faults, completion_text, serve

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


# =========================================================================== helpers


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


def address(proxy: Proxy) -> tuple[str, int]:
    host, port = proxy.base_url.removeprefix("http://").removesuffix("/v1").rsplit(":", 1)
    return host.strip("[]"), int(port)


def root_of(proxy: Proxy) -> str:
    return proxy.base_url.removesuffix("/v1")


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


@attrs.define
class RawResponse:
    """One HTTP/1.x response as read off a raw socket."""

    version: str
    status_code: int
    headers: httpx.Headers
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


class RawConnection:
    """A raw TCP client: send any bytes, parse HTTP/1.x responses, notice closes and resets."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.eof = False
        self.reset = False

    @classmethod
    async def open(cls, proxy: Proxy) -> RawConnection:
        host, port = address(proxy)
        return cls(await trio.open_tcp_stream(host, port))

    async def send(self, data: bytes) -> bool:
        """Send `data`; False when the proxy has already closed the connection."""
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def fill(self) -> bool:
        """Read what is there into the buffer; False at EOF or reset."""
        if self.eof:
            return False
        try:
            data = await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.reset, data = True, b""
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    async def _until(self, separator: bytes) -> bytes:
        while (index := self.buffer.find(separator)) < 0:
            if not await self.fill():
                raise EOFError(f"closed before {separator!r}; got {bytes(self.buffer[:200])!r}")
        data = bytes(self.buffer[:index])
        del self.buffer[: index + len(separator)]
        return data

    async def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not await self.fill():
                raise EOFError(f"closed {size - len(self.buffer)} bytes short")
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def read_response(self, *, head: bool = False) -> RawResponse:
        """The next complete response (body by content-length, chunked, or until close)."""
        lines = (await self._until(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        version, status, *_ = lines[0].split(" ", 2)
        headers = httpx.Headers([tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]])
        code = int(status)
        if head or code in (204, 304) or code < 200:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            parts = []
            while size := int((await self._until(b"\r\n")).split(b";")[0], 16):
                parts.append(await self._exactly(size))
                await self._until(b"\r\n")
            while await self._until(b"\r\n"):  # trailers, up to the blank line
                pass
            body = b"".join(parts)
        elif "content-length" in headers:
            body = await self._exactly(int(headers["content-length"]))
        else:
            while await self.fill():
                pass
            body, self.buffer = bytes(self.buffer), bytearray()
        return RawResponse(version, code, headers, body)

    async def closed_within(self, seconds: float) -> bool:
        """True when the peer closes (or resets) within `seconds`; what it sent stays buffered."""
        with trio.move_on_after(seconds):
            while await self.fill():
                pass
            return True
        return False


def raw_request(method: str, target: str, body: bytes | None = None, *, version: str = "HTTP/1.1",
                headers: dict[str, str] | None = None, close: bool = True) -> bytes:
    """Bytes of one request; content-length added for a body unless a header says otherwise."""
    lines = [f"{method} {target} {version}", "host: 127.0.0.1"]
    extra = {k.lower(): v for k, v in (headers or {}).items()}
    if body is not None and "content-length" not in extra and "transfer-encoding" not in extra:
        extra["content-length"] = str(len(body))
    if (body is not None or method == "POST") and "content-type" not in extra:
        extra["content-type"] = "application/json"
    if close and version == "HTTP/1.1":
        extra.setdefault("connection", "close")
    lines += [f"{k}: {v}" for k, v in extra.items()]
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + (body or b"")


async def exchange(proxy: Proxy, data: bytes, *, head: bool = False, timeout: float = 5.0) -> RawResponse:
    """Send `data` on a fresh connection and read one response (bounded)."""
    with trio.fail_after(timeout):
        connection = await RawConnection.open(proxy)
        try:
            await connection.send(data)
            return await connection.read_response(head=head)
        finally:
            await connection.aclose()


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


# ----------------------------------------------------------------- task-tree inspection


def _children(task: trio.lowlevel.Task) -> Iterator[trio.lowlevel.Task]:
    for nursery in task.child_nurseries:
        yield from nursery.child_tasks


def all_tasks() -> Iterator[trio.lowlevel.Task]:
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        if task is None:
            continue
        yield task
        stack.extend(_children(task))


def descendants(task: trio.lowlevel.Task) -> list[trio.lowlevel.Task]:
    found, stack = [], list(_children(task))
    while stack:
        task = stack.pop()
        found.append(task)
        stack.extend(_children(task))
    return found


def _local(task: trio.lowlevel.Task, name: str) -> Any:
    frame = getattr(task.coro, "cr_frame", None)
    return frame.f_locals.get(name) if frame is not None else None


def emulator_task(provider: EmulatedProvider) -> trio.lowlevel.Task:
    """The task running `emulator.serve(provider)`."""
    for task in all_tasks():
        running = getattr(task.coro, "cr_code", None)
        if running is serve.__code__ and _local(task, "provider") is provider:
            return task
    raise LookupError("emulator task not found")


def open_connections(server_task: trio.lowlevel.Task) -> int:
    """Connection handler tasks alive under a server task (trio.serve_listeners' handlers)."""
    return sum(1 for task in descendants(server_task) if task.name.endswith("_run_handler"))


# Tasks that come and go by design: cooldown timers, the health prober, and Hypercorn's
# keep-alive timer, which outlives a closed connection by up to keep_alive_timeout (5 s) when
# the connection never produced a request (e.g. protocol junk); shutdown ends those at once.
_TIMERS = ("CooldownTimers", "HealthProber", "TCPServer._idle_timeout", "_run_handler")


def busy_tasks(proxy_task: trio.lowlevel.Task) -> list[str]:
    """Names of the tasks under run_proxy that do work: everything but the timers above."""
    return sorted(t.name for t in descendants(proxy_task) if not any(timer in t.name for timer in _TIMERS))


def idle_connections_only(proxy_task: trio.lowlevel.Task) -> bool:
    """Every connection Hypercorn still holds is only waiting out its keep-alive timer."""
    names = [t.name for t in descendants(proxy_task)]
    handlers = sum(name.endswith("_run_handler") for name in names)
    return handlers <= sum(name.endswith("TCPServer._idle_timeout") for name in names)


def task_difference(before: list[str], after: list[str]) -> dict[str, int]:
    """Tasks by name that are more (or fewer, negative) now than before."""
    counts = collections.Counter(after)
    counts.subtract(collections.Counter(before))
    return {name: n for name, n in counts.items() if n}


# =========================================================================== part 1: bad input
# --------------------------------------------------------------------------- chat bodies

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


# --------------------------------------------------------------------------- body sizes


async def send_in_background(nursery: trio.Nursery, connection: RawConnection, data: bytes, piece: int = 65536) -> None:
    """Send a large body while the response is read; the proxy may close before it is all sent."""

    async def pump() -> None:
        for start in range(0, len(data), piece):
            if not await connection.send(data[start : start + piece]):
                return

    nursery.start_soon(pump)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_huge_body_over_default_limit_is_413(
    proxy: Proxy, providers: Providers, caplog: pytest.LogCaptureFixture, framing: str
) -> None:
    """A body over the default max_body_bytes (10 MiB), framed either way, is a 413 in OpenAI's
    shape and the connection is closed rather than read to the end."""
    limit = proxy.config.max_body_bytes
    body = dumps(chat_body(messages=[{"role": "user", "content": "x" * (limit + 1000)}]))
    if framing == "chunked":
        payload = b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + 65536]), body[i : i + 65536])
                           for i in range(0, len(body), 65536)) + b"0\r\n\r\n"
        head = raw_request("POST", CHAT, None, headers={"transfer-encoding": "chunked", "content-type": "application/json"})
    else:
        payload = body
        head = raw_request("POST", CHAT, None, headers={"content-length": str(len(body)), "content-type": "application/json"})
    with trio.fail_after(10):
        connection = await RawConnection.open(proxy)
        async with trio.open_nursery() as nursery:
            await connection.send(head)
            await send_in_background(nursery, connection, payload)
            response = await connection.read_response()
            assert await connection.closed_within(5)
            nursery.cancel_scope.cancel()
        await connection.aclose()
    assert_openai_error(response, 413, "request_too_large")
    assert providers.cerebras.received == [] and providers.chutes.received == []
    await assert_healthy(proxy, caplog)


@pytest.mark.parametrize("declared", ["10485761", "999999999999999", "18446744073709551616"])
async def test_absurd_content_length_is_refused_at_once(proxy: Proxy, caplog: pytest.LogCaptureFixture, declared: str) -> None:
    """A content-length far over the limit is refused before any body byte is sent: 413 from
    the proxy (or 400 from the HTTP layer for a number it cannot parse), then the connection closes."""
    with trio.fail_after(5):
        connection = await RawConnection.open(proxy)
        await connection.send(raw_request("POST", CHAT, None, headers={"content-length": declared,
                                                                       "content-type": "application/json"}))
        response = await connection.read_response()
        assert await connection.closed_within(3)
        await connection.aclose()
    if response.status_code == 413:
        assert_openai_error(response, 413, "request_too_large")
    else:
        assert response.status_code == 400, response
    await assert_healthy(proxy, caplog)


async def test_expect_100_continue_with_huge_length_is_413_without_continue(
    proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    """`Expect: 100-continue` over the limit: the client is told 413 (not invited to upload)."""
    with trio.fail_after(5):
        connection = await RawConnection.open(proxy)
        await connection.send(raw_request("POST", CHAT, None, headers={
            "content-length": str(proxy.config.max_body_bytes * 2), "content-type": "application/json",
            "expect": "100-continue"}))
        response = await connection.read_response()
        while response.status_code == 100:
            response = await connection.read_response()
        await connection.aclose()
    assert_openai_error(response, 413, "request_too_large")
    await assert_healthy(proxy, caplog)


async def test_content_length_shorter_than_body(proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    """A content-length that cuts the JSON short: 400 invalid_json for the request, and the
    leftover bytes (not a request) are refused by the HTTP layer and the connection closed."""
    body = dumps(chat_body())
    data = raw_request("POST", CHAT, body, headers={"content-length": str(len(body) // 2)}, close=False) + b"\r\n\r\n"
    with trio.fail_after(5):
        connection = await RawConnection.open(proxy)
        await connection.send(data)
        first = await connection.read_response()
        assert await connection.closed_within(3)
        await connection.aclose()
    assert_openai_error(first, 400, "invalid_json")
    await assert_healthy(proxy, caplog)


async def test_content_length_longer_than_body_then_eof(proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    """The client declares more than it sends and half-closes: answered 400 or closed, no hang."""
    body = dumps(chat_body())
    with trio.fail_after(5):
        connection = await RawConnection.open(proxy)
        await connection.send(raw_request("POST", CHAT, body, headers={"content-length": str(len(body) + 50)}))
        await connection.stream.send_eof()
        assert await connection.closed_within(3)
        await connection.aclose()
    if connection.buffer:
        assert connection.buffer.startswith(b"HTTP/1.1 400"), bytes(connection.buffer[:200])
    await assert_healthy(proxy, caplog)


# --------------------------------------------------------------------------- protocol-level junk

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


@pytest.mark.parametrize("data", PROTOCOL_JUNK)
async def test_protocol_junk_is_refused_and_closed(proxy: Proxy, caplog: pytest.LogCaptureFixture, data: bytes) -> None:
    """Bytes that are not acceptable HTTP/1.1 are refused by the HTTP layer with a 4xx (or
    simply closed) and the connection ends; the proxy does not notice otherwise."""
    with trio.fail_after(5):
        connection = await RawConnection.open(proxy)
        await connection.send(data)
        assert await connection.closed_within(3), "connection left open after junk"
        await connection.aclose()
    if connection.buffer:
        status = int(bytes(connection.buffer).split(b" ", 2)[1])
        assert 400 <= status < 500 or status == 501, bytes(connection.buffer[:300])
    await assert_healthy(proxy, caplog)


async def test_large_but_acceptable_headers_are_served(proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    """Headers below the HTTP layer's limit (a 12 KB x-request-id, 8 KB of odd bytes) are fine;
    an id that long is replaced by a new one rather than written into every log line."""
    request_id = "r" * 12_000
    with trio.fail_after(5):
        response = await exchange(proxy, raw_request("POST", CHAT, dumps(chat_body()), headers={
            "x-request-id": request_id, "x-odd": "\u00e9\u00ff" * 2000}))
    assert response.status_code == 200, response.text
    assert len(response.headers["x-request-id"]) == 16
    await assert_healthy(proxy, caplog)


# --------------------------------------------------------------------------- paths and methods


@pytest.mark.parametrize(
    "target",
    [
        "/", "/v1", "/v1/", "/v2/chat/completions", "/v1/chat/completions/", "//v1/chat/completions",
        "/v1/chat/completions/../completions", "/v1/completions", "/v1/embeddings", "/V1/CHAT/COMPLETIONS",
"/%00%ff%fe", "/" + "x" * 8000, "*", "http://evil.example/nothing-here",
    ],
)
async def test_unknown_path_is_404(proxy: Proxy, caplog: pytest.LogCaptureFixture, target: str) -> None:
    """Any path the proxy does not serve gets 404 in OpenAI's shape, whatever its bytes."""
    method = "OPTIONS" if target == "*" else "POST"
    response = await exchange(proxy, raw_request(method, target, dumps(chat_body())))
    assert_openai_error(response, (404, 405))
    if target not in ("*", "/"):  # `/` is the dashboard's page: POST there is 405
        assert response.status_code == 404
    await assert_healthy(proxy, caplog)


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", CHAT), ("PUT", CHAT), ("PATCH", CHAT), ("DELETE", CHAT), ("OPTIONS", CHAT), ("TRACE", CHAT),
        ("BREW", CHAT), ("HEAD", CHAT), ("POST", "/v1/models"), ("DELETE", "/v1/models"),
        ("POST", f"/v1/models/{MODEL}"), ("POST", "/healthz"), ("PUT", "/healthz"),
    ],
)
async def test_wrong_method_is_405(proxy: Proxy, caplog: pytest.LogCaptureFixture, method: str, target: str) -> None:
    """A known path with a wrong (or invented) method is 405 with Allow, in OpenAI's shape."""
    head = method == "HEAD"
    response = await exchange(proxy, raw_request(method, target, None if head else dumps(chat_body())), head=head)
    assert response.status_code == 405, response
    assert response.headers.get("allow")
    if not head:
        assert_openai_error(response, 405, "method_not_allowed")
    await assert_healthy(proxy, caplog)


async def test_websocket_upgrade_is_refused_with_a_4xx(proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    """A WebSocket handshake is refused with a 4xx (the proxy speaks no WebSocket), not a 500."""
    response = await exchange(proxy, raw_request("GET", "/v1/chat/completions", headers={
        "upgrade": "websocket", "connection": "upgrade", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        "sec-websocket-version": "13"}, close=False))
    assert 400 <= response.status_code < 500, response
    await assert_healthy(proxy, caplog)


# --------------------------------------------------------------------------- HTTP/1.0, pipelining


async def test_http_1_0_requests(proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    """HTTP/1.0 clients: health, a completion, a bad body and a stream all work and close."""
    health = await exchange(proxy, raw_request("GET", "/healthz", version="HTTP/1.0"))
    assert health.status_code == 200 and health.json()["status"] == "ok"
    plain = await exchange(proxy, raw_request("POST", CHAT, dumps(chat_body()), version="HTTP/1.0"))
    assert plain.status_code == 200 and plain.json()["model"] == MODEL
    bad = await exchange(proxy, raw_request("POST", CHAT, b"{oops", version="HTTP/1.0"))
    assert_openai_error(bad, 400, "invalid_json")
    streamed = await exchange(proxy, raw_request("POST", CHAT, dumps(chat_body(stream=True)), version="HTTP/1.0"))
    assert streamed.status_code == 200
    assert "chunked" not in streamed.headers.get("transfer-encoding", "")  # HTTP/1.0 has no chunking
    events = sse_events(streamed.body)
    assert events[-1] == "[DONE]" and stream_text(events) == completion_text("cerebras")
    await assert_healthy(proxy, caplog)


async def test_pipelined_requests_are_answered_in_order(proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    """Five requests written at once on one connection get five answers in order."""
    requests = [
        raw_request("GET", "/healthz", close=False, headers={"x-request-id": "p1"}),
        raw_request("POST", CHAT, b"{broken", close=False, headers={"x-request-id": "p2"}),
        raw_request("POST", CHAT, dumps(chat_body()), close=False, headers={"x-request-id": "p3"}),
        raw_request("POST", CHAT, dumps(chat_body(stream=True)), close=False, headers={"x-request-id": "p4"}),
        raw_request("GET", "/nowhere", close=True, headers={"x-request-id": "p5"}),
    ]
    with trio.fail_after(10):
        connection = await RawConnection.open(proxy)
        await connection.send(b"".join(requests))
        responses = [await connection.read_response() for _ in requests]
        assert await connection.closed_within(3)
        await connection.aclose()
    assert [r.headers["x-request-id"] for r in responses] == ["p1", "p2", "p3", "p4", "p5"]
    assert responses[0].status_code == 200
    assert_openai_error(responses[1], 400, "invalid_json")
    assert responses[2].status_code == 200 and responses[2].json()["model"] == MODEL
    assert responses[3].status_code == 200 and sse_events(responses[3].body)[-1] == "[DONE]"
    assert_openai_error(responses[4], 404)
    await assert_healthy(proxy, caplog)


# --------------------------------------------------------------------------- slow and stalled clients


async def test_slow_idle_and_stalled_clients_are_cut_off(
    start_proxy: StartProxy, providers: Providers, caplog: pytest.LogCaptureFixture
) -> None:
    """Clients that hold a connection without finishing their request are answered or
    disconnected within a bounded time, while the proxy keeps serving others:

    - slow-loris: the request head trickled a byte at a time, never finished;
    - idle: connects and sends nothing;
    - chunked-never-ends: a chunked body whose last chunk never comes;
    - content-length-short: a body sent only in part, then nothing;
    - trickled-body: a body trickled a byte at a time, never finished.

    (Run concurrently, as each waits out the same bound.) Hypercorn closes the first two after
    its keep_alive_timeout (5 s); for the body stalls only the application can, with a 408 in
    OpenAI's shape or a close; without that each such client holds a connection and a task
    forever (and delays shutdown by the whole grace period)."""
    proxy = await start_proxy(request_timeout_ms=2000)
    body = dumps(chat_body())
    head_only = raw_request("POST", CHAT, None, headers={"content-length": "100"}, close=False)
    cases: dict[str, tuple[bytes, bytes]] = {  # (sent at once, trickled every 0.2 s)
        "slow-loris": (b"", head_only[:-2]),
        "idle": (b"", b""),
        "chunked-never-ends": (raw_request("POST", CHAT, None, headers={"transfer-encoding": "chunked"}, close=False)
                               + b"%x\r\n%s\r\n" % (20, body[:20]), b""),
        "content-length-short": (raw_request("POST", CHAT, None, headers={"content-length": str(len(body))}, close=False)
                                 + body[:20], b""),
        "trickled-body": (raw_request("POST", CHAT, None, headers={"content-length": "100000"}, close=False), b" " * 1000),
    }
    outcome: dict[str, str] = {}

    async def stall(name: str, first: bytes, trickle: bytes) -> None:
        connection = await RawConnection.open(proxy)
        if first:
            await connection.send(first)
        start = trio.current_time()
        with trio.move_on_after(STALL_BOUND):
            for index in range(10**6):
                with trio.move_on_after(0.2):
                    if not await connection.fill():
                        break
                if index < len(trickle) and not await connection.send(trickle[index : index + 1]):
                    break
        elapsed = trio.current_time() - start
        answer = bytes(connection.buffer).split(b"\r\n", 1)[0].decode("latin-1")
        if not connection.eof and not answer:
            outcome[name] = f"still open and unanswered after {elapsed:.1f} s"
        elif answer and not answer.startswith(("HTTP/1.1 408", "HTTP/1.1 400")):
            outcome[name] = f"unexpected answer {answer!r}"
        else:
            outcome[name] = f"{'answered ' + answer if answer else 'closed'} after {elapsed:.1f} s"
        await connection.aclose()

    with trio.fail_after(STALL_BOUND + 3):
        async with trio.open_nursery() as nursery:
            for name, (first, trickle) in cases.items():
                nursery.start_soon(stall, name, first, trickle)
            await trio.sleep(0.5)
            await assert_healthy(proxy)  # others are served while the slow ones hang on
    hung = {name: what for name, what in outcome.items() if not what.startswith(("answered", "closed"))}
    assert not hung, f"not cut off within {STALL_BOUND} s: {hung}; all: {outcome}"
    await assert_healthy(proxy, caplog)


async def test_client_gone_mid_body_is_harmless(proxy: Proxy, providers: Providers, caplog: pytest.LogCaptureFixture) -> None:
    """Clients that vanish mid-body (FIN or RST) leave no trace but a log line."""
    body = dumps(chat_body())
    with trio.fail_after(5):
        for rst in (False, True):
            connection = await RawConnection.open(proxy)
            await connection.send(raw_request("POST", CHAT, None, headers={"content-length": str(len(body))}) + body[:10])
            await trio.sleep(0.05)
            if rst:
                abort_with_reset(connection.stream)
            await connection.aclose()
    await trio.sleep(0.1)
    assert providers.cerebras.received == []
    await assert_healthy(proxy, caplog)


# --------------------------------------------------------------------------- everything at once


async def test_barrage_of_bad_input_leaves_the_proxy_healthy(
    nursery: trio.Nursery, providers: Providers, caplog: pytest.LogCaptureFixture
) -> None:
    """Every bad body and every piece of protocol junk above, 3 times over and concurrently,
    at one proxy: afterwards it is healthy, its task tree is back to what it was, nothing
    escaped into the log, and it shuts down promptly."""
    config = proxy_config(providers, request_timeout_ms=2000)
    shutdown = trio.Event()
    async with trio.open_nursery() as own:
        base_url = await own.start(run_proxy, config, shutdown)
        proxy = Proxy(base_url, config, shutdown)
        proxy_task = next(t for t in all_tasks() if t.name.endswith("run_proxy") and _local(t, "shutdown") is shutdown)
        await assert_healthy(proxy)
        before = busy_tasks(proxy_task)
        limiter = trio.CapacityLimiter(32)

        async def one(data: bytes) -> None:
            async with limiter:
                connection = await RawConnection.open(proxy)
                await connection.send(data)
                await connection.closed_within(3)
                await connection.aclose()

        inputs = [raw_request("POST", CHAT, p.values[0]) for p in BAD_BODIES] + [p.values[0] for p in PROTOCOL_JUNK]
        with trio.fail_after(15):
            async with trio.open_nursery() as barrage:
                for _ in range(3):
                    for data in inputs:
                        barrage.start_soon(one, data)
        await assert_healthy(proxy)
        assert await eventually(lambda: busy_tasks(proxy_task) == before), task_difference(before, busy_tasks(proxy_task))
        assert await eventually(lambda: idle_connections_only(proxy_task))
        assert unhandled_errors(caplog) == []
        shutdown.set()
        with trio.fail_after(2):  # Hypercorn would wait its 3 s grace for a hung handler
            await _wait_for_exit(own)


async def _wait_for_exit(nursery: trio.Nursery) -> None:
    while nursery.child_tasks:
        await trio.sleep(0.01)


# =========================================================================== part 2: provider faults


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


async def test_sse_without_done_after_finish_is_completed(
    nursery: trio.Nursery, providers: Providers, start_proxy: StartProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """A provider that finishes its answer (finish_reason) but closes without `[DONE]`: the
    client gets the whole answer and a `[DONE]`, no error event."""
    server = await start_fault_server(nursery, lambda s: send_then_close(s, SSE_HEAD, ROLE, HELLO, WORLD, FINISH))
    proxy = await start_proxy(**fault_config(providers, cerebras_url=server.url))
    async with http_client(base_url=proxy.base_url, timeout=5.0) as client:
        status, _, body = await stream_chat(client, chat_body())
    events = sse_events(body)
    assert status == 200 and stream_text(events) == "Hello world" and events[-1] == "[DONE]"
    assert not any(isinstance(e, dict) and "error" in e for e in events)
    assert await eventually(lambda: server.open == 0)
    server.healed = True
    await assert_healthy(proxy, caplog)


# --------------------------------------------------------------------------- the emulator's faults

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


# --------------------------------------------------------------------------- nothing left behind


@attrs.define
class KeepAliveProvider:
    """A well-behaved provider on persistent connections whose streams send `[DONE]` and then,
    a moment later (as over a real network), the chunked body's terminator."""

    url: str = ""
    accepted: int = 0
    answered: int = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        try:
            while (request := await read_raw_request(stream)) is not None:
                target, body = request
                if target.endswith("/models"):
                    payload, streamed = MODELS_LIST, False
                else:
                    streamed = bool(json.loads(body).get("stream"))
                    payload = dumps({"id": "chatcmpl-ka", "object": "chat.completion", "created": 0, "model": "m",
                                     "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello world"},
                                                  "finish_reason": "stop"}]})
                if not streamed:
                    await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                                          % (len(payload), payload))
                else:
                    await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                                          b"transfer-encoding: chunked\r\n\r\n")
                    for event in (ROLE, HELLO, WORLD, FINISH, b"data: [DONE]\n\n"):
                        await stream.send_all(b"%x\r\n%s\r\n" % (len(event), event))
                    await trio.sleep(0.02)
                    await stream.send_all(b"0\r\n\r\n")
                self.answered += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await stream.aclose()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_upstream_connections_are_reused_not_piled_up(
    nursery: trio.Nursery, providers: Providers, start_proxy: StartProxy, caplog: pytest.LogCaptureFixture, stream: bool
) -> None:
    """Ten requests in a row that all end normally: the proxy reuses its pooled connection to
    the provider rather than dropping it and opening a new one per request (against a real
    provider, a TCP and TLS handshake each time, and a connection count that keeps growing)."""
    upstream = KeepAliveProvider()
    listeners = await nursery.start(functools.partial(trio.serve_tcp, host="127.0.0.1"), upstream.handle, 0)
    upstream.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/v1"
    proxy = await start_proxy(cerebras={"base_url": upstream.url, "requests_per_minute": 1000, "tokens_per_minute": 10**9})
    async with http_client(base_url=proxy.base_url, timeout=5.0) as client:
        for i in range(11):
            if stream:
                status, _, body = await stream_chat(client, chat_body())
                assert status == 200 and stream_text(sse_events(body)) == "Hello world", body
            else:
                response = await client.post("/chat/completions", json=chat_body())
                assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "Hello world"
            if i == 0:
                before = upstream.accepted  # the first request (or the health probe) opened one
    opened = upstream.accepted - before
    assert opened == 0, f"{opened} new upstream connections for 10 {'streamed' if stream else 'plain'} requests"
    await assert_healthy(proxy, caplog)


async def test_faults_leave_no_task_or_connection_behind(
    nursery: trio.Nursery, providers: Providers, caplog: pytest.LogCaptureFixture
) -> None:
    """Many faulty requests, concurrently, against a proxy whose providers misbehave in every
    way above: every client gets an answer; afterwards the proxy's task tree is back to what it
    was, no connection to a faulty provider is open, the emulators' connection counts stop
    growing, and the proxy shuts down promptly (not after Hypercorn's grace period)."""
    behaviours = [b for b, _ in BEFORE_FIRST_BYTE.values()] + list(AFTER_FIRST_BYTE.values())
    counter = iter(range(10**9))

    async def rotating(stream: trio.SocketStream) -> None:
        await behaviours[next(counter) % len(behaviours)](stream)

    server = await start_fault_server(nursery, rotating)
    providers.chutes.faults = Faults(reset_mid_stream=True, remaining=5)
    overrides = fault_config(providers, cerebras_url=server.url)
    overrides["cerebras"].update(requests_per_minute=100_000, tokens_per_minute=10**9)  # let every request reach it
    config = proxy_config(providers, **overrides)
    shutdown = trio.Event()
    answers: list[int] = []
    async with trio.open_nursery() as own:
        base_url = await own.start(run_proxy, config, shutdown)
        proxy = Proxy(base_url, config, shutdown)
        proxy_task = next(t for t in all_tasks() if t.name.endswith("run_proxy") and _local(t, "shutdown") is shutdown)
        before = busy_tasks(proxy_task)

        async def one(i: int, client: httpx.AsyncClient) -> None:
            if i % 2:
                status, _, body = await stream_chat(client, chat_body(), timeout=8)
                if status == 200:
                    assert sse_events(body)[-1] == "[DONE]"
                else:
                    assert_error_document(json.loads(body))
            else:
                response = await client.post("/chat/completions", json=chat_body())
                if response.status_code != 200:
                    assert_error_document(response.json())
                status = response.status_code
            answers.append(status)

        with trio.fail_after(15):
            async with http_client(base_url=proxy.base_url, timeout=8.0) as client:
                async with trio.open_nursery() as clients:
                    for i in range(4 * len(behaviours)):
                        clients.start_soon(one, i, client)
        assert len(answers) == 4 * len(behaviours)
        assert server.requests >= len(behaviours), "not every fault was exercised"
        assert await eventually(lambda: server.open == 0), f"{server.open} connections to the fault server left open"
        assert await eventually(lambda: busy_tasks(proxy_task) == before), task_difference(before, busy_tasks(proxy_task))
        assert await eventually(lambda: idle_connections_only(proxy_task))
        counts = (providers.cerebras.connections, providers.chutes.connections, server.accepted)
        await trio.sleep(0.3)
        assert (providers.cerebras.connections, providers.chutes.connections, server.accepted) == counts, \
            "connections to the providers still growing after the requests ended"
        await assert_healthy(proxy)
        assert unhandled_errors(caplog) == []
        shutdown.set()
        with trio.fail_after(2):
            await _wait_for_exit(own)
    chutes = emulator_task(providers.chutes)
    assert await eventually(lambda: open_connections(chutes) == 0), "connections to chutes outlived the proxy"
