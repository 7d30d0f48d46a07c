"""trioproxy as real processes for fault tests: settings files, a log read as it comes, the
operator endpoints, and a bounded load that records what every client saw."""

import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from support.chat import CLIENT_KEY, chat
from support.proxies import Providers

POLL_SECONDS = 0.05


def write_settings(path: Path, providers: Providers, cerebras: dict[str, Any] | None = None, **settings: Any) -> Path:
    """A TOML settings file pointing at the emulators (JSON's strings and numbers are TOML's)."""
    lines = [f"{key} = {json.dumps(value)}" for key, value in {"state_file": "", **settings}.items()]
    lines += ["[cerebras]", f"base_url = {json.dumps(providers.cerebras_url)}"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in (cerebras or {}).items()]
    lines += ["[chutes]", f"base_url = {json.dumps(providers.chutes_url)}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def environment(providers: Providers, **extra: str) -> dict[str, str]:
    """This machine's environment without its keys and Redis, plus the emulators' keys."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k not in ("REDIS_URL", "PORT")}
    return {**env, "CEREBRAS_API_KEY": providers.cerebras.api_key, "CHUTES_API_KEY": providers.chutes.api_key, **extra}


async def until(condition: Callable[[], Awaitable[bool]] | Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    """Poll `condition` until it holds; fail naming `what` after `seconds`."""
    deadline = trio.current_time() + seconds
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if trio.current_time() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        await trio.sleep(POLL_SECONDS)


class LogReader:
    """A process's stderr, drained as it comes (a full pipe would block the process)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    async def run(self, stream: trio.abc.ReceiveStream) -> None:
        buffer = b""
        while chunk := await stream.receive_some():
            *complete, buffer = (buffer + chunk).split(b"\n")
            self.lines.extend(line.decode(errors="replace") for line in complete)

    def matching(self, pattern: str) -> list[re.Match[str]]:
        return [m for line in self.lines if (m := re.search(pattern, line))]

    async def wait_for(self, pattern: str, count: int = 1, seconds: float = 20.0) -> list[re.Match[str]]:
        await until(lambda: len(self.matching(pattern)) >= count, f"{count} log lines matching {pattern!r}", seconds)
        return self.matching(pattern)

    def text(self) -> str:
        return "\n".join(self.lines)


@attrs.define
class ProxyProcess:
    process: trio.Process
    log: LogReader
    port: int

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@asynccontextmanager
async def proxy_process(nursery: trio.Nursery, arguments: Sequence[str], env: dict[str, str], port: int) -> AsyncIterator[ProxyProcess]:
    """`trioproxy ARGUMENTS` until the block ends (then SIGTERM, and SIGKILL if it lingers)."""
    command = [sys.executable, "-m", "trioproxy", *arguments]
    process = await trio.lowlevel.open_process(command, stderr=subprocess.PIPE, env=env)
    assert process.stderr is not None
    log = LogReader()
    nursery.start_soon(log.run, process.stderr)
    try:
        yield ProxyProcess(process, log, port)
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.terminate()
                with trio.move_on_after(20):
                    await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


def client(root: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=root, timeout=30.0, headers={"authorization": f"Bearer {CLIENT_KEY}"})


async def serving(root: str) -> bool:
    try:
        async with client(root) as c:
            return (await c.get("/healthz")).status_code == 200
    except httpx.TransportError:
        return False


async def get_json(root: str, path: str) -> dict[str, Any]:
    async with client(root) as c:
        answer = await c.get(path)
        assert answer.status_code == 200, answer.text
        return answer.json()


async def metrics(root: str) -> str:
    async with client(root) as c:
        return (await c.get("/metrics")).text


def account(status: dict[str, Any], provider: str = "cerebras") -> dict[str, Any]:
    """The single account of `provider` in a /v1/status answer."""
    (figures,) = next(p for p in status["providers"] if p["name"] == provider)["accounts"].values()
    return figures


@attrs.define
class Outcome:
    """One client request as the client saw it."""

    url: str
    stream: bool
    seconds: float
    status: int = 0
    error: str = ""  # what went wrong for the client ("" = a complete answer)
    usage: dict[str, int] | None = None


class Load:
    """Up to `limit` chat requests (plain and streamed in turn) from `concurrency` clients over
    `roots`, one after the other each, until `stop` is set."""

    def __init__(self, roots: Sequence[str], *, concurrency: int, limit: int, body: dict[str, Any] | None = None) -> None:
        self._roots = list(roots)
        self._concurrency = concurrency
        self._limit = limit
        self._body = body if body is not None else chat(max_tokens=5)
        self.outcomes: list[Outcome] = []
        self.stop = trio.Event()
        self._started = 0

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for number in range(self._concurrency):
                nursery.start_soon(self._client, number)

    async def _client(self, number: int) -> None:
        root = self._roots[number % len(self._roots)]
        async with client(root) as c:
            while not self.stop.is_set() and self._started < self._limit:
                self._started += 1
                self.outcomes.append(await request(c, root, self._body, stream=self._started % 2 == 0))

    async def finish(self) -> None:
        """Stop sending and wait for the requests in flight (bounded)."""
        self.stop.set()
        await until(lambda: len(self.outcomes) == self._started, "the load's last requests end", 60)

    def errors(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error]


async def request(c: httpx.AsyncClient, root: str, body: dict[str, Any], *, stream: bool) -> Outcome:
    """One chat request; a streamed answer counts as complete when it ends with [DONE] and no error event."""
    started = trio.current_time()
    outcome = Outcome(root, stream, 0.0)
    try:
        if not stream:
            answer = await c.post("/v1/chat/completions", json=body)
            outcome.status = answer.status_code
            outcome.error = "" if answer.status_code == 200 else answer.text
            outcome.usage = answer.json().get("usage") if answer.status_code == 200 else None
        else:
            body = {**body, "stream": True, "stream_options": {"include_usage": True}}
            async with c.stream("POST", "/v1/chat/completions", json=body) as answer:
                outcome.status = answer.status_code
                events = [line.removeprefix("data: ") async for line in answer.aiter_lines() if line.startswith("data: ")]
            payloads = [json.loads(e) for e in events if e != "[DONE]"]
            if outcome.status != 200 or events[-1:] != ["[DONE]"] or any("error" in p for p in payloads):
                outcome.error = f"stream {outcome.status}: {events[-2:]}"
            outcome.usage = next((p["usage"] for p in payloads if p.get("usage")), None)
    except httpx.HTTPError as error:
        outcome.error = f"{type(error).__name__}: {error}"
    outcome.seconds = trio.current_time() - started
    return outcome
