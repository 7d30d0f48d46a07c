"""Attack trioproxy as issue 11 did, and print one line per case and a summary.

trioproxy runs as a subprocess (`python -m trioproxy --config <tmp>/attack.toml`), in front of
two hostile upstreams in this process (raw ASGI apps under Hypercorn) that answer normally or
misbehave on demand: echo the API key they were sent in a 401, send a 10 MB error, trickle a
body or a stream a byte a second, stall. The cases:

- body: malformed chat bodies (JSON, types, NaN, 1e400, deep nesting, sizes, encodings);
- http: raw bytes on a socket (ambiguous framing, absolute-form target, bad request lines,
  huge headers, unknown transfer codings, methods, paths, pipelining, HTTP/2);
- keys: client-key variants and the operator views with and without a key;
- slow: slowloris headers, a trickled body, idle connections, streams that are never read,
  a client leaving mid-stream, accept() failing for lack of file descriptors (EMFILE);
- upstream: key echo, a 10 MB error, a trickled body, a silent stream, a stall;
- state: damaged state files at start, kill -9 while the state is being written.

Every response body, header and log line is searched for the provider and client keys. A case
passes when the proxy answered as it should (status, OpenAI's error shape where trioproxy
writes the error, bounded time and size). Crashes: the proxy process dying, or a traceback
in its log. Loopback only; every case is bounded in count and time.

    .venv/bin/python bench/attack.py            # about two minutes
    .venv/bin/python bench/attack.py --only body,http

Exit status 0 when every case passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import h11
import httpx
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from soak import free_port, rss_kib
from trioproxy.config.env import ENV_VARS

MODEL = "qwen-3-coder"
CEREBRAS_KEY = "csk-attack-provider-key-0001"
CHUTES_KEY = "cpk_attack-provider-key-0002"
CLIENT_KEY = "client-attack-key-0003"
SECRETS = (CEREBRAS_KEY, CHUTES_KEY, CLIENT_KEY)
REQUEST_TIMEOUT_MS = 2_000
# The bounds for trickling providers (issue 11 item 4, the provider-side branch), short enough
# for the cases; through the environment, which a proxy without these settings ignores.
TRICKLE_TIMEOUTS = {"FIRST_EVENT_TIMEOUT": "4000", "ANSWER_TIMEOUT": "5000", "STREAM_IDLE_TIMEOUT": "4000"}
PROBE_INTERVAL_MS = 1_000  # the health prober meets the hostile modes too (its last_error is shown)
CASE_TIMEOUT = 25.0  # no case may take longer, whatever the proxy does
START_TIMEOUT = 15.0
UNHANDLED = re.compile(r"Traceback|Error in ASGI|Exception in callback|Task exception")
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


# --------------------------------------------------------------------------- hostile upstreams


@attrs.define
class Hostile:
    """An OpenAI-style provider whose behaviour the attack switches between cases."""

    name: str
    key: str
    model: str
    mode: str = "normal"  # normal | echo_key | huge_error | trickle_body | silent_stream | stall

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        sent_key = dict(scope["headers"]).get(b"authorization", b"").decode().removeprefix("Bearer ")
        if scope["path"].endswith("/models"):  # the health prober's request
            if self.mode == "echo_key":
                await self._echo_key(send, False, sent_key)
            else:
                await respond(send, 200, {"object": "list", "data": [{"id": self.model, "object": "model"}]})
            return
        stream = json.loads(body or b"{}").get("stream") is True
        await getattr(self, "_" + self.mode)(send, stream, sent_key)

    async def _normal(self, send: Any, stream: bool, sent_key: str) -> None:
        if not stream:
            await respond(send, 200, completion(self.name))
            return
        await start_sse(send)
        for event in (chunk(self.name, "Hello from "), chunk(self.name, self.name, finish="stop")):
            await send({"type": "http.response.body", "body": b"data: " + json.dumps(event).encode() + b"\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    async def _echo_key(self, send: Any, stream: bool, sent_key: str) -> None:
        # What OpenAI-style providers say to a bad key (the defect 1).
        await respond(send, 401, {"error": {"message": f"Incorrect API key provided: {sent_key}.", "type": "invalid_request_error", "code": "invalid_api_key"}})

    async def _huge_error(self, send: Any, stream: bool, sent_key: str) -> None:
        await respond(send, 500, {"error": {"message": "x" * 10_000_000, "type": "server_error"}})

    async def _trickle_body(self, send: Any, stream: bool, sent_key: str) -> None:
        document = json.dumps(completion(self.name)).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        for byte in document[:-1]:
            await send({"type": "http.response.body", "body": bytes([byte]), "more_body": True})
            await trio.sleep(1)
        await send({"type": "http.response.body", "body": document[-1:]})

    async def _silent_stream(self, send: Any, stream: bool, sent_key: str) -> None:
        await start_sse(send)
        await send({"type": "http.response.body", "body": b"data: " + json.dumps(chunk(self.name, "Hi")).encode() + b"\n\n", "more_body": True})
        for _ in range(600):  # a byte a second: never silent long enough for a gap timeout
            await trio.sleep(1)
            await send({"type": "http.response.body", "body": b":", "more_body": True})

    async def _stall(self, send: Any, stream: bool, sent_key: str) -> None:
        await trio.sleep(600)


def completion(name: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": name,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": f"Hello from {name}"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }


def chunk(name: str, text: str, finish: str | None = None) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": name,
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


async def respond(send: Any, status: int, document: Any) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(document).encode()})


async def start_sse(send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})


def hostile_config() -> HypercornConfig:
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = config.errorlog = None
    config.graceful_timeout = 0.1
    return config


# --------------------------------------------------------------------------- the proxy process


@attrs.define
class Proxy:
    """trioproxy in a subprocess; its stderr goes to a file searched afterwards."""

    workdir: Path
    cerebras_url: str
    chutes_url: str
    port: int = attrs.Factory(free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = attrs.field(init=False)
    logs: list[Path] = attrs.Factory(list)

    def __attrs_post_init__(self) -> None:
        self.log_path = self.workdir / "proxy-0.log"

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self, **extra: Any) -> Path:
        settings = {
            "port": self.port, "log_level": "DEBUG", "request_timeout_ms": REQUEST_TIMEOUT_MS,
            "state_file": str(self.workdir / "state.json"), "state_save_interval_ms": 200,
            "health_check_interval_ms": PROBE_INTERVAL_MS, "shutdown_grace_ms": 2_000, **extra,
        }
        lines = [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
        lines += [f'[cerebras]\nbase_url = "{self.cerebras_url}"\nrequests_per_minute = 1000\ntokens_per_minute = 10000000',
                  f'[chutes]\nbase_url = "{self.chutes_url}"']
        path = self.workdir / "attack.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    async def start(self, preexec: Callable[[], None] | None = None, **settings: Any) -> None:
        env = {name: value for name, value in os.environ.items() if name not in ENV_VARS}
        env.update(CEREBRAS_API_KEY=CEREBRAS_KEY, CHUTES_API_KEY=CHUTES_KEY, PROXY_API_KEYS=CLIENT_KEY,
                   NO_PROXY="127.0.0.1", no_proxy="127.0.0.1", **TRICKLE_TIMEOUTS)
        self.log_path = self.workdir / f"proxy-{len(self.logs)}.log"
        self.logs.append(self.log_path)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "trioproxy", "--config", str(self.config(**settings))],
                cwd=self.workdir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=preexec,
            )
        with trio.move_on_after(START_TIMEOUT):
            async with httpx.AsyncClient() as client:
                while self.process.poll() is None:
                    try:
                        await client.get(self.root + "/healthz")
                        return
                    except httpx.TransportError:
                        await trio.sleep(0.05)
        raise RuntimeError(f"trioproxy did not start (exit {self.process.poll()}); see {self.log_path}")

    async def stop(self) -> int | None:
        """SIGTERM and wait; the exit code (None if it had to be killed)."""
        if self.process is None or self.process.poll() is not None:
            return self.process.poll() if self.process else None
        self.process.send_signal(signal.SIGTERM)
        with trio.move_on_after(10):
            while self.process.poll() is None:
                await trio.sleep(0.05)
            return self.process.returncode
        self.process.kill()
        return None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


# --------------------------------------------------------------------------- bookkeeping


@attrs.define
class Report:
    tried: int = 0
    failed: list[str] = attrs.Factory(list)
    errors_expected: int = 0  # responses trioproxy itself should have written in OpenAI's shape
    errors_shaped: int = 0
    crashes: list[str] = attrs.Factory(list)
    seen: list[bytes] = attrs.Factory(list)  # every byte the attack received, searched for keys
    pending: list[str] = attrs.Factory(list)  # failures that need the provider-side branch

    def case(self, group: str, name: str, ok: bool, detail: str, provider_side: bool = False) -> None:
        self.tried += 1
        mark = "ok  " if ok else "FAIL"
        print(f"{mark} {group:<9} {name:<44} {detail}", flush=True)
        if not ok:
            self.failed.append(f"{group}/{name}")
            if provider_side:
                self.pending.append(f"{group}/{name}")

    def shaped(self, body: bytes) -> bool:
        self.errors_expected += 1
        ok = is_openai_error(body)
        self.errors_shaped += ok
        return ok


def is_openai_error(body: bytes) -> bool:
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(error, dict) and {"message", "type", "param", "code"} <= error.keys()


def response_bytes(response: httpx.Response) -> bytes:
    head = "".join(f"{k}: {v}\n" for k, v in response.headers.items()).encode()
    return head + response.content


async def raw_exchange(proxy: Proxy, data: bytes | list[bytes], pause: float = 0.0, wait: float = 5.0) -> tuple[bytes, bool]:
    """Send raw bytes (pieces `pause` apart) while reading; what came back within `wait`, and
    whether the server closed the connection."""
    received = bytearray()
    pieces = data if isinstance(data, list) else [data]
    closed = False

    async def send_pieces(stream: trio.SocketStream) -> None:
        try:
            for piece in pieces:
                await stream.send_all(piece)
                await trio.sleep(pause)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the server hung up: what it said is still read

    with trio.move_on_after(wait):
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        async with stream, trio.open_nursery() as nursery:
            nursery.start_soon(send_pieces, stream)
            try:
                while chunk := await stream.receive_some():
                    received += chunk
            except trio.BrokenResourceError:
                pass
            closed = True
            nursery.cancel_scope.cancel()
    return bytes(received), closed


def status_of(raw: bytes) -> int | None:
    match = re.match(rb"HTTP/1\.[01] (\d{3})", raw)
    return int(match.group(1)) if match else None


def body_of(raw: bytes) -> bytes:
    """The body of the first response in `raw`, de-chunked by h11 (b"" when unreadable)."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(raw)
    body = b""
    try:
        while not isinstance(event := client.next_event(), (h11.EndOfMessage, h11.ConnectionClosed)):
            if event is h11.NEED_DATA:
                client.receive_data(b"")
            elif isinstance(event, h11.Data):
                body += event.data
    except h11.RemoteProtocolError:
        return b""
    return body


