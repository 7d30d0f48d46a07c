"""Soak test: trioproxy under mixed traffic with provider faults switched on and off.

One process runs the emulated Cerebras and Chutes (trioproxy.testing.emulator) and N concurrent clients;
trioproxy itself runs as a subprocess (`python -m trioproxy --config <tmp>/soak.toml`), so its
memory is its own: RSS is read from /proc/<pid>/status (VmRSS) after a warm-up and at the end,
and its stderr is captured to count unhandled exceptions ('Traceback', 'Error in ASGI').

Traffic: plain and streamed chat completions, with and without tools, prompts of varied size,
a few malformed bodies and a few clients that leave in the middle of a stream. Faults: every
few seconds a random fault is switched on at Cerebras, Chutes or both for a random number of
requests (latency, 5xx, 503 "no instances", capacity 429s, resets before the response and in
the middle of a stream, stalls past the proxy's timeout, an error as the first event, slow
chunks, and breaks after content: a reset after some events, an error event after content, a
reset inside a tool call's arguments, at Cerebras while Chutes is healthy, so Chutes can finish
the answer), with quiet periods between; the emulated Chutes answers Cerebras's text (one model on
two providers) so either can continue the other's answer; the emulated Cerebras also enforces tight per-minute
limits the proxy is configured above, so real Cerebras 429s and cooldowns happen throughout.

Everything listens on 127.0.0.1; every loop ends at the deadline; every request is bounded.

    python bench/soak.py --quick            # 0.5 minute
    python bench/soak.py --minutes 10       # the default
    python bench/soak.py --minutes 3 --clients 24 --log /tmp/soak-proxy.log
    python bench/soak.py --mid-stream --broken 400 --minutes 8   # continuation: breaks after content only

`--mid-stream` switches only the breaks after content (at Cerebras, Chutes healthy) and quiet
periods, so broken streams come quickly; `--broken N` ends the run once N streams broke after
their first byte (or at `--minutes`, whichever comes first). The proxy then logs at INFO, and
every broken stream that still ended with an error event is shown with its log lines.

Exit status 0 when the targets are met (RSS growth after warm-up under 10 %, no unhandled
exception in the proxy's log, no stream left without `data: [DONE]`, clean proxy exit), else 1.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from trioproxy.testing import emulator
from trioproxy.config.env import ENV_VARS
from trioproxy.testing.emulator import Faults
from trioproxy.testing.ports import free_port

MODEL = "qwen-3-coder"
REQUEST_TIMEOUT_MS = 2_000  # the proxy's: a stalled provider costs this much before failover
CLIENT_TIMEOUT = 30.0  # the clients': far above anything the proxy should take
UNHANDLED = re.compile(r"Traceback|Error in ASGI|Exception in callback|Task exception")
CONTINUED = re.compile(r"request (\S+): \S+ continues the answer")

# The emulated Cerebras enforces limits below what the proxy is told, so real 429s happen.
CEREBRAS_LIMITS = {"requests_per_minute": 240, "tokens_per_minute": 2_000_000}
PROXY_CEREBRAS_LIMITS = {"requests_per_minute": 400, "tokens_per_minute": 4_000_000}
MAX_BACKOFF = 2.0  # a client told 429/503 waits Retry-After, at most this long

TOOLS = [
    {"type": "function", "function": {
        "name": "read_file", "description": "Read a file from the workspace.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}},
    {"type": "function", "function": {
        "name": "run_tests", "description": "Run the test suite.", "strict": True,
        "parameters": {"type": "object", "properties": {"filter": {"type": "string"}}, "required": ["filter"]}}},
]


# --------------------------------------------------------------------------- process facts


def rss_kib(pid: int) -> int:
    """VmRSS of `pid` in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


# --------------------------------------------------------------------------- bookkeeping


@attrs.define
class Tally:
    """What the clients saw."""

    outcomes: collections.Counter[str] = attrs.Factory(collections.Counter)
    served: int = 0  # complete answers: 200 with a body, or a stream that ended cleanly with [DONE]
    latencies: list[float] = attrs.Factory(list)
    faults_switched: collections.Counter[str] = attrs.Factory(collections.Counter)
    rss_samples: list[tuple[float, int]] = attrs.Factory(list)
    error_event_ids: set[str] = attrs.Factory(set)  # request ids of streams that ended in an error event
    stopping: bool = False  # --broken reached: clients end after their request in flight

    def record(self, outcome: str, latency: float | None = None) -> None:
        self.outcomes[outcome] += 1
        if latency is not None and len(self.latencies) < 200_000:
            self.latencies.append(latency)


