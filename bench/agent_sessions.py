"""The coding-agent workload of the quota simulation (`quota_sim.py --agents`): sessions that
resend their whole conversation every turn, against the emulated dual-bucket Cerebras.

Each session has a fixed system-and-tools prefix of its own (10-20k tokens) and 10-60 turns;
each turn adds a tool result and the agent's answer to the conversation and sends all of it
again, as coding agents do. A few sessions run at once; when one ends the next starts, until
the run's minutes are up. The emulated Cerebras caches prompt prefixes per key (blocks of 128
tokens, 5 minutes) and counts two buckets: uncached prompt tokens and all tokens. Chutes takes
what Cerebras cannot (no limits, slower).

Two configurations meet the same sessions (same seed), each with fresh emulators and proxies:
  C  cache-aware admission: a turn is booked as uncached only for what the key's cache is
     predicted not to hold (prompt_cache_seconds = 300);
  N  without it: every prompt token is booked as uncached (prompt_cache_seconds = 0).

The limits are chosen so that, with the cache, the uncached bucket is what binds (the total
bucket and requests/minute leave room): then its utilisation says how well admission spends it.
Utilisation is what the emulated Cerebras counted over what the bucket allowed (it starts full:
(minutes + 1) x the limit).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any

import attrs
import httpx
import trio
import trio.testing
from attrs import define, field, frozen

if __package__:  # imported as bench.agent_sessions (the tests)
    from .quota_sim import CLIENT_TIMEOUT, SIM_EPOCH, Deployment, Speeds, _pct, simulated_clock
else:  # run as a script: its folder is on sys.path
    from quota_sim import CLIENT_TIMEOUT, SIM_EPOCH, Deployment, Speeds, _pct, simulated_clock
from trioproxy.config.schema import Config
from trioproxy.quota.redis.clock import STORE_CLOCK
from trioproxy.process.supervisor import run_proxy
from trioproxy.testing import emulator

RPM, TPM, UNCACHED_TPM = 120, 1_500_000, 40_000
CONTEXT_WINDOW = 131_072
CACHE_BLOCK_TOKENS = 128
CACHE_SECONDS = 300.0
BUDGET = 4_096  # the max_tokens every turn names
CAP = 16_384
PROXY_MODEL = "qwen-3-coder"
TARGET_RATIO, TARGET_429_SHARE, TARGET_UTILISATION = 2.0, 0.01, 0.90
_ANSWER = re.compile(r"\[answer (\d+)\]")


@frozen
class AgentWorkload:
    minutes: float = 10.0
    seed: int = 1
    concurrent: int = 8  # sessions at once
    prefix_tokens: tuple[int, int] = (10_000, 20_000)
    turns: tuple[int, int] = (10, 60)
    tool_result_tokens: tuple[int, int] = (200, 1_500)
    answer_tokens: tuple[int, int] = (50, 300)
    think_seconds: tuple[float, float] = (0.5, 3.0)  # the agent runs its tool between turns

    @property
    def seconds(self) -> float:
        return self.minutes * 60

    def describe(self) -> str:
        low, high = self.prefix_tokens
        return (f"{self.concurrent} concurrent agent sessions over {self.minutes:g} simulated minutes: a "
                f"system-and-tools prefix of {low // 1000}-{high // 1000}k tokens each, {self.turns[0]}-"
                f"{self.turns[1]} turns adding a tool result of {self.tool_result_tokens[0]}-"
                f"{self.tool_result_tokens[1]} and an answer of {self.answer_tokens[0]}-"
                f"{self.answer_tokens[1]} tokens, {self.think_seconds[0]:g}-{self.think_seconds[1]:g} s "
                f"of tool time between turns, max_tokens {BUDGET}")


@frozen
class Turn:
    tool_result: int
    answer: int
    think: float


@frozen
class Session:
    number: int
    prefix: int
    turns: tuple[Turn, ...]


def sessions(workload: AgentWorkload) -> list[Session]:
    """Enough sessions for the run (more than can finish), the same for every configuration."""
    rng = random.Random(workload.seed)
    made = []
    for number in range(workload.concurrent * 40):
        turns = tuple(
            Turn(rng.randint(*workload.tool_result_tokens), rng.randint(*workload.answer_tokens),
                 rng.uniform(*workload.think_seconds))
            for _ in range(rng.randint(*workload.turns))
        )
        made.append(Session(number, rng.randint(*workload.prefix_tokens), turns))
    return made


_CORPUS = "".join(random.Random(7).choice("abcdefghij klmnopqrst uvwxyz") for _ in range(1 << 20))


def _text(rng: random.Random, tokens: int, label: str) -> str:
    """About `tokens` tokens of plain ASCII (4 characters a token), starting with `label`."""
    start = rng.randrange(len(_CORPUS) - 4 * tokens - 1)
    return (label + " " + _CORPUS[start:start + 4 * tokens])[: max(len(label), 4 * tokens)]


@define
class Conversation:
    """One session's messages so far; each turn appends to them, nothing earlier changes."""

    session: Session
    rng: random.Random
    messages: list[dict[str, Any]] = field(factory=list)

    @classmethod
    def start(cls, session: Session) -> "Conversation":
        rng = random.Random(session.number)
        system = {"role": "system", "content": _text(rng, session.prefix, f"agent session {session.number}:")}
        return cls(session, rng, [system])

    def body(self, index: int) -> bytes:
        """The turn's request: every other one streamed, as agents do either."""
        turn = self.session.turns[index]
        result = _text(self.rng, turn.tool_result, f"[answer {turn.answer}] tool result {index}:")
        self.messages.append({"role": "user", "content": result})
        return httpx.Request("POST", "/", json={"model": PROXY_MODEL, "messages": self.messages,
                                                "max_tokens": BUDGET, "stream": index % 2 == 1}).content

    def answered(self, index: int) -> None:
        """The agent's answer joins the conversation (the same whoever served it)."""
        turn = self.session.turns[index]
        self.messages.append({"role": "assistant", "content": _text(self.rng, turn.answer, f"answer {index}:")})