# --------------------------------------------------------------------------- cases


AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}


async def body_cases(proxy: Proxy, report: Report) -> None:
    big = b'{"model":"qwen-3-coder","messages":[{"role":"user","content":"' + b"a" * 11_000_000 + b'"}]}'
    cases: dict[str, tuple[bytes, int]] = {
        "not JSON": (b"{nope", 400), "empty": (b"", 400), "JSON array": (b"[]", 400), "JSON string": (b'"hi"', 400),
        "JSON null": (b"null", 400), "messages missing": (b'{"model":"qwen-3-coder"}', 400),
        "messages empty": (b'{"model":"qwen-3-coder","messages":[]}', 400),
        "messages a string": (b'{"model":"qwen-3-coder","messages":"hi"}', 400),
        "message not an object": (b'{"model":"qwen-3-coder","messages":[1]}', 400),
        "stream a string": (json.dumps({**CHAT, "stream": "yes"}).encode(), 400),
        "stream_options a list": (json.dumps({**CHAT, "stream": True, "stream_options": []}).encode(), 400),
        "model a number": (b'{"model":3,"messages":[{"role":"user","content":"x"}]}', 400),
        "unknown model": (json.dumps({**CHAT, "model": "gpt-4o"}).encode(), 404),
        "NaN": (b'{"model":"qwen-3-coder","messages":[{"role":"user","content":"x"}],"temperature":NaN}', 400),
        "Infinity": (b'{"model":"qwen-3-coder","messages":[{"role":"user","content":"x"}],"temperature":Infinity}', 400),
        "1e400": (b'{"model":"qwen-3-coder","messages":[{"role":"user","content":"x"}],"temperature":1e400}', 400),
        "100,000-deep nesting": (b'{"model":"qwen-3-coder","messages":' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),
        "invalid UTF-8": (b'{"model":"qwen-3-coder","messages":[{"role":"user","content":"\xff\xfe"}]}', 400),
        "trailing comma": (b'{"model":"qwen-3-coder","messages":[{"role":"user","content":"x"}],}', 400),
        "5,000-digit integer": (b'{"model":"qwen-3-coder","messages":[{"role":"user","content":"x"}],"seed":' + b"9" * 5000 + b"}", 400),
        "11 MB body": (big, 413),
    }
    async with httpx.AsyncClient(base_url=proxy.root, timeout=CASE_TIMEOUT) as client:
        for name, (raw, expected) in cases.items():
            response = await client.post("/v1/chat/completions", content=raw, headers={**AUTH, "content-type": "application/json"})
            report.seen.append(response_bytes(response))
            shaped = report.shaped(response.content)
            report.case("body", name, response.status_code == expected and shaped, f"{response.status_code} (want {expected}), OpenAI shape: {shaped}")
        fine = {
            "lone surrogate": b'{"model":"qwen-3-coder","messages":[{"role":"user","content":"\\ud800"}]}',
            "UTF-16 body": json.dumps(CHAT).encode("utf-16"),
            "unknown fields pass": json.dumps({**CHAT, "frobnicate": {"a": [1, 2]}}).encode(),
        }
        for name, raw in fine.items():
            response = await client.post("/v1/chat/completions", content=raw, headers={**AUTH, "content-type": "application/json"})
            report.seen.append(response_bytes(response))
            report.case("body", name, response.status_code == 200, f"{response.status_code} (want 200)")


