"""A fixed-answer OpenAI-style upstream that cannot be the bottleneck of the benchmark.

Raw asyncio protocol, HTTP/1.1 keep-alive, every answer pre-built as bytes at start-up:

- a POST whose body contains `"stream": true` (any spacing) gets a fixed SSE stream
  (`STREAM_CONTENT_EVENTS` content chunks, a final chunk with usage, `data: [DONE]`), written
  in one go with chunked transfer encoding, one HTTP chunk per event; the model is always
  `qwen-3-coder-480b`, whatever the request names;
- a POST whose body contains `__slow__` gets a slow stream: the first event at once, then one
  event every `--slow-interval` seconds until `--slow-duration` is over or the client leaves
  (keeps streams open for the RSS measurement);
- any other POST gets a fixed non-streamed chat completion; GET /v1/models lists the Cerebras
  and the Chutes model ids;
  anything else gets a small JSON 404.

Run: `python upstream.py --port 0` prints `READY <port>` on stdout once listening and serves
until SIGTERM/SIGINT or `--max-seconds` (a bound, so it always stops by itself).
Only binds 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

MODEL = "qwen-3-coder-480b"
STREAM_CONTENT_EVENTS = 20
_MAX_HEAD = 64 * 1024


def _http(status: str, content_type: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status.encode() + b"\r\ncontent-type: " + content_type
        + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(document: object) -> bytes:
    return b"data: " + json.dumps(document, separators=(",", ":")).encode() + b"\n\n"


def _head(object_: str) -> dict:
    return {"id": "chatcmpl-bench", "object": object_, "created": 1764000000, "model": MODEL,
            "system_fingerprint": "fp_bench"}


USAGE = {"prompt_tokens": 42, "completion_tokens": STREAM_CONTENT_EVENTS, "total_tokens": 42 + STREAM_CONTENT_EVENTS}


def completion_body() -> bytes:
    text = " ".join(f"word{i}" for i in range(STREAM_CONTENT_EVENTS))
    body = {**_head("chat.completion"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": USAGE}
    return json.dumps(body, separators=(",", ":")).encode()


def stream_events(content_events: int = STREAM_CONTENT_EVENTS) -> list[bytes]:
    """The SSE events of the fixed stream, each ending in a blank line."""
    def chunk(delta: dict, finish: str | None) -> dict:
        return {**_head("chat.completion.chunk"),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    events = [_event(chunk({"role": "assistant", "content": ""}, None))]
    events += [_event(chunk({"content": f"word{i} "}, None)) for i in range(content_events)]
    final = chunk({}, "stop")
    final["usage"] = USAGE
    events.append(_event(final))
    events.append(b"data: [DONE]\n\n")
    return events


SSE_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"transfer-encoding: chunked\r\n\r\n")
COMPLETION_RESPONSE = _http("200 OK", b"application/json", completion_body())
STREAM_RESPONSE = SSE_HEAD + b"".join(_chunk(e) for e in stream_events()) + b"0\r\n\r\n"
# Both providers' model ids, so trioproxy's health prober finds its model whichever provider
# it takes this upstream for.
MODELS_RESPONSE = _http("200 OK", b"application/json", json.dumps(
    {"object": "list", "data": [{"id": model, "object": "model", "created": 1764000000, "owned_by": "bench"}
                                for model in (MODEL, "Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8")]}).encode())
NOT_FOUND_RESPONSE = _http("404 Not Found", b"application/json",
                           b'{"error":{"message":"not found","type":"invalid_request_error",'
                           b'"param":null,"code":"not_found"}}')
_SLOW_FIRST = _chunk(stream_events(0)[0])
_SLOW_TICK = _chunk(stream_events(1)[1])
_SLOW_END = b"".join(_chunk(e) for e in stream_events(0)[1:]) + b"0\r\n\r\n"


class _Connection(asyncio.Protocol):
    """One keep-alive connection; requests are answered in order, one at a time."""

    slow_interval = 1.0
    slow_duration = 120.0

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.slow: asyncio.Task | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.slow is not None:
            self.slow.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.slow is None and self.transport is not None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > _MAX_HEAD:
                    self.transport.close()
                return
            head = bytes(self.buf[:end]).lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17: stop if stop >= 0 else None].strip() or 0)
            total = end + 4 + length
            if len(self.buf) < total:
                return
            body = bytes(self.buf[end + 4: total])
            del self.buf[:total]
            self._answer(head, body)

    def _answer(self, head: bytes, body: bytes) -> None:
        assert self.transport is not None
        if head.startswith(b"post "):
            if b"__slow__" in body:
                self.transport.write(SSE_HEAD + _SLOW_FIRST)
                self.slow = asyncio.get_running_loop().create_task(self._slow_stream())
            elif b'"stream":true' in body or b'"stream": true' in body:
                self.transport.write(STREAM_RESPONSE)
            else:
                self.transport.write(COMPLETION_RESPONSE)
        elif head.startswith(b"get /v1/models"):
            self.transport.write(MODELS_RESPONSE)
        else:
            self.transport.write(NOT_FOUND_RESPONSE)

    async def _slow_stream(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.slow_duration
        try:
            while loop.time() + self.slow_interval < deadline:
                await asyncio.sleep(self.slow_interval)
                if self.transport is None:
                    return
                self.transport.write(_SLOW_TICK)
            if self.transport is not None:
                self.transport.write(_SLOW_END)
        finally:
            self.slow = None
        if self.buf and self.transport is not None:
            self.data_received(b"")


async def _main(args: argparse.Namespace) -> None:
    _Connection.slow_interval = args.slow_interval
    _Connection.slow_duration = args.slow_duration
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Connection, "127.0.0.1", args.port, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), args.max_seconds)
    except asyncio.TimeoutError:
        print("upstream: --max-seconds reached, stopping", file=sys.stderr)
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--slow-interval", type=float, default=1.0)
    parser.add_argument("--slow-duration", type=float, default=120.0)
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
