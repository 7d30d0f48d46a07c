"""A small closed-loop HTTP/1.1 load generator on asyncio protocols (no HTTP library).

Each of `concurrency` keep-alive connections sends the same pre-built request, waits for the
whole response, and sends the next one, until `duration` seconds are over or `max_requests`
have been sent. It records, per request, the latency to the complete response and the time
to the first `data:` byte of the body (for SSE streams), and counts errors (non-200 status,
a stream without `data: [DONE]`, a dropped connection). Responses are framed by
content-length or chunked encoding (the end is the `0\\r\\n\\r\\n` terminator).

Also `open_streams`: open N streams and keep them open, for memory measurements.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import attrs

_perf = time.perf_counter


def build_request(host: str, port: int, path: str, body: bytes, api_key: str = "sk-bench",
                  extra_headers: Sequence[tuple[str, str]] = ()) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"host: {host}:{port}", "content-type: application/json",
             f"authorization: Bearer {api_key}", "accept: */*", f"content-length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in extra_headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@attrs.define
class Result:
    requests: int = 0
    errors: int = 0
    elapsed: float = 0.0
    latencies: list[float] = attrs.Factory(list)  # seconds
    ttfbs: list[float] = attrs.Factory(list)  # seconds, streams only
    first_error: str = ""

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of `values` (q in 0..100); NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


class _Client(asyncio.Protocol):
    def __init__(self, run: "_Run") -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.closed = run.loop.create_future()
        self.reconnect = False  # the server closed this connection on purpose after a response
        self._reset()

    def _reset(self) -> None:
        self.buf.clear()
        self.head_end = -1
        self.status = 0
        self.length = -1  # content-length, or -1 for chunked
        self.first = 0.0
        self.started = 0.0
        self.server_closes = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.started:
            self.run.error("connection lost mid-response")
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self) -> None:
        assert self.transport is not None
        self._reset()
        self.started = _perf()
        self.transport.write(self.run.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.head_end < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self.head_end = end + 4
            head = bytes(self.buf[:end]).lower()
            try:
                self.status = int(head[9:12])
            except ValueError:
                self.status = 0
            # Hypercorn, for one, closes a connection after 1000 requests and says so here.
            self.server_closes = b"\r\nconnection: close" in head
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                self.length = int(head[at + 17: stop if stop >= 0 else None].strip())
            elif b"chunked" not in head:
                self.length = 0
        if not self.first and self.buf.find(b"data:", self.head_end) >= 0:
            self.first = _perf()
        if self.length >= 0:
            done = len(self.buf) - self.head_end >= self.length
        else:
            done = self.buf.endswith(b"0\r\n\r\n")
        if done:
            self._complete()

    def _complete(self) -> None:
        now = _perf()
        run = self.run
        ok = self.status == 200 and (not run.stream or run.stream_end in self.buf)
        if ok:
            run.result.latencies.append(now - self.started)
            if run.stream and self.first:
                run.result.ttfbs.append(self.first - self.started)
        else:
            run.error(f"status {self.status}: {bytes(self.buf[self.head_end:self.head_end + 200])!r}")
        run.result.requests += 1
        self.started = 0.0
        if self.server_closes:
            self.reconnect = True
            if self.transport is not None:
                self.transport.close()
        elif run.more():
            self.send()
        elif self.transport is not None:
            self.transport.close()


@attrs.define
class _Run:
    loop: asyncio.AbstractEventLoop
    request: bytes
    stream: bool
    deadline: float
    max_requests: int
    stream_end: bytes = b"data: [DONE]"  # what a complete stream contains (its last event)
    result: Result = attrs.Factory(Result)
    sent: int = 0

    def more(self) -> bool:
        if self.sent >= self.max_requests or _perf() >= self.deadline:
            return False
        self.sent += 1
        return True

    def error(self, what: str) -> None:
        self.result.errors += 1
        if not self.result.first_error:
            self.result.first_error = what


async def run_load(host: str, port: int, path: str, body: bytes, *, api_key: str = "sk-bench", stream: bool, concurrency: int,
                   duration: float, max_requests: int = 5_000_000, timeout_grace: float = 30.0,
                   stream_end: bytes = b"data: [DONE]") -> Result:
    """Closed-loop load for `duration` seconds (bounded by `max_requests` and a hard timeout)."""
    loop = asyncio.get_running_loop()
    run = _Run(loop, build_request(host, port, path, body, api_key), stream, 0.0, max_requests, stream_end)
    clients: list[_Client] = []
    for _ in range(concurrency):
        _, client = await loop.create_connection(lambda: _Client(run), host, port)
        clients.append(client)

    async def drive(slot: int) -> None:
        """One closed-loop client; a new connection when the server closed the last one on purpose."""
        while True:
            client = clients[slot]
            if not run.more():
                if client.transport is not None:
                    client.transport.close()
                return
            client.send()
            await client.closed
            if not client.reconnect:
                return
            _, clients[slot] = await loop.create_connection(lambda: _Client(run), host, port)

    started = _perf()
    run.deadline = started + duration
    pending = [asyncio.ensure_future(drive(slot)) for slot in range(concurrency)]
    _, not_done = await asyncio.wait(pending, timeout=duration + timeout_grace)
    for client in clients:
        if client.transport is not None:
            client.transport.abort()
    for task in not_done:
        task.cancel()
    if not_done:
        run.error(f"{len(not_done)} connections still busy after the hard timeout")
        await asyncio.wait(not_done, timeout=5)
    run.result.elapsed = _perf() - started
    return run.result


class _Holder(asyncio.Protocol):
    """A connection that sends one request and counts as open once the first event arrived."""

    def __init__(self, opened: asyncio.Future, request: bytes) -> None:
        self.opened = opened
        self.request = request
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.opened.done():
            return
        self.buf += data
        if self.buf.startswith(b"HTTP/1.1 200") and b"data:" in self.buf:
            self.opened.set_result(True)
        elif len(self.buf) > 12 and not self.buf.startswith(b"HTTP/1.1 200"):
            self.opened.set_result(False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.opened.done():
            self.opened.set_result(False)


async def open_streams(host: str, port: int, path: str, body: bytes, count: int, *,
                       api_key: str = "sk-bench", batch: int = 100, timeout: float = 60.0) -> tuple[int, list[_Holder]]:
    """Open `count` streams in batches; return (how many delivered a first event, the holders).

    Close them with `close_streams`. Gives up on what is not open after `timeout` seconds.
    """
    loop = asyncio.get_running_loop()
    request = build_request(host, port, path, body, api_key)
    holders: list[_Holder] = []
    deadline = loop.time() + timeout
    for start in range(0, count, batch):
        futures = []
        for _ in range(min(batch, count - start)):
            opened = loop.create_future()
            try:
                _, holder = await loop.create_connection(lambda: _Holder(opened, request), host, port)
            except OSError:
                continue
            holders.append(holder)
            futures.append(opened)
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        await asyncio.wait(futures, timeout=remaining)
    opened = sum(1 for h in holders if h.opened.done() and h.opened.result())
    return opened, holders


def close_streams(holders: list[_Holder]) -> None:
    for holder in holders:
        if holder.transport is not None:
            holder.transport.abort()