async def http_cases(proxy: Proxy, report: Report) -> None:
    host = b"host: 127.0.0.1\r\n"
    auth = f"authorization: Bearer {CLIENT_KEY}\r\n".encode()
    chat = json.dumps(CHAT).encode()
    ambiguous = (b"POST /v1/chat/completions HTTP/1.1\r\n" + host + auth + b"content-length: 5\r\n"
                 b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n")
    # name: (bytes, wanted status, whether trioproxy writes the body, must the connection close)
    cases: dict[str, tuple[bytes, int, bool, bool]] = {
        "Content-Length + Transfer-Encoding": (ambiguous, 400, True, True),
        "absolute-form target": (f"GET {proxy.root}/v1/models HTTP/1.1\r\n".encode() + host + auth + b"connection: close\r\n\r\n", 200, False, True),
        "unknown path": (b"GET /wp-admin HTTP/1.1\r\n" + host + b"connection: close\r\n\r\n", 404, True, True),
        "wrong method": (b"DELETE /v1/chat/completions HTTP/1.1\r\n" + host + auth + b"connection: close\r\n\r\n", 405, True, True),
        "garbage request line": (b"HELLO\r\n\r\n", 400, False, True),
        "request line without version": (b"GET /\r\n\r\n", 400, False, True),
        "100 KB header": (b"GET /healthz HTTP/1.1\r\n" + host + b"x-big: " + b"a" * 100_000 + b"\r\n\r\n", 431, False, True),
        "transfer-encoding gzip": (b"POST /v1/chat/completions HTTP/1.1\r\n" + host + b"transfer-encoding: gzip\r\n\r\n", 501, False, True),
        "negative content-length": (b"POST /v1/chat/completions HTTP/1.1\r\n" + host + b"content-length: -5\r\n\r\n", 400, False, True),
        "two content-lengths": (b"POST /v1/chat/completions HTTP/1.1\r\n" + host + b"content-length: 5\r\ncontent-length: 6\r\n\r\nhello", 400, False, True),
        "no host (HTTP/1.1)": (b"GET /healthz HTTP/1.1\r\n\r\n", 400, False, True),
        "websocket upgrade": (b"GET /v1/chat/completions HTTP/1.1\r\n" + host + b"connection: upgrade\r\nupgrade: websocket\r\n"
                              b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n", 426, False, True),
        "HTTP/1.0 without keep-alive": (b"GET /healthz HTTP/1.0\r\n\r\n", 200, False, True),
        "control characters in x-request-id": (b"GET /healthz HTTP/1.1\r\n" + host + b"x-request-id: a\x9b31m\xe2\x80\xa8b\r\nconnection: close\r\n\r\n", 200, False, True),
    }
    for name, (raw, expected, ours, must_close) in cases.items():
        received, closed = await raw_exchange(proxy, raw)
        report.seen.append(received)
        status = status_of(received)
        ok = status == expected and (closed or not must_close)
        detail = f"{status} (want {expected}), closed: {closed}"
        if ours:
            shaped = report.shaped(body_of(received))
            ok &= shaped
            detail += f", OpenAI shape: {shaped}"
        if name.startswith("control"):
            request_id = re.search(rb"x-request-id: (\S+)", received)
            ok &= request_id is not None and re.fullmatch(rb"[0-9a-f]{16}", request_id.group(1)) is not None
        report.case("http", name, ok, detail)
    smuggled = ambiguous + b"GET /v1/models HTTP/1.1\r\n" + host + auth + b"\r\n"
    received, closed = await raw_exchange(proxy, smuggled)
    report.seen.append(received)
    report.case("http", "request smuggled behind ambiguous framing", closed and b'"object":"list"' not in received,
                f"closed: {closed}, second request served: {b'object' in received}")
    pipelined = (b"POST /v1/chat/completions HTTP/1.1\r\n" + host + auth + b"content-type: application/json\r\n"
                 + f"content-length: {len(chat)}\r\n\r\n".encode() + chat) * 3
    received, _ = await raw_exchange(proxy, pipelined + b"GET /healthz HTTP/1.1\r\n" + host + b"connection: close\r\n\r\n")
    report.seen.append(received)
    report.case("http", "four pipelined requests", received.count(b"HTTP/1.1 200") == 4, f"{received.count(b'HTTP/1.1 200')} answered 200 (want 4)")
    async with httpx.AsyncClient(base_url=proxy.root, http1=False, http2=True, timeout=CASE_TIMEOUT) as client:
        response = await client.post("/v1/chat/completions", json=CHAT, headers=AUTH)
        report.seen.append(response_bytes(response))
        report.case("http", "HTTP/2 (h2c prior knowledge)", response.status_code == 200, f"{response.status_code} over {response.http_version}")


async def key_cases(proxy: Proxy, report: Report) -> None:
    variants = {
        "no header": {}, "bearer without a key": {"authorization": "Bearer"},
        "basic scheme": {"authorization": f"Basic {CLIENT_KEY}"}, "no scheme": {"authorization": CLIENT_KEY},
        "prefix of the key": {"authorization": f"Bearer {CLIENT_KEY[:-1]}"},
        "key plus a character": {"authorization": f"Bearer {CLIENT_KEY}x"},
        "key in upper case": {"authorization": f"Bearer {CLIENT_KEY.upper()}"},
        "the provider's key": {"authorization": f"Bearer {CEREBRAS_KEY}"},
        "two keys": {"authorization": f"Bearer {CLIENT_KEY} {CLIENT_KEY}"},
        "api-key header instead": {"api-key": CLIENT_KEY},
        "x-api-key with a wrong key": {"x-api-key": CLIENT_KEY[:-1]},
        "latin-1 bytes": {"authorization": b"Bearer \xe9\xe8"},
    }
    accepted = {"lower-case scheme": {"authorization": f"bearer {CLIENT_KEY}"}, "extra spaces": {"authorization": f"Bearer   {CLIENT_KEY}"},
                "x-api-key (Anthropic's header)": {"x-api-key": CLIENT_KEY}}
    async with httpx.AsyncClient(base_url=proxy.root, timeout=CASE_TIMEOUT) as client:
        for name, headers in variants.items():
            response = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
            report.seen.append(response_bytes(response))
            shaped = report.shaped(response.content)
            report.case("keys", name, response.status_code == 401 and shaped, f"{response.status_code} (want 401), OpenAI shape: {shaped}")
        for name, headers in accepted.items():
            response = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
            report.seen.append(response_bytes(response))
            report.case("keys", name, response.status_code == 200, f"{response.status_code} (want 200)")
        health = await client.get("/healthz")
        report.seen.append(response_bytes(health))
        report.case("keys", "/healthz without a key: status only", health.status_code == 200 and set(health.json()) == {"status"}, health.text[:60])
        for path in ("/metrics", "/v1/status"):
            response = await client.get(path)
            report.seen.append(response_bytes(response))
            shaped = report.shaped(response.content)
            report.case("keys", f"{path} without a key", response.status_code == 401 and shaped, f"{response.status_code} (want 401)")
            response = await client.get(path, headers=AUTH)
            report.seen.append(response_bytes(response))
            report.case("keys", f"{path} with the client key", response.status_code == 200, f"{response.status_code} (want 200)")


async def slow_cases(proxy: Proxy, report: Report) -> None:
    # Slowloris: a header line every second; Hypercorn's read timeout or keep-alive ends it.
    pieces = [b"GET /healthz HTTP/1.1\r\n"] + [f"x-{i}: y\r\n".encode() for i in range(12)]
    started = time.monotonic()
    received, closed = await raw_exchange(proxy, pieces, pause=1.0, wait=20)
    report.case("slow", "slowloris headers (a line a second)", proxy.alive(), f"{time.monotonic() - started:.1f} s, closed: {closed}, proxy alive")
    # A body trickled a byte a second: refused with 408 once request_timeout_ms has passed.
    chat = json.dumps(CHAT).encode()
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            + f"authorization: Bearer {CLIENT_KEY}\r\n".encode()
            + f"content-length: {len(chat)}\r\n\r\n".encode())
    started = time.monotonic()
    received, _ = await raw_exchange(proxy, [head] + [bytes([b]) for b in chat[:8]], pause=1.0, wait=15)
    report.seen.append(received)
    shaped = report.shaped(body_of(received))
    report.case("slow", "body trickled a byte a second", status_of(received) == 408 and shaped,
                f"{status_of(received)} after {time.monotonic() - started:.1f} s (want 408), OpenAI shape: {shaped}")
    # Idle connections and streams nobody reads: memory stays bounded, others are still served.
    before = rss_kib(proxy.process.pid) if proxy.process else 0
    streams = []
    with trio.move_on_after(CASE_TIMEOUT):
        idle = [await trio.open_tcp_stream("127.0.0.1", proxy.port) for _ in range(300)]
        body = json.dumps({**CHAT, "stream": True}).encode()
        for _ in range(100):
            stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
            await stream.send_all(head.replace(f"{len(chat)}".encode(), f"{len(body)}".encode()) + body)
            streams.append(stream)
        await trio.sleep(1)
        async with httpx.AsyncClient(base_url=proxy.root, timeout=CASE_TIMEOUT) as client:
            response = await client.post("/v1/chat/completions", json=CHAT, headers=AUTH)
        during = rss_kib(proxy.process.pid) if proxy.process else 0
        for connection in idle + streams:
            await connection.aclose()
    report.case("slow", "300 idle connections + 100 unread streams", response.status_code == 200 and during - before < 64 * 1024,
                f"another client got {response.status_code}; RSS {before // 1024} -> {during // 1024} MiB")


async def web_cases(proxy: Proxy, report: Report) -> None:
    """What a web page, deep nesting, huge names and refused framing can get out of the proxy."""
    chat = json.dumps(CHAT).encode()
    async with httpx.AsyncClient(base_url=proxy.root, timeout=CASE_TIMEOUT) as client:
        for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
            response = await client.post("/v1/chat/completions", content=chat, headers={**AUTH, "content-type": kind})
            report.seen.append(response_bytes(response))
            shaped = report.shaped(response.content)
            report.case("web", f"POST as {kind.split(';')[0]}", response.status_code == 415 and shaped, f"{response.status_code} (want 415)")
        for path in ("/v1/status", "/dashboard/api/state", "/v1/models"):
            response = await client.get(path, headers={**AUTH, "host": "rebind.example"})
            report.seen.append(response_bytes(response))
            report.case("web", f"Host rebind.example: GET {path}", response.status_code == 403, f"{response.status_code} (want 403)")
        response = await client.post("/v1/chat/completions", json=CHAT, headers={**AUTH, "origin": "http://evil.example"})
        report.seen.append(response_bytes(response))
        cors = any(name.startswith("access-control-") for name in response.headers)
        report.case("web", "Origin http://evil.example", response.status_code == 403 and not cors, f"{response.status_code} (want 403), CORS headers: {cors}")
        doors = {
            "chat tool parameters": ("/v1/chat/completions", b'{"model":"qwen-3-coder","messages":[{"role":"user","content":"hi"}],'
                                     b'"tools":[{"type":"function","function":{"name":"f","parameters":VALUE}}]}'),
            "responses tool parameters": ("/v1/responses", b'{"model":"qwen-3-coder","input":"hi","tools":[{"type":"function",'
                                          b'"name":"f","parameters":VALUE}]}'),
            "messages input_schema": ("/v1/messages", b'{"model":"qwen-3-coder","max_tokens":5,"messages":[{"role":"user",'
                                      b'"content":"hi"}],"tools":[{"name":"f","input_schema":VALUE}]}'),
            "count_tokens": ("/v1/messages/count_tokens", b'{"model":"qwen-3-coder","messages":[{"role":"user","content":"hi"}],'
                             b'"x":VALUE}'),
        }
        for name, (path, template) in doors.items():
            statuses = set()
            for stream in (False, True):
                for depth in range(970, 981):
                    raw = template.replace(b"VALUE", b'{"a":' * depth + b"1" + b"}" * depth)
                    if stream:
                        raw = raw.replace(b"{", b'{"stream":true,', 1)
                    response = await client.post(path, content=raw, headers={**AUTH, "content-type": "application/json"})
                    report.seen.append(response_bytes(response))
                    statuses.add(response.status_code)
            report.case("web", f"nesting 970-980, {name}", statuses == {400}, f"statuses {sorted(statuses)} (want 400)")
        status = await client.get("/v1/status", headers=AUTH)
        booked = status.json()["providers"][0]["accounts"]["cerebras"]["tpm"]["used"]
        report.case("web", "nothing booked by the nesting cases", booked == 0, f"tokens/minute booked: {booked}")
        response = await client.post("/v1/chat/completions", json={**CHAT, "model": "m" * 5_000_000},
                                     headers={**AUTH, "content-type": "application/json"})
        report.seen.append(response_bytes(response))
        report.case("web", "5 MB model name", response.status_code == 404 and len(response.content) < 2_000,
                    f"{response.status_code}, {len(response.content)} bytes")
        response = await client.post("/v1/chat/completions", json={**CHAT, "tools": True}, headers=AUTH)
        report.seen.append(response_bytes(response))
        report.case("web", "chat tools: true", response.status_code == 400, f"{response.status_code} (want 400)")
    ambiguous = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                 b"content-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n")
    whole = 0
    misses = []
    for _ in range(10):
        received, _closed = await raw_exchange(proxy, [ambiguous, b"GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n" * 20],
                                               pause=0.002)
        ok = received.startswith(b"HTTP/1.1 400") and b"ambiguous_framing" in received
        whole += ok
        if not ok:
            misses.append(received[:80])
    report.case("web", "framing 400 with pipelined bytes behind it", whole == 10,
                f"{whole}/10 answers arrived whole" + (f"; missed: {misses[:2]}" if misses else ""))
    received, closed = await raw_exchange(proxy, b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: " + b"a" * 40_000 + b"\r\n\r\n")
    report.case("web", "40 KB request head", status_of(received) == 431, f"{status_of(received)} (want 431), closed: {closed}")


async def accept_failure_case(proxy: Proxy, report: Report) -> None:
    """accept() failing with EMFILE: a proxy limited to 64 descriptors, sent 100 connections."""
    import resource

    await proxy.stop()
    await proxy.start(preexec=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)))
    connections = []
    with trio.move_on_after(3):
        for _ in range(100):
            connections.append(await trio.open_tcp_stream("127.0.0.1", proxy.port))
        await trio.sleep(2)  # 20 retries of Trio's accept loop
    for connection in connections:
        await connection.aclose()
    lines = proxy.log_path.read_text(errors="replace").count("accept returned")
    report.case("slow", "EMFILE: accept failures logged once per episode", proxy.alive() and lines <= 2, f"{lines} log lines about accept() in 2 s")
    await proxy.stop()
    await proxy.start()