def answer_words(body: dict[str, Any]) -> int:
    """The emulated model answers as long as the turn planned (named in the last message)."""
    found = _ANSWER.search(str(body["messages"][-1].get("content", ""))[:64])
    return int(found.group(1)) if found else 100


@frozen
class Column:
    key: str
    title: str
    cache_seconds: float


COLUMNS = (Column("C", "cache-aware admission", CACHE_SECONDS), Column("N", "every prompt token uncached", 0.0))


@define
class AgentResult:
    column: Column
    workload: AgentWorkload
    requests: int = 0
    ok: int = 0
    errors: dict[str, int] = field(factory=dict)
    sessions_done: int = 0
    cerebras_received: int = 0
    cerebras_served: int = 0
    usage: list[emulator.Usage] = field(factory=list)
    refusals: list[emulator.QuotaRefusal] = field(factory=list)
    chutes_served: int = 0
    wall_seconds: float = 0.0

    @property
    def minutes(self) -> float:
        return self.workload.minutes

    def per_minute(self) -> float:
        return self.cerebras_served / self.minutes

    def uncached(self) -> int:
        return sum(u.prompt_tokens - u.cached_tokens for u in self.usage)

    def total(self) -> int:
        return sum(u.prompt_tokens + u.completion_tokens for u in self.usage)

    def utilisation(self, counted: int, limit: int) -> float:
        return counted / (limit * (self.minutes + 1))

    def share_429(self) -> float:
        return len(self.refusals) / self.cerebras_received if self.cerebras_received else 0.0

    def cache_share(self) -> float:
        prompt = sum(u.prompt_tokens for u in self.usage)
        return sum(u.cached_tokens for u in self.usage) / prompt if prompt else 0.0