@attrs.define
class ProxyLog:
    """The proxy's stderr: written to a file, with unhandled exceptions counted."""

    path: Path
    lines: int = 0
    unhandled: int = 0
    errors: int = 0  # lines at ERROR level
    examples: list[str] = attrs.Factory(list)
    continued_ids: set[str] = attrs.Factory(set)  # streams another provider took over

    def feed(self, line: str) -> None:
        self.lines += 1
        if (continued := CONTINUED.search(line)) is not None:
            self.continued_ids.add(continued.group(1))
        if " ERROR " in line:
            self.errors += 1
        if UNHANDLED.search(line):
            self.unhandled += 1
            if len(self.examples) < 5:
                self.examples.append(line.strip())


async def pump_log(stream: trio.abc.ReceiveStream, log: ProxyLog) -> None:
    """Copy the proxy's stderr to its log file, line by line, counting what matters."""
    pending = b""
    with log.path.open("wb") as file:
        async for data in stream:
            file.write(data)
            pending += data
            *complete, pending = pending.split(b"\n")
            for line in complete:
                log.feed(line.decode("utf-8", "replace"))
        if pending:
            log.feed(pending.decode("utf-8", "replace"))


# --------------------------------------------------------------------------- traffic


def messages(rng: random.Random) -> list[dict[str, Any]]:
    """A conversation of varied length (a few hundred bytes to ~40 KB)."""
    size = rng.choice([1, 1, 2, 4, 16, 64, 256])
    filler = " ".join(rng.choice(["def", "return", "self", "trio", "proxy", "quota", "stream"]) for _ in range(size * 8))
    convo = [{"role": "system", "content": "You are a coding assistant."},
             {"role": "user", "content": f"Please review this code: {filler}"}]
    if rng.random() < 0.3:
        convo += [{"role": "assistant", "content": None, "tool_calls": [{
                      "id": "call_1", "type": "function",
                      "function": {"name": "read_file", "arguments": '{"path": "app.py"}'}}]},
                  {"role": "tool", "tool_call_id": "call_1", "content": filler[:2000]}]
    return convo


def request_body(rng: random.Random) -> tuple[str, dict[str, Any] | bytes]:
    """(kind, body) for one request; bytes for a deliberately malformed one."""
    roll = rng.random()
    if roll < 0.02:
        return "malformed", rng.choice([b"{not json", b"[]", b'{"model":"qwen-3-coder","messages":[]}',
                                        b'{"model":"qwen-3-coder","messages":[{"role":"user","content":"x"}],"stream":"y"}'])
    body: dict[str, Any] = {"model": MODEL, "messages": messages(rng)}
    stream = rng.random() < 0.55
    if stream:
        body["stream"] = True
        if rng.random() < 0.6:
            body["stream_options"] = {"include_usage": True}
    if rng.random() < 0.25:
        body["tools"] = TOOLS
        body["tool_choice"] = "auto"
        if rng.random() < 0.5:
            body["parallel_tool_calls"] = False
    if rng.random() < 0.4:
        body["max_tokens"] = rng.choice([16, 256, 4096])
    if rng.random() < 0.2:
        body["temperature"] = 0.2
    kind = ("stream" if stream else "plain") + ("+tools" if "tools" in body else "")
    return kind, body