async def upstream_cases(proxy: Proxy, report: Report, cerebras: Hostile, chutes: Hostile) -> None:
    async def chat(stream: bool = False) -> tuple[int | None, bytes, float]:
        """Status (None when the client gave up after CASE_TIMEOUT), body and seconds taken."""
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=proxy.root, timeout=CASE_TIMEOUT) as client:
            try:
                if not stream:
                    response = await client.post("/v1/chat/completions", json=CHAT, headers=AUTH)
                else:
                    async with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}, headers=AUTH) as response:
                        streamed = b""
                        with trio.move_on_after(CASE_TIMEOUT):
                            async for piece in response.aiter_bytes():
                                streamed += piece
                        report.seen.append(streamed)
                        return response.status_code, streamed, time.monotonic() - started
            except httpx.TransportError:
                return None, b"", time.monotonic() - started
        report.seen.append(response_bytes(response))
        return response.status_code, response.content, time.monotonic() - started

    async def operator_views() -> int:
        async with httpx.AsyncClient(base_url=proxy.root, timeout=CASE_TIMEOUT) as client:
            views = [await client.get(path, headers=AUTH) for path in ("/healthz", "/v1/status", "/metrics")]
        for view in views:
            report.seen.append(response_bytes(view))
        return max(len(view.content) for view in views)

    cerebras.mode = chutes.mode = "echo_key"
    status, body, _ = await chat()
    shaped = report.shaped(body)
    leaked = any(key.encode() in body for key in SECRETS)
    report.case("upstream", "both providers echo the key in a 401", shaped and not leaked, f"{status}, key in body: {leaked}", provider_side=True)
    await trio.sleep(2 * PROBE_INTERVAL_MS / 1000)  # the prober has met the echo too
    size = await operator_views()
    leaked = any(k.encode() in b"".join(report.seen[-3:]) for k in SECRETS)
    report.case("upstream", "operator views after the echo (last_error)", not leaked, f"key in /healthz, /v1/status or /metrics: {leaked}", provider_side=True)

    cerebras.mode = chutes.mode = "huge_error"
    before = rss_kib(proxy.process.pid) if proxy.process else 0
    async with trio.open_nursery() as nursery:
        results: list[bytes] = []

        async def one() -> None:
            results.append((await chat())[1])

        for _ in range(10):
            nursery.start_soon(one)
    after = rss_kib(proxy.process.pid) if proxy.process else 0
    biggest = max(len(body) for body in results)
    report.case("upstream", "10 MB error bodies, 10 at once", biggest < 100_000 and after - before < 100 * 1024,
                f"largest client body {biggest:,} bytes, RSS {before // 1024} -> {after // 1024} MiB", provider_side=True)
    size = await operator_views()
    report.case("upstream", "operator views after 10 MB errors", size < 100_000, f"largest view {size:,} bytes", provider_side=True)

    chutes.mode = "normal"
    bound = 3 * REQUEST_TIMEOUT_MS / 1000 + 2
    # After its first event a silent stream cannot fail over (the client has its 200): it must
    # end with an error event and [DONE] once the silence between events passes its bound.
    cerebras.mode = "silent_stream"
    status, body, took = await chat(stream=True)
    ended = b"data: [DONE]" in body and b'"error"' in body
    report.case("upstream", "cerebras goes silent mid-stream: stream ends", status == 200 and ended and took < bound,
                f"{status}, ended with an error event and [DONE]: {ended}, after {took:.1f} s (want < {bound:.0f} s)",
                provider_side=True)
    for mode, stream in (("trickle_body", False), ("stall", False), ("stall", True)):
        cerebras.mode = mode
        status, body, took = await chat(stream)
        served = status == 200 and b"chutes" in body
        report.case("upstream", f"cerebras {mode}, stream={stream}: failover", served and took < bound,
                    f"{status} from {'chutes' if served else '?'} after {took:.1f} s (want < {bound:.0f} s)",
                    provider_side=mode == "trickle_body")
    cerebras.mode = "normal"

    # A client that leaves mid-stream: the proxy stays healthy and serves the next one.
    cerebras.mode = "silent_stream"
    with trio.move_on_after(1.5):
        async with httpx.AsyncClient(base_url=proxy.root) as client:
            async with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}, headers=AUTH) as response:
                await response.aread()
    cerebras.mode = "normal"
    status, _, _ = await chat()
    report.case("upstream", "client leaves a silent stream", status == 200, f"next request {status}")