def proxy_config(column: Column, cerebras: emulator.EmulatedProvider, cerebras_url: str,
                 chutes: emulator.EmulatedProvider, chutes_url: str) -> Config:
    patient = int(CLIENT_TIMEOUT * 1000)
    base = Config(port=0, state_file="", request_timeout_ms=patient, first_event_timeout_ms=patient,
                  answer_timeout_ms=patient)
    provider = attrs.evolve(
        base.cerebras, base_url=cerebras_url, api_key=cerebras.api_key, requests_per_minute=RPM,
        tokens_per_minute=TPM, uncached_tokens_per_minute=UNCACHED_TPM, tokens_per_day=None,
        max_completion_tokens_cap=CAP, context_window=CONTEXT_WINDOW, prompt_cache_seconds=column.cache_seconds,
        prompt_cache_block_tokens=CACHE_BLOCK_TOKENS,
    )
    return attrs.evolve(base, cerebras=provider, chutes=attrs.evolve(base.chutes, base_url=chutes_url,
                                                                     api_key=chutes.api_key))


async def run_column(column: Column, workload: AgentWorkload, planned: Sequence[Session],
                     deployment: Deployment, speeds: Speeds) -> AgentResult:
    result = AgentResult(column, workload)
    wall = time.perf_counter()
    cerebras = emulator.cerebras(
        requests_per_minute=RPM, tokens_per_minute=TPM, uncached_tokens_per_minute=UNCACHED_TPM,
        context_window=CONTEXT_WINDOW, completion_words=answer_words, words_per_chunk=100,
        tokens_per_second=speeds.cerebras_tokens_per_second, first_token_seconds=speeds.cerebras_first_token,
    )
    cerebras.prompt_cache.ttl, cerebras.prompt_cache.block_tokens = CACHE_SECONDS, CACHE_BLOCK_TOKENS
    chutes = emulator.chutes(completion_words=answer_words, words_per_chunk=100,
                             tokens_per_second=speeds.chutes_tokens_per_second,
                             first_token_seconds=speeds.chutes_first_token)
    async with trio.open_nursery() as nursery:
        cerebras_url = await nursery.start(emulator.serve, cerebras)
        chutes_url = await nursery.start(emulator.serve, chutes)
        config = deployment.apply(proxy_config(column, cerebras, cerebras_url, chutes, chutes_url),
                                  f"agents-{column.key}")
        STORE_CLOCK.set(lambda: SIM_EPOCH + trio.current_time())
        shutdown = trio.Event()
        async with trio.open_nursery() as proxies:
            urls = [await proxies.start(run_proxy, config, shutdown) for _ in range(deployment.replicas)]
            await _drive(urls, planned, workload, result, cerebras, chutes, deployment.sticky)
            shutdown.set()
        nursery.cancel_scope.cancel()
    result.cerebras_received += len(cerebras.received)
    result.cerebras_served = cerebras.served
    result.usage = list(cerebras.usage_log)
    result.refusals = list(cerebras.quota_refusals)
    result.chutes_served = chutes.served
    result.wall_seconds = time.perf_counter() - wall
    return result


async def _drive(urls: list[str], planned: Sequence[Session], workload: AgentWorkload, result: AgentResult,
                 cerebras: emulator.EmulatedProvider, chutes: emulator.EmulatedProvider, sticky: bool) -> None:
    """`concurrent` agents, each working through sessions one after the other until time is up;
    a turn is sent only after the previous one's answer (and the tool's time). With several
    replicas each turn goes to the next one (a round-robin balancer), or with `sticky` each
    agent stays on one (a balancer with session affinity)."""
    end = trio.current_time() + workload.seconds
    queue = iter(planned)
    sent = 0
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=CLIENT_TIMEOUT))
                   for url in urls]

        async def agent(number: int) -> None:
            nonlocal sent
            for session in queue:
                conversation = Conversation.start(session)
                for index, turn in enumerate(session.turns):
                    if trio.current_time() >= end:
                        return
                    # Only counts are kept: the bodies are large. (A refusal's index into them is not read.)
                    result.cerebras_received += len(cerebras.received)
                    for provider in (cerebras, chutes):
                        provider.received.clear()
                        provider.received_headers.clear()
                    client = clients[(number if sticky else sent) % len(clients)]
                    sent += 1
                    await _turn(client, conversation.body(index), index % 2 == 1, result)
                    conversation.answered(index)
                    await trio.sleep(turn.think)
                result.sessions_done += 1

        async with trio.open_nursery() as agents:
            for number in range(workload.concurrent):
                agents.start_soon(agent, number)