async def one_request(client: httpx.AsyncClient, rng: random.Random, tally: Tally) -> None:
    kind, body = request_body(rng)
    started = trio.current_time()
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    abandon = kind.startswith("stream") and rng.random() < 0.03  # a client that leaves mid-stream
    try:
        with trio.fail_after(CLIENT_TIMEOUT):
            if not kind.startswith("stream"):
                response = await client.post("/chat/completions", content=content, headers=headers)
                outcome = str(response.status_code)
                await back_off(response)
                if response.status_code == 200:
                    document = response.json()
                    if document.get("model") != MODEL or not document.get("choices"):
                        outcome = "200 but not a completion"
                    else:
                        tally.served += 1
                elif not _is_openai_error(response.content):
                    outcome += " not in OpenAI's shape"
                tally.record(f"{kind}: {outcome}", trio.current_time() - started)
                return
            async with client.stream("POST", "/chat/completions", content=content, headers=headers) as response:
                if response.status_code != 200:
                    raw = await response.aread()
                    suffix = "" if _is_openai_error(raw) else " not in OpenAI's shape"
                    tally.record(f"{kind}: {response.status_code}{suffix}", trio.current_time() - started)
                    await back_off(response)
                    return
                done = error_event = False
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                    elif "error" in json.loads(data):
                        error_event = True
                    if abandon:
                        tally.record(f"{kind}: client left mid-stream (on purpose)")
                        return
                if error_event:
                    tally.error_event_ids.add(response.headers.get("x-request-id", ""))
                if error_event and done:
                    outcome = "200 then SSE error event + [DONE]"
                elif error_event:
                    outcome = "200 then SSE error event WITHOUT [DONE]"
                elif done:
                    outcome = "200"
                    tally.served += 1
                else:
                    outcome = "200 WITHOUT [DONE]"
                tally.record(f"{kind}: {outcome}", trio.current_time() - started)
    except trio.TooSlowError:
        tally.record(f"{kind}: client timeout after {CLIENT_TIMEOUT:.0f} s")
    except httpx.HTTPError as exc:
        tally.record(f"{kind}: client saw {type(exc).__name__}")


async def back_off(response: httpx.Response) -> None:
    """Wait as a well-behaved agent does after a 429 or 503 (Retry-After, capped)."""
    if response.status_code in (429, 503):
        try:
            seconds = float(response.headers.get("retry-after", "1"))
        except ValueError:
            seconds = 1.0
        await trio.sleep(min(max(seconds, 0.1), MAX_BACKOFF))


def _is_openai_error(raw: bytes) -> bool:
    try:
        document = json.loads(raw)
    except ValueError:
        return False
    error = document.get("error") if isinstance(document, dict) else None
    return isinstance(error, dict) and {"message", "type", "param", "code"} <= set(error)


async def client_loop(base_url: str, seed: int, deadline: float, tally: Tally) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=base_url, timeout=CLIENT_TIMEOUT,
                                 headers={"authorization": "Bearer sk-soak"}) as client:
        while trio.current_time() < deadline and not tally.stopping:
            await one_request(client, rng, tally)


# --------------------------------------------------------------------------- faults


def random_fault(rng: random.Random) -> tuple[str, Faults]:
    count = rng.randint(1, 25)
    menu = [
        ("latency", lambda: Faults(latency=rng.uniform(0.05, 0.8), remaining=count)),
        ("5xx", lambda: Faults(status=rng.choice([500, 502, 504]), remaining=count)),
        ("503 no instances", lambda: Faults(no_instances=True, remaining=count)),
        ("capacity 429", lambda: Faults(queue_exceeded=True, remaining=rng.randint(1, 5))),
        ("reset before response", lambda: Faults(reset_before_response=True, remaining=count)),
        ("reset mid-stream", lambda: Faults(reset_mid_stream=True, remaining=count)),
        ("stall past the timeout", lambda: Faults(stall=True, remaining=rng.randint(1, 6))),
        ("error as first event", lambda: Faults(error_first_event=True, remaining=count)),
        ("slow chunks", lambda: Faults(chunk_delay=rng.uniform(0.005, 0.05), remaining=count)),
        *mid_stream_faults(rng, count),
    ]
    name, make = rng.choice(menu)
    return name, make()


def mid_stream_faults(rng: random.Random, count: int) -> list[tuple[str, Any]]:
    """Breaks after content reached the client, which another provider can finish."""
    kinds = ("server", "zai-quota", "response-failed")
    return [
        ("break after content", lambda: Faults(break_after_events=rng.randint(2, 9), remaining=count)),
        ("error event after content", lambda: Faults(error_after_events=rng.randint(2, 9),
                                                     stream_error=rng.choice(kinds), remaining=count)),
        ("break inside tool arguments", lambda: Faults(break_after_argument_bytes=rng.randint(1, 30),
                                                       remaining=count)),
    ]


MID_STREAM = ("break after content", "error event after content", "break inside tool arguments")