DAMAGED_STATES = {
    "ledger is a list": b'{"version": 1, "ledger": []}',
    "synced is a list": b'{"version": 1, "ledger": {"cerebras": {"windows": {"rpm": [], "tpm": [], "rpd": {"day_ends_at": 0, "used": 0}, "tpd": {"day_ends_at": 0, "used": 0}}, "synced": [], "cooldown": null}}}',
    "used is Infinity": b'{"version": 1, "ledger": {"cerebras": {"windows": {"rpm": [], "tpm": [], "rpd": {"day_ends_at": 0, "used": Infinity}, "tpd": {"day_ends_at": 0, "used": 0}}, "synced": {}, "cooldown": null}}}',
    "100,000-deep nesting": b'{"version": 1, "ledger": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "used is -1e12": b'{"version": 1, "ledger": {"cerebras": {"windows": {"rpm": [], "tpm": [], "rpd": {"day_ends_at": 0, "used": -1e12}, "tpd": {"day_ends_at": 0, "used": 0}}, "synced": {}, "cooldown": null}}}',
    "cooldown until 9999": b'{"version": 1, "ledger": {"cerebras": {"windows": {"rpm": [], "tpm": [], "rpd": {"day_ends_at": 0, "used": 0}, "tpd": {"day_ends_at": 0, "used": 0}}, "synced": {}, "cooldown": [253402300799, "429"]}}}',
    "day_ends_at 1e300": b'{"version": 1, "ledger": {"cerebras": {"windows": {"rpm": [], "tpm": [], "rpd": {"day_ends_at": 1e300, "used": 5}, "tpd": {"day_ends_at": 0, "used": 0}}, "synced": {}, "cooldown": null}}}',
    "binary garbage": os.urandom(512),
    "a directory": b"",
}