async def _turn(client: httpx.AsyncClient, body: bytes, streamed: bool, result: AgentResult) -> None:
    result.requests += 1
    try:
        async with client.stream("POST", "chat/completions", content=body,
                                 headers={"content-type": "application/json"}) as response:
            text = (await response.aread()).decode()
        error = None if response.status_code == 200 else f"status {response.status_code}"
        if error is None and streamed and ('"error"' in text or not text.rstrip().endswith("data: [DONE]")):
            error = "stream error event"
    except httpx.HTTPError as exc:
        error = type(exc).__name__
    if error is None:
        result.ok += 1
    else:
        result.errors[error] = result.errors.get(error, 0) + 1


def simulate(workload: AgentWorkload, deployment: Deployment = Deployment(), speeds: Speeds = Speeds(),
             columns: Sequence[Column] = COLUMNS) -> list[AgentResult]:
    planned = sessions(workload)

    async def main() -> list[AgentResult]:
        return [await run_column(column, workload, planned, deployment, speeds) for column in columns]

    with simulated_clock(deployment) as clock:
        return trio.run(main, clock=clock)


def report(results: Sequence[AgentResult], deployment: Deployment) -> tuple[str, bool]:
    workload = results[0].workload
    lines = [
        "Coding-agent sessions against the emulated dual-bucket Cerebras",
        workload.describe(),
        f"limits (proxy and Cerebras): {RPM} requests/min, {TPM:,} tokens/min in all, {UNCACHED_TPM:,} "
        f"uncached tokens/min; Cerebras caches prefix blocks of {CACHE_BLOCK_TOKENS} tokens for "
        f"{CACHE_SECONDS:g} s; {deployment.describe()}",
        "",
        "| | " + " | ".join(f"{r.column.key}: {r.column.title}" for r in results) + " |",
        "|---|" + "---|" * len(results),
    ]
    rows = [
        ("Cerebras requests served / min", lambda r: f"{r.per_minute():.1f}"),
        ("Cerebras 429s", lambda r: f"{len(r.refusals)} ({_pct(r.share_429())})"),
        ("client errors", lambda r: str(sum(r.errors.values()))),
        ("uncached-bucket utilisation", lambda r: _pct(r.utilisation(r.uncached(), UNCACHED_TPM))),
        ("total-bucket utilisation", lambda r: _pct(r.utilisation(r.total(), TPM))),
        ("prompt tokens from Cerebras's cache", lambda r: _pct(r.cache_share())),
        ("requests (Cerebras + Chutes)", lambda r: f"{r.ok} ({r.cerebras_served} + {r.chutes_served})"),
        ("sessions finished", lambda r: str(r.sessions_done)),
        ("wall seconds", lambda r: f"{r.wall_seconds:.0f}"),
    ]
    for title, cell in rows:
        lines.append(f"| {title} | " + " | ".join(cell(r) for r in results) + " |")
    aware, plain = results[0], results[-1]
    ratio = aware.per_minute() / plain.per_minute() if plain.per_minute() else float("inf")
    checks = [
        (f"Cerebras requests/min with cache-aware admission {ratio:.1f}x those without (target >= {TARGET_RATIO:g}x)",
         ratio >= TARGET_RATIO),
        ("Cerebras 429s " + ", ".join(f"{r.column.key} {_pct(r.share_429())}" for r in results)
         + f" (target <= {_pct(TARGET_429_SHARE)})", all(r.share_429() <= TARGET_429_SHARE for r in results)),
        ("client errors 0", all(not r.errors for r in results)),
        (f"uncached-bucket utilisation {_pct(aware.utilisation(aware.uncached(), UNCACHED_TPM))} "
         f"(target >= {_pct(TARGET_UTILISATION)})",
         aware.utilisation(aware.uncached(), UNCACHED_TPM) >= TARGET_UTILISATION),
    ]
    lines.append("")
    lines += [f"{'met    ' if met else 'MISSED '} {text}" for text, met in checks]
    return "\n".join(lines), all(met for _, met in checks)