async def switch_faults(providers: list[emulator.EmulatedProvider], seed: int, deadline: float, tally: Tally,
                        mid_stream_only: bool = False) -> None:
    """Every 0.5-4 s: a random fault on, at one provider or both, or all faults off (only breaks
    after content and quiet periods with `mid_stream_only`)."""
    rng = random.Random(seed)
    cerebras, chutes = providers
    while trio.current_time() < deadline:
        await trio.sleep(min(rng.uniform(0.5, 4.0), max(0.0, deadline - trio.current_time())))
        for provider in providers:  # the emulators keep every request; the soak does not need them
            provider.received.clear()
            provider.received_headers.clear()
            if isinstance(getattr(provider, "usage_log", None), list):
                provider.usage_log.clear()
        if rng.random() < 0.25:
            cerebras.faults, chutes.faults = Faults(), Faults()
            tally.faults_switched["all off"] += 1
            continue
        if mid_stream_only:
            name, make = rng.choice(mid_stream_faults(rng, rng.randint(1, 25)))
            faults = make()
        else:
            name, faults = random_fault(rng)
        targets = rng.choices([[cerebras], [chutes], [cerebras, chutes]], weights=[5, 3, 2])[0]
        if name in MID_STREAM:
            # At Cerebras only, with Chutes healthy: Chutes (no limits here) finishes what Cerebras
            # breaks off. A break at Chutes could be finished only by Cerebras, which this soak
            # keeps at its per-minute limits: most of the time it has no quota left for it.
            targets = [cerebras]
            chutes.faults = Faults()
        for provider in targets:
            provider.faults = attrs.evolve(faults)
        tally.faults_switched[f"{name} @ {'+'.join(p.flavor for p in targets)}"] += 1


async def sample_rss(pid: int, deadline: float, tally: Tally, every: float = 2.0) -> None:
    start = trio.current_time()
    while trio.current_time() < deadline:
        tally.rss_samples.append((trio.current_time() - start, rss_kib(pid)))
        await trio.sleep(min(every, max(0.0, deadline - trio.current_time())))


# --------------------------------------------------------------------------- the proxy


def write_config(directory: Path, port: int, cerebras_url: str, chutes_url: str, log_level: str = "WARN") -> Path:
    path = directory / "soak.toml"
    cerebras_limits = "\n".join(f"{k} = {v}" for k, v in PROXY_CEREBRAS_LIMITS.items())
    path.write_text(
        f'host = "127.0.0.1"\nport = {port}\nlog_level = "{log_level}"\n'
        f"request_timeout_ms = {REQUEST_TIMEOUT_MS}\ncooldown_period_ms = 15000\n"
        'state_file = ""\n\n'
        f'[cerebras]\nbase_url = "{cerebras_url}"\n{cerebras_limits}\n\n'
        f'[chutes]\nbase_url = "{chutes_url}"\n'
    )
    return path