async def state_cases(proxy: Proxy, report: Report) -> None:
    state = proxy.workdir / "state.json"
    for name, content in DAMAGED_STATES.items():
        await proxy.stop()
        for leftover in proxy.workdir.glob("state.json*"):
            leftover.rmdir() if leftover.is_dir() else leftover.unlink()
        if name == "a directory":
            state.mkdir()
        else:
            state.write_bytes(content)
        (proxy.workdir / ".state.json.999999.tmp").write_bytes(b'{"version": 1, "le')  # a killed write's
        try:
            await proxy.start()
            async with httpx.AsyncClient(base_url=proxy.root, timeout=CASE_TIMEOUT) as client:
                response = await client.post("/v1/chat/completions", json=CHAT, headers=AUTH)
                status = (await client.get("/v1/status", headers=AUTH)).json()
            cooldown = status["providers"][0]["accounts"]["cerebras"]["cooldown_seconds"]
            ok = response.status_code == 200 and cooldown == 0 and not (proxy.workdir / ".state.json.999999.tmp").exists()
            report.case("state", name, ok, f"started, chat {response.status_code}, cooldown {cooldown} s, stale tmp removed: {not (proxy.workdir / '.state.json.999999.tmp').exists()}")
        except RuntimeError as error:
            report.case("state", name, False, str(error))
            report.crashes.append(f"start with state file: {name}")
    if state.is_dir():
        state.rmdir()
    # kill -9 while the state is saved every 200 ms, under traffic; the next start must serve.
    for round_ in range(5):
        await proxy.stop()
        await proxy.start(state_save_interval_ms=20)
        async with httpx.AsyncClient(base_url=proxy.root, timeout=CASE_TIMEOUT) as client:
            for _ in range(5 + round_ * 3):
                await client.post("/v1/chat/completions", json=CHAT, headers=AUTH)
        assert proxy.process is not None
        proxy.process.kill()
        proxy.process.wait()
        try:
            await proxy.start()
            async with httpx.AsyncClient(base_url=proxy.root, timeout=CASE_TIMEOUT) as client:
                status = (await client.get("/v1/status", headers=AUTH)).json()
            used = status["providers"][0]["accounts"]["cerebras"]["tpd"]["used"]
            kept = not list(proxy.workdir.glob("state.json.corrupt-*"))
            report.case("state", f"kill -9 during writes, round {round_ + 1}", kept, f"restarted, tpd used {used}, no file moved aside: {kept}")
        except RuntimeError as error:
            report.case("state", f"kill -9 during writes, round {round_ + 1}", False, str(error))
            report.crashes.append(f"restart after kill -9, round {round_ + 1}")


# --------------------------------------------------------------------------- main


GROUPS = ("body", "http", "web", "keys", "slow", "upstream", "state")


async def attack(only: set[str]) -> Report:
    report = Report()
    cerebras = Hostile("cerebras", CEREBRAS_KEY, "qwen-3-coder-480b")
    chutes = Hostile("chutes", CHUTES_KEY, "Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8")
    with tempfile.TemporaryDirectory(prefix="trioproxy-attack-") as workdir:
        async with trio.open_nursery() as nursery:
            # Hypercorn's serve reports the addresses it bound through task_status.
            cerebras_bound = await nursery.start(serve, cerebras, hostile_config())
            chutes_bound = await nursery.start(serve, chutes, hostile_config())
            proxy = Proxy(Path(workdir), cerebras_bound[0] + "/v1", chutes_bound[0] + "/v1")
            await proxy.start()
            try:
                for group in GROUPS:
                    if group not in only:
                        continue
                    if group == "body":
                        await body_cases(proxy, report)
                    elif group == "http":
                        await http_cases(proxy, report)
                    elif group == "web":
                        await web_cases(proxy, report)
                    elif group == "keys":
                        await key_cases(proxy, report)
                    elif group == "slow":
                        await slow_cases(proxy, report)
                        await accept_failure_case(proxy, report)
                    elif group == "upstream":
                        await upstream_cases(proxy, report, cerebras, chutes)
                    elif group == "state":
                        await state_cases(proxy, report)
                    if not proxy.alive():
                        report.crashes.append(f"the proxy died during the {group} cases")
                        await proxy.start()
            finally:
                code = await proxy.stop()
                if code not in (0, None):
                    report.crashes.append(f"exit code {code} at the end")
                nursery.cancel_scope.cancel()
            logs = b"".join(path.read_bytes() for path in proxy.logs)
            leaks = {
                "responses": sorted({key for key in SECRETS for blob in report.seen if key.encode() in blob}),
                "logs": sorted(key for key in SECRETS if key.encode() in logs),
            }
            unhandled = [line for line in logs.decode(errors="replace").splitlines() if UNHANDLED.search(line)]
            report.crashes.extend(f"log: {line[:120]}" for line in unhandled[:5])
            summary(report, leaks, len(unhandled), len(logs))
    return report