def proxy_environment(cerebras: emulator.EmulatedProvider, chutes: emulator.EmulatedProvider) -> dict[str, str]:
    """This environment without any trioproxy setting, plus the emulators' keys."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS and not k.endswith("_API_KEY") and not k.endswith("_API_KEYS")}
    env.update(CEREBRAS_API_KEY=cerebras.api_key, CHUTES_API_KEY=chutes.api_key, PYTHONUNBUFFERED="1")
    return env


async def wait_until_up(base_url: str, process: trio.Process, seconds: float = 20.0) -> None:
    with trio.fail_after(seconds):
        async with httpx.AsyncClient(timeout=1.0) as client:
            while True:
                if process.returncode is not None:
                    raise RuntimeError(f"trioproxy exited with {process.returncode} at start")
                try:
                    if (await client.get(base_url.removesuffix("/v1") + "/healthz")).status_code in (200, 503):
                        return
                except httpx.HTTPError:
                    pass
                await trio.sleep(0.1)


# --------------------------------------------------------------------------- the run


async def soak(args: argparse.Namespace) -> int:
    seconds = args.minutes * 60
    # The proxy's per-minute windows hold a minute of entries and its daily windows the last
    # few minutes': memory only levels off after those have filled, so warm up that long.
    warmup = args.warmup if args.warmup is not None else min(120.0, max(5.0, seconds * 0.25))
    tally = Tally()
    cerebras = emulator.cerebras(**CEREBRAS_LIMITS)
    chutes = emulator.chutes(speaks_as="cerebras")  # one model on both: each can finish the other's answer
    workdir = Path(tempfile.mkdtemp(prefix="trioproxy-soak-"))
    log = ProxyLog(Path(args.log) if args.log else workdir / "proxy.log")
    async with trio.open_nursery() as nursery:
        cerebras_url = await nursery.start(emulator.serve, cerebras)
        chutes_url = await nursery.start(emulator.serve, chutes)
        port = free_port()
        config = write_config(workdir, port, cerebras_url, chutes_url, "INFO" if args.mid_stream else "WARN")
        base_url = f"http://127.0.0.1:{port}/v1"
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "trioproxy", "--config", str(config)],
            cwd=workdir, env=proxy_environment(cerebras, chutes),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        assert process.stderr is not None
        nursery.start_soon(pump_log, process.stderr, log)
        try:
            await wait_until_up(base_url, process)
            print(f"trioproxy pid {process.pid} at {base_url}; {args.clients} clients for {args.minutes:g} min "
                  f"(warm-up {warmup:.0f} s); proxy log: {log.path}", flush=True)
            rss_launch = rss_kib(process.pid)
            began = trio.current_time()
            deadline = began + seconds
            rss_start = fds_start = 0
            async with trio.open_nursery() as load:
                load.start_soon(switch_faults, [cerebras, chutes], args.seed, deadline, tally, args.mid_stream)
                load.start_soon(sample_rss, process.pid, deadline, tally)
                async with trio.open_nursery() as clients:
                    for i in range(args.clients):
                        clients.start_soon(client_loop, base_url, args.seed * 1000 + i, deadline, tally)
                    await trio.sleep(min(warmup, seconds))
                    rss_start, fds_start = rss_kib(process.pid), open_fds(process.pid)
                    served_at_warmup = tally.served
                    print(f"after warm-up: RSS {rss_start / 1024:.1f} MiB, {fds_start} fds, {tally.served} served", flush=True)
                    next_report = trio.current_time() + 60
                    while trio.current_time() < deadline and not tally.stopping:
                        await trio.sleep(min(1.0, max(0.0, deadline - trio.current_time())))
                        if args.broken and len(log.continued_ids | tally.error_event_ids) >= args.broken:
                            tally.stopping = True  # each client ends after its request in flight
                        if trio.current_time() >= next_report:
                            next_report += 60
                            print(f"  t={trio.current_time() - began:5.0f} s: {sum(tally.outcomes.values())} requests, "
                                  f"{tally.served} served, {len(log.continued_ids | tally.error_event_ids)} broken "
                                  f"after the first byte, RSS {rss_kib(process.pid) / 1024:.1f} MiB, "
                                  f"{open_fds(process.pid)} fds", flush=True)
                load.cancel_scope.cancel()
            # The load has ended (every client finished its last request); let sockets settle.
            cerebras.faults, chutes.faults = Faults(), Faults()
            await trio.sleep(1.0)
            rss_end, fds_end = rss_kib(process.pid), open_fds(process.pid)
            elapsed = trio.current_time() - began
        finally:
            exit_code = await stop(process)
        nursery.cancel_scope.cancel()
    return report(args, tally, log, rss_launch, rss_start, rss_end, fds_start, fds_end, elapsed, served_at_warmup, exit_code,
                  cerebras, chutes)


async def stop(process: trio.Process) -> int | None:
    """SIGTERM, then wait (bounded) for a clean exit; SIGKILL if it does not come."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(40):  # the proxy's own grace period is 30 s by default
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
            return None
    return process.returncode


def log_lines(path: Path, request_id: str) -> list[str]:
    """The proxy's log lines about one request (its id in brackets or after 'request ')."""
    if not request_id:
        return []
    marks = (f"[{request_id}]", f"request {request_id}")
    with path.open(encoding="utf-8", errors="replace") as file:
        return [line.rstrip()[:400] for line in file if any(mark in line for mark in marks)]