def summary(report: Report, leaks: dict[str, list[str]], unhandled: int, log_bytes: int) -> None:
    print()
    print(f"cases tried: {report.tried}, passed: {report.tried - len(report.failed)}, failed: {len(report.failed)}")
    print(f"OpenAI-shaped errors: {report.errors_shaped}/{report.errors_expected} of the errors trioproxy writes itself")
    found = {key for keys in leaks.values() for key in keys}
    where = "; ".join(f"{place}: {', '.join(key[:9] + '...' for key in keys)}" for place, keys in leaks.items() if keys)
    print(f"secrets found anywhere (response heads and bodies, {log_bytes:,} bytes of logs): {len(found)}"
          + (f" ({where})" if where else ""))
    print(f"crashes: {len(report.crashes)} (tracebacks in the log: {unhandled})")
    for crash in report.crashes:
        print(f"  {crash}")
    if report.failed:
        print("failed: " + ", ".join(report.failed))
    if report.pending:
        print("of these, provider-side (issue 11 items 1, 3, 4): " + ", ".join(report.pending))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated groups of {', '.join(GROUPS)}")
    args = parser.parse_args()
    report = trio.run(attack, set(args.only.split(",")))
    return 0 if not report.failed and not report.crashes else 1


if __name__ == "__main__":
    sys.exit(main())