def report(args: argparse.Namespace, tally: Tally, log: ProxyLog, rss_launch: int, rss_start: int, rss_end: int,
           fds_start: int, fds_end: int, elapsed: float, served_at_warmup: int, exit_code: int | None,
           cerebras: emulator.EmulatedProvider, chutes: emulator.EmulatedProvider) -> int:
    total = sum(tally.outcomes.values())
    growth = (rss_end - rss_start) / rss_start * 100 if rss_start else float("nan")
    peak = max((kib for _, kib in tally.rss_samples), default=0)
    latencies = sorted(tally.latencies)

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")

    print()
    print(f"soak: {elapsed / 60:.1f} min, {args.clients} clients, seed {args.seed}")
    print(f"requests: {total} ({total / elapsed:.1f}/s), served completely: {tally.served} "
          f"({tally.served - served_at_warmup} after warm-up)")
    print(f"latency (client, all outcomes): p50 {pct(0.5) * 1000:.0f} ms, p99 {pct(0.99) * 1000:.0f} ms, "
          f"max {pct(1.0) * 1000:.0f} ms")
    print("outcomes as the clients saw them:")
    for outcome, count in sorted(tally.outcomes.items(), key=lambda item: -item[1]):
        print(f"  {count:7d}  {outcome}")
    by_status = collections.Counter()
    for outcome, count in tally.outcomes.items():
        by_status[outcome.split(": ", 1)[1]] += count
    print("errors by kind (all request kinds together):")
    for outcome, count in sorted(by_status.items(), key=lambda item: -item[1]):
        if outcome != "200":
            print(f"  {count:7d}  {outcome}")
    print(f"faults switched: {sum(tally.faults_switched.values())} times; "
          + ", ".join(f"{name} x{n}" for name, n in tally.faults_switched.most_common()))
    broken = log.continued_ids | tally.error_event_ids
    finished = log.continued_ids - tally.error_event_ids
    print(f"streams broken after their first byte: {len(broken)} (taken over by another provider: "
          f"{len(log.continued_ids)}); finished without an error event: {len(finished)} "
          f"({len(finished) / len(broken) * 100 if broken else float('nan'):.1f} %)")
    for request_id in sorted(broken - finished)[:12]:
        print(f"  ended with an error event: {request_id}")
        for line in log_lines(log.path, request_id)[:8]:
            print(f"    {line}")
    print(f"emulators: cerebras served {cerebras.served} over {cerebras.connections} connections, "
          f"chutes served {chutes.served} over {chutes.connections} connections")
    print(f"proxy RSS: at launch {rss_launch / 1024:.1f} MiB, after warm-up {rss_start / 1024:.1f} MiB, "
          f"at end {rss_end / 1024:.1f} MiB, peak sampled {peak / 1024:.1f} MiB; growth after warm-up {growth:+.1f} %")
    print(f"proxy open fds: after warm-up {fds_start}, at end {fds_end}")
    step = max(1, len(tally.rss_samples) // 12)
    print("proxy RSS over time: " + ", ".join(f"{t:.0f}s {kib / 1024:.1f}" for t, kib in tally.rss_samples[::step]) + " (MiB)")
    print(f"proxy log: {log.lines} lines, {log.errors} at ERROR, {log.unhandled} unhandled-exception lines "
          f"(Traceback / Error in ASGI); exit code {exit_code}; {log.path}")
    for example in log.examples:
        print(f"  e.g. {example}")
    failures = []
    if not growth < 10:
        failures.append(f"RSS grew {growth:.1f} % after warm-up (target < 10 %)")
    if log.unhandled:
        failures.append(f"{log.unhandled} unhandled-exception lines in the proxy's log")
    missing_done = sum(n for outcome, n in tally.outcomes.items() if "WITHOUT [DONE]" in outcome)
    if missing_done:
        failures.append(f"{missing_done} streams ended without data: [DONE]")
    not_openai = sum(n for outcome, n in tally.outcomes.items() if "not in OpenAI's shape" in outcome)
    if not_openai:
        failures.append(f"{not_openai} errors not in OpenAI's shape")
    timeouts = sum(n for outcome, n in tally.outcomes.items() if "client timeout" in outcome)
    if timeouts:
        failures.append(f"{timeouts} requests hung past {CLIENT_TIMEOUT:.0f} s")
    if exit_code != 0:
        failures.append(f"proxy exit code {exit_code} after SIGTERM (expected 0)")
    print("RESULT: " + ("PASS" if not failures else "FAIL: " + "; ".join(failures)))
    return 0 if not failures else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the run (default 10)")
    parser.add_argument("--quick", action="store_true", help="a 0.5-minute run")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before the start RSS is taken "
                        "(default 25 %% of the run, 5-120 s)")
    parser.add_argument("--seed", type=int, default=1, help="random seed for traffic and faults")
    parser.add_argument("--mid-stream", action="store_true", help="only breaks after content (and quiet periods); "
                        "the proxy logs at INFO and each broken stream that ended with an error event is shown")
    parser.add_argument("--broken", type=int, default=0, help="end the run once this many streams broke after "
                        "their first byte (0: run for --minutes)")
    parser.add_argument("--log", help="where to write the proxy's stderr (default: a temporary directory)")
    args = parser.parse_args()
    if args.quick:
        args.minutes = 0.5
    if args.minutes <= 0 or args.clients <= 0 or args.broken < 0:
        parser.error("--minutes and --clients must be positive")
    sys.exit(trio.run(soak, args))


if __name__ == "__main__":
    main()
