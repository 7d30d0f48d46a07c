#!/usr/bin/env python
"""Quota simulation: how much of Cerebras's quota trioproxy uses, and at what cost in 429s.

One `trio.run` on `trio.testing.MockClock(autojump_threshold=0)`: an emulated Cerebras with
its real paid-plan limits (15 requests/min, 165,000 tokens/min, 24,000,000 tokens/day, a
131,072-token context; buckets refilling continuously, reservations of prompt + completion
budget, 429s with Retry-After and x-ratelimit-* headers), an emulated Chutes without limits,
trioproxy between them and a seeded over-quota workload of coding-agent requests, all over
real loopback sockets. Simulated time only moves when every task waits on a timer: a write
on loopback normally lands in the peer's buffer before the run loop idles, so no I/O wait
lets the clock jump. Every run checks it (Chutes answers at once, so any simulated latency
there means I/O moved the clock; no request may time out) and says so; on a heavily loaded
machine the kernel can deliver a loopback write late, and a rare short jump shows up there.

The run starts some minutes before Cerebras's day boundary with most of that day's tokens
already spent, so tokens/day binds first and has to be recovered after the boundary; after
it tokens/minute or requests/minute bind, depending on what the proxy lets through.

With `--trace FILE` the workload is a replayed trace instead (bench/llm_trace.py reads it):
each row becomes a request at its time offset with a prompt of its ContextTokens, answered
with its GeneratedTokens by whichever emulator serves it; `--start`/`--minutes` cut a window,
`--sample` keeps a seeded share of rows, `--speed` compresses time, `--budget` is the
max_tokens every request names. The day is placed the same way, a third into the run.

Three configurations meet the same workload (same seed), one after the other, each with fresh
emulators and a fresh proxy:
  P  trioproxy as A, with patience (max_wait_ms at its default): a request Cerebras has no
     quota for now waits for it when that is expected to finish sooner than Chutes's answer;
  A  trioproxy for best use: limits at 100 % of the real ones, rate-limit header sync,
     cooldowns as long as Retry-After says, completion budget capped at 16,384 for Cerebras;
  B  the original behaviour: limits at 80 %, no header sync, a fixed 300 s cooldown after any
     429, no completion cap (on today's ledger: the settings, not the old code).

Utilisation of a limit is what the emulated Cerebras counted divided by what the limit
allowed. A bucket starts full, so over the whole run a per-minute limit allows
(minutes + 1) x its rate. The run is cut at the day boundary into two parts, and in each
part the limit closest to exhausted binds: to the boundary, tokens/day (what was left of
the day); after it, a per-minute limit (its bucket's level at the boundary plus the refill).
The binding-limit utilisation is the two parts' binding shares weighted by their length.

Several replicas (`--replicas 3`) get the requests in turn; `--backend redis` puts them on the
shared ledger (a redis-server of the simulation's own, its time following the simulated clock),
`--backend memory` on a ledger each, as separate processes would be.

Run:  python bench/quota_sim.py [--minutes 30] [--seed 1] [--quick] [--rate 2.0]
      python bench/quota_sim.py --trace FILE [--start M] [--minutes M] [--sample P] [--speed K]
                                [--budget N] [--stream-share S] [--seed 1]
      either with [--replicas 3 --backend redis|memory]

The emulated providers take time as real ones do (`Speeds`, configurable): a first token
after a delay, then output at a fixed speed. Each client's request time is measured from
sending to the last byte; the report gives their mean, p50, p95 and sum (total agent time).

Exit status 0 when configurations P and A meet every target, 1 otherwise, 2 for a trace it refuses.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AsyncExitStack, ExitStack, contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
import trio.testing
from attrs import define, field, frozen

if __package__:  # imported as bench.quota_sim (the tests)
    from . import llm_trace
else:  # run as a script: its folder is on sys.path
    import llm_trace
from trioproxy.testing import emulator
from trioproxy.config.schema import ClientConfig, Config
from trioproxy.quota.redis.clock import STORE_CLOCK
from trioproxy.quota.redis.store import QuotaStore
from trioproxy.process.supervisor import run_proxy
from trioproxy.testing.redis_server import running_redis
from trioproxy.routing.tokens import estimate_prompt_tokens

# --------------------------------------------------------------------------- constants

REAL_RPM, REAL_TPM, REAL_TPD = 15, 165_000, 24_000_000
CONTEXT_WINDOW = 131_072
# Cerebras sends its requests/day headers on every response (they carry the day's reset
# time). A figure requests/minute can never reach keeps them coming without adding a limit.
REQUESTS_PER_DAY = REAL_RPM * 1440
CEREBRAS_TOKENS_PER_SECOND = 2000.0  # Qwen3-Coder 480B on Cerebras: about 2,000 tokens/s
WORDS_PER_CHUNK = 100  # streamed text arrives in chunks of this many tokens (keeps wall time low)
DEFAULT_CAP = 16_384
PROXY_MODEL = "qwen-3-coder"
REDIS_IDLE_SECONDS = 0.005  # real idleness before the simulated clock jumps, with the Redis ledger
CLIENT_TIMEOUT = 900.0  # simulated seconds; a stall would show as an error, not a hang

SIM_EPOCH = 1_800_000_000.0  # a shared ledger's time at the simulation's clock zero
TARGET_UTILISATION = 0.95
TARGET_429_SHARE = 0.01
TARGET_PATIENCE_CUT = 0.30  # patience: mean request time at least this much below trioproxy's



@frozen
class Speeds:
    """How fast the emulated providers answer: output tokens/s and time to first token (s).

    In the ranges reported for each: Cerebras about 2,000 tokens/s with sub-second first
    tokens, Chutes tens of tokens/s with first tokens after seconds."""

    cerebras_tokens_per_second: float = CEREBRAS_TOKENS_PER_SECOND
    cerebras_first_token: float = 0.3
    chutes_tokens_per_second: float = 50.0
    chutes_first_token: float = 2.0

    def describe(self) -> str:
        return (f"Cerebras {self.cerebras_tokens_per_second:g} tokens/s, first token "
                f"{self.cerebras_first_token:g} s; Chutes {self.chutes_tokens_per_second:g} tokens/s, "
                f"first token {self.chutes_first_token:g} s")


# --------------------------------------------------------------------------- workload


@frozen(kw_only=True)
class DayPlan:
    """Where Cerebras's day ends in a run, and what is left of it before then. A workload
    (generated or a replayed trace) derives from this and says how long it lasts."""

    # Minute of the run at which Cerebras's day ends (default: a third into the run).
    day_boundary_minute: float | None = None
    # Tokens Cerebras still allows the day before the boundary (default: 60 % of what
    # tokens/minute alone would allow until then, so the day runs out first).
    day_tokens_left: int | None = None

    @property
    def seconds(self) -> float:
        raise NotImplementedError

    @property
    def boundary(self) -> float:
        """Seconds after the start at which Cerebras's day ends."""
        if self.day_boundary_minute is None:
            return self.seconds / 3
        return self.day_boundary_minute * 60.0

    @property
    def tokens_left(self) -> int:
        if self.day_tokens_left is not None:
            return self.day_tokens_left
        return int(0.6 * REAL_TPM * (self.boundary / 60.0 + 1))


@frozen
class Workload(DayPlan):
    """The seeded over-quota workload. Sizes are prompt tokens as the emulator counts them."""

    minutes: float = 30.0
    seed: int = 1
    arrivals_per_second: float = 2.0  # Poisson
    stream_share: float = 0.5
    tools_share: float = 0.3
    # Requests with some CJK text: Cerebras counts those characters as several tokens each
    # (the emulator: 6 JSON characters / 4), the proxy's 4-characters-a-token guess as 1/4.
    non_ascii_share: float = 0.1
    # (share, smallest, largest) prompt tokens per size class
    # Coding agents: a system prompt of several thousand tokens, then the conversation.
    sizes: tuple[tuple[str, float, int, int], ...] = (
        ("small", 0.25, 300, 4_000),
        ("medium", 0.40, 4_000, 20_000),
        ("large", 0.35, 20_000, 100_000),
    )
    # (share, field, value): the completion budget a request names, None = no budget
    budgets: tuple[tuple[float, str | None, int], ...] = (
        (0.4, None, 0),
        (0.3, "max_completion_tokens", 32_768),
        (0.3, "max_tokens", 8_192),
    )
    # Several clients (`--clients`): (name, share of the arrivals); empty: one anonymous client.
    clients: tuple[tuple[str, float], ...] = ()
    # Completion lengths (tokens): log-normal around the median, clipped.
    completion_median: int = 400
    completion_sigma: float = 1.0
    completion_max: int = 8_000

    @property
    def seconds(self) -> float:
        return self.minutes * 60.0

    def requests(self) -> list[Planned]:
        return plan(self)

    def completion_words(self) -> Callable[[dict[str, Any]], int]:
        return completion_words(self)

    def completion_of(self, index: int) -> int:
        """The completion tokens request `index` gets from either provider."""
        return completion_words(self)({"messages": [{"role": "user", "content": f"Task {index}:"}]})

    def headline(self, requests: int) -> list[str]:
        return [f"quota_sim: {self.minutes:g} simulated minutes, seed {self.seed}, {requests} "
                f"requests (Poisson, {self.arrivals_per_second:g}/s), {_day_line(self)}"]

    def checks(self, result: RunResult) -> list[tuple[bool, str]]:
        """Checks only this kind of workload allows (none: sizes vary by design)."""
        return []


@frozen
class Planned:
    """One client request of the workload (its body is built when it is sent)."""

    index: int
    at: float  # seconds after the start
    size: str
    prompt_chars: int
    offset: int
    stream: bool
    budget: tuple[str, int] | None
    tools: bool
    non_ascii: bool
    client: str = ""  # which client sends it (`--clients`), else ""

    def body(self) -> tuple[bytes, int]:
        return request_body(self)


def plan(workload: Workload) -> list[Planned]:
    """The arrivals of the whole run, from the workload's seed."""
    rng = random.Random(workload.seed)
    requests: list[Planned] = []
    at = rng.expovariate(workload.arrivals_per_second)
    corpus_size = len(_corpus().ascii)
    while at < workload.seconds:
        size, _, low, high = _pick(rng, [(s[1], s) for s in workload.sizes])
        tokens = rng.randint(low, high)
        chars = int(tokens * 4 / 1.025)  # JSON escapes of newlines add ~2.5 %
        _, name, value = _pick(rng, [(b[0], b) for b in workload.budgets])
        requests.append(Planned(
            index=len(requests),
            at=at,
            size=size,
            prompt_chars=chars,
            offset=rng.randrange(0, corpus_size - chars),
            stream=rng.random() < workload.stream_share,
            budget=None if name is None else (name, value),
            tools=rng.random() < workload.tools_share,
            non_ascii=rng.random() < workload.non_ascii_share,
        ))
        at += rng.expovariate(workload.arrivals_per_second)
    if workload.clients:  # drawn apart, so the requests themselves are those of a run without clients
        senders = random.Random(workload.seed * 7919 + 17)
        names = [name for name, _ in workload.clients]
        shares = [share for _, share in workload.clients]
        requests = [attrs.evolve(r, client=senders.choices(names, weights=shares)[0]) for r in requests]
    return requests


def _pick(rng: random.Random, weighted: Sequence[tuple[float, Any]]) -> Any:
    return rng.choices([item for _, item in weighted], weights=[w for w, _ in weighted])[0]


@frozen
class _Corpus:
    ascii: str
    cjk: str


@cache
def _corpus() -> _Corpus:
    """Code-like ASCII text for prompts (enough for the largest) and some CJK text."""
    rng = random.Random(20261125)
    words = ("def return self import async await for in if else elif class None True value "
             "config request response token quota window provider = == ( ) : + - # x i n "
             "result items len print with as try except raise yield lambda 0 1 42 '' \"s\" "
             "{} [] . , -> await trio.sleep(0) nursery.start_soon(task)").split()
    lines, total = [], 0
    while total < 560_000:
        line = " " * (4 * rng.randint(0, 3)) + " ".join(rng.choices(words, k=rng.randint(3, 12)))
        lines.append(line)
        total += len(line) + 1
    cjk = "".join(chr(rng.randint(0x4E00, 0x9FA5)) if i % 8 else " " for i in range(60_000))
    return _Corpus("\n".join(lines), cjk)


SYSTEM_PROMPT = (
    "You are a coding agent working in the user's repository. Read files before changing "
    "them, keep changes small, run the tests, and explain what you did in a few lines. "
) * 6

TOOLS = [
    {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": {p: {"type": "string"} for p in params},
                       "required": list(params)}}}
    for name, description, params in (
        ("read_file", "Read a file of the repository", ("path",)),
        ("write_file", "Write a file of the repository", ("path", "content")),
        ("run_command", "Run a shell command in the repository", ("command", "cwd")),
    )
]


def request_body(p: Planned) -> tuple[bytes, int]:
    """(JSON body as sent, prompt tokens as the emulator counts them)."""
    corpus = _corpus()
    text = corpus.ascii[p.offset:p.offset + p.prompt_chars]
    if p.non_ascii:
        # A tenth of the characters become CJK comments (not surrogate pairs: BMP only).
        k = p.prompt_chars // 10
        start = p.offset % (len(corpus.cjk) - k)
        text = text[:-k] + "\n# " + corpus.cjk[start:start + k]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Task {p.index}:\n{text}"},
    ]
    head: dict[str, Any] = {"model": PROXY_MODEL, "temperature": 0.2}
    if p.tools:
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": f"call_{p.index}", "type": "function",
                "function": {"name": "read_file", "arguments": '{"path": "src/app.py"}'}}]},
            {"role": "tool", "tool_call_id": f"call_{p.index}", "content": "def main():\n    pass\n"},
        ]
        head["tools"], head["tool_choice"] = TOOLS, "auto"
    if p.stream:
        head["stream"], head["stream_options"] = True, {"include_usage": True}
    if p.budget is not None:
        head[p.budget[0]] = p.budget[1]
    messages_json = json.dumps(messages, separators=(",", ":"))
    head_json = json.dumps(head, separators=(",", ":"))
    size = len(messages_json) + (len(json.dumps(TOOLS, separators=(",", ":"))) if p.tools else 0)
    body = head_json[:-1] + ',"messages":' + messages_json + "}"
    return body.encode(), max(1, size // 4)


def completion_words(workload: Workload) -> Callable[[dict[str, Any]], int]:
    """The emulators' completion length for a body: seeded by the request's task number, so
    either provider, in either configuration, answers a request at the same length."""

    def words(body: dict[str, Any]) -> int:
        match = re.match(r"Task (\d+):", _user_text(body))
        if match is None:
            return 12
        rng = random.Random(workload.seed * 1_000_003 + int(match.group(1)))
        value = rng.lognormvariate(math.log(workload.completion_median), workload.completion_sigma)
        return max(16, min(workload.completion_max, int(value)))

    return words


def _user_text(body: dict[str, Any]) -> str:
    for message in body.get("messages") or []:
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else ""
    return ""


# --------------------------------------------------------------------------- replayed trace


@frozen
class TraceRequest:
    """One row of a trace, as a client request: a prompt of the row's ContextTokens and an
    answer of its GeneratedTokens (the emulators look the row up by the body's `user`)."""

    index: int
    row: llm_trace.Row
    stream: bool
    budget: tuple[str, int] | None

    @property
    def at(self) -> float:
        return self.row.at

    @property
    def prompt_tokens(self) -> int:
        """The prompt as sent: the row's, or the smallest a chat body holds when it is below."""
        return max(self.row.prompt, SMALLEST_PROMPT)

    def body(self) -> tuple[bytes, int]:
        # A prompt of N tokens is a messages array of 4N characters as the emulators count
        # them: one user message of plain ASCII needing no JSON escapes.
        chars = max(0, 4 * self.row.prompt - _EMPTY_MESSAGES_CHARS)
        corpus = _plain_corpus()
        start = (self.row.line * 7919) % len(corpus)
        text = (corpus[start:] + corpus * (1 + chars // len(corpus)))[:chars]
        head: dict[str, Any] = {"model": PROXY_MODEL, "user": f"trace-{self.index}"}
        if self.stream:
            head["stream"], head["stream_options"] = True, {"include_usage": True}
        if self.budget is not None:
            head[self.budget[0]] = self.budget[1]
        body = {**head, "messages": [{"role": "user", "content": text}]}
        return json.dumps(body, separators=(",", ":")).encode(), self.prompt_tokens


_EMPTY_MESSAGES = [{"role": "user", "content": ""}]
_EMPTY_MESSAGES_CHARS = len(json.dumps(_EMPTY_MESSAGES, separators=(",", ":")))
SMALLEST_PROMPT = emulator.prompt_tokens({"messages": _EMPTY_MESSAGES})


@cache
def _plain_corpus() -> str:
    """The code-like corpus on one line with no character JSON escapes."""
    return _corpus().ascii.replace("\n", " ").replace('"', "'")


@frozen
class TraceWorkload(DayPlan):
    """A trace's selected rows replayed at their time offsets (see bench/llm_trace.py)."""

    selection: llm_trace.Selection
    seed: int = 1
    budget: int | None = None  # the max_tokens every client request names
    stream_share: float = 0.5

    @property
    def seconds(self) -> float:
        return self.selection.seconds

    @property
    def minutes(self) -> float:
        return self.seconds / 60.0

    def requests(self) -> list[TraceRequest]:
        budget = None if self.budget is None else ("max_tokens", self.budget)
        return [TraceRequest(index, row,
                             llm_trace.draw(self.seed, row.line, "stream") < self.stream_share,
                             budget)
                for index, row in enumerate(self.selection.rows)]

    def completion_words(self) -> Callable[[dict[str, Any]], int]:
        rows = self.selection.rows

        def words(body: dict[str, Any]) -> int:
            return rows[int(str(body["user"]).removeprefix("trace-"))].completion

        return words

    def completion_of(self, index: int) -> int:
        """The completion tokens request `index` gets: its row's, cut by the budget."""
        completion = max(1, self.selection.rows[index].completion)
        return completion if self.budget is None else min(completion, self.budget)

    def expected(self, request: TraceRequest) -> tuple[int, int]:
        """(prompt, completion) tokens the providers report for a row: the trace's, raised
        to the floors (a chat body's smallest prompt, one word of answer), cut by the budget."""
        return request.prompt_tokens, self.completion_of(request.index)

    def headline(self, requests: int) -> list[str]:
        s = self.selection
        rows = s.rows
        prompt, completion = sum(r.prompt for r in rows), sum(r.completion for r in rows)
        minutes = s.end_minute - s.start_minute
        lines = [
            f"quota_sim: replay of {s.trace.path}, minutes {s.start_minute:g}-{s.end_minute:.4g} "
            f"of the trace ({s.in_window:,} rows), sample {_pct(s.sample)}, speed x{s.speed:g}: "
            f"{requests:,} requests in {self.minutes:.4g} simulated minutes, budget "
            f"{'none' if self.budget is None else f'max_tokens {self.budget:,}'}, "
            f"{_pct(self.stream_share)} streamed (seed {self.seed})",
            f"  the rows ask {_n(prompt)} prompt + {_n(completion)} completion tokens; per "
            f"trace minute {_n(len(rows) / minutes)} requests, {_n((prompt + completion) / minutes)} tokens",
        ]
        raised = [r for r in rows if r.prompt < SMALLEST_PROMPT or r.completion < 1]
        if raised:
            lines.append(f"  {len(raised)} rows below the smallest chat request ({SMALLEST_PROMPT} "
                         "prompt tokens, 1 completion token) are sent at that size")
        if s.trace.note:
            lines.append(f"  order: {s.trace.note}")
        if source := llm_trace.attribution(s.trace.path):
            lines.append(f"  source: {source}")
        lines.append(f"  {_day_line(self)}")
        return lines

    def checks(self, result: RunResult) -> list[tuple[bool, str]]:
        """Every row answered once, with the usage the trace implies (a Cerebras cap below a
        row's completion may cut it there)."""
        requests = self.requests()
        wrong = []
        served = want = 0
        for request in requests:
            got = result.answers.get(request.index)
            if got is None:
                continue  # a failed request: counted among the client errors
            prompt, completion = self.expected(request)
            cut = min(completion, result.setup.cap or completion)
            served, want = served + sum(got), want + prompt + completion
            if got[0] != prompt or not cut <= got[1] <= completion:
                wrong.append(request.row.line)
        answered = len(result.answers)
        text = (f"rows answered once each {answered:,}/{len(requests):,}, tokens served "
                f"{_n(served)} / as the trace asks {_n(want)}")
        if wrong:
            text += f"; other usage on lines {', '.join(map(str, wrong[:5]))}"
        ok = not wrong and answered == result.ok and answered + result.client_errors == len(requests)
        return [(ok, text)]


AnyWorkload = Workload | TraceWorkload
AnyRequest = Planned | TraceRequest


def _day_line(workload: DayPlan) -> str:
    return (f"Cerebras's day ends at minute {workload.boundary / 60:.4g} with "
            f"{_n(workload.tokens_left)} tokens left before it")


# --------------------------------------------------------------------------- setups


@frozen
class Setup:
    """A trioproxy configuration under test."""

    key: str
    title: str
    rpm: int
    tpm: int
    tpd: int
    sync_headers: bool
    honour_retry_after: bool
    cap: int | None
    max_wait_ms: int = 0  # patience; 0 = off
    fair_share: bool = True  # with several clients: Cerebras shared by weight while it is short

    def describe(self) -> str:
        share = round(100 * self.tpm / REAL_TPM)
        return (f"{share} % limits ({self.rpm}/{self.tpm}/{self.tpd}), header sync "
                f"{'on' if self.sync_headers else 'off'}, "
                f"{'Retry-After cooldowns' if self.honour_retry_after else 'fixed 300 s cooldown'}, "
                f"cap {self.cap if self.cap else 'none'}, "
                + (f"patience up to {self.max_wait_ms / 1000:g} s" if self.max_wait_ms else "no patience"))


SETUPS = (
    Setup("P", "patience", REAL_RPM, REAL_TPM, REAL_TPD, True, True, DEFAULT_CAP, Config().max_wait_ms),
    Setup("A", "trioproxy", REAL_RPM, REAL_TPM, REAL_TPD, True, True, DEFAULT_CAP),
    Setup("B", "original", 12, 132_000, 19_200_000, False, False, None),
)
# `--clients`: one heavy client (a tight loop or a batch job: ten times an agent session's
# requests) and four agent sessions, all of weight 1, on trioproxy's defaults with and without
# the fair share.
CLIENTS = (("heavy", 10.0), ("agent-1", 1.0), ("agent-2", 1.0), ("agent-3", 1.0), ("agent-4", 1.0))
CLIENT_SETUPS = (
    Setup("F", "fair share", REAL_RPM, REAL_TPM, REAL_TPD, True, True, DEFAULT_CAP, Config().max_wait_ms),
    Setup("U", "first come", REAL_RPM, REAL_TPM, REAL_TPD, True, True, DEFAULT_CAP, Config().max_wait_ms,
          fair_share=False),
)
TARGET_JAIN = 0.95


def client_key(name: str) -> str:
    return f"sim-key-{name}"


def proxy_config(setup: Setup, cerebras_url: str, cerebras_key: str, chutes_url: str,
                 chutes_key: str, clients: Sequence[tuple[str, float]] = ()) -> Config:
    # A plain answer of 8,000 tokens from Chutes takes minutes: no timeout may cut it here.
    # A plain answer sends its status line only when it is complete: the first-event and
    # answer deadlines must not cut it either.
    patient = int(CLIENT_TIMEOUT * 1000)
    base = Config(port=0, cooldown_period_ms=300_000, honour_retry_after=setup.honour_retry_after,
                  max_wait_ms=setup.max_wait_ms, request_timeout_ms=patient,
                  first_event_timeout_ms=patient, answer_timeout_ms=patient)
    if "state_file" in attrs.fields_dict(Config):
        base = attrs.evolve(base, state_file="")  # never read or write the user's state
    cerebras = attrs.evolve(
        base.cerebras, base_url=cerebras_url, api_key=cerebras_key,
        requests_per_minute=setup.rpm, tokens_per_minute=setup.tpm, tokens_per_day=setup.tpd,
        max_completion_tokens_cap=setup.cap, context_window=CONTEXT_WINDOW,
        sync_rate_limit_headers=setup.sync_headers,
    )
    chutes = attrs.evolve(base.chutes, base_url=chutes_url, api_key=chutes_key)
    if clients:
        named = tuple(ClientConfig(name=name, api_keys=(client_key(name),)) for name, _ in clients)
        base = attrs.evolve(base, clients=named, fair_share=setup.fair_share)
    return attrs.evolve(base, cerebras=cerebras, chutes=chutes)


@frozen
class Deployment:
    """How many trioproxy processes spend the key (requests go to each in turn), on which ledger."""

    replicas: int = 1
    backend: str = "memory"  # or "redis": the shared ledger, on the redis-server at redis_url
    redis_url: str = ""
    sticky: bool = False  # (agent sessions) each session stays on one replica

    def apply(self, config: Config, run: str) -> Config:
        if self.backend == "memory":
            return config
        # The store's timeout counts simulated time, which may jump while an answer is on its way.
        return attrs.evolve(config, quota_backend="redis", redis_url=self.redis_url, replicas=self.replicas,
                            redis_key_prefix=f"quota-sim-{run}:", redis_timeout_ms=3_600_000)

    def describe(self) -> str:
        text = f"{self.replicas} trioproxy replica{'s' if self.replicas > 1 else ''} on the {self.backend} ledger"
        if self.replicas > 1 and self.sticky:
            text += ", each session on one replica"
        return text


# --------------------------------------------------------------------------- one run


@frozen
class Part:
    """A stretch of the run (to the day boundary, after it) and what each limit allowed in it.

    A per-minute limit allows its bucket's level at the start of the part plus its refill;
    tokens/day allows what was left of the day. Counted: for the per-minute limits, the
    requests the emulated Cerebras admitted in the part (with their tokens), for tokens/day
    the tokens it settled in the part (that is when its day counts them)."""

    name: str
    first_minute: float
    last_minute: float
    counted: dict[str, float]
    allowed: dict[str, float]

    @property
    def minutes(self) -> float:
        return self.last_minute - self.first_minute

    def share(self, limit: str) -> float:
        return self.counted[limit] / self.allowed[limit] if self.allowed[limit] else 0.0

    def binding(self) -> tuple[str, float]:
        """The limit closest to exhausted in this part, and its share."""
        return max(((limit, self.share(limit)) for limit in ("rpm", "tpm", "tpd")),
                   key=lambda pair: pair[1])


@frozen
class Diversion:
    """A request the proxy sent to Chutes for a quota reason, and whether Cerebras had room."""

    at: float
    reason: str
    cerebras_would_accept: bool


@define
class RunResult:
    setup: Setup
    workload: AnyWorkload
    start: float
    wall_seconds: float = 0.0
    # client side
    requests: int = 0
    ok: int = 0
    errors: Counter[str] = field(factory=Counter)
    client_tokens: int = 0
    answers: dict[int, tuple[int, int]] = field(factory=dict)  # request -> usage it got
    # emulated providers
    cerebras_received: int = 0
    cerebras_served: int = 0
    cerebras_usage: list[emulator.Usage] = field(factory=list)
    refusals: list[emulator.QuotaRefusal] = field(factory=list)
    refusal_causes: Counter[str] = field(factory=Counter)
    refusal_notes: list[str] = field(factory=list)
    chutes_received: int = 0
    chutes_served: int = 0
    chutes_tokens: int = 0
    # the proxy, from its logs
    routes: Counter[tuple[str, str]] = field(factory=Counter)  # (provider, reason)
    cooldowns: list[tuple[float, float, str]] = field(factory=list)  # (at, seconds, reason)
    failures: Counter[str] = field(factory=Counter)  # router's "failed (label)" warnings
    diversions: list[Diversion] = field(factory=list)
    levels_at_boundary: dict[str, float | None] | None = None  # emulated Cerebras's
    # simulated seconds Chutes answers took beyond their expected first token and generation
    chutes_latencies: list[float] = field(factory=list)
    request_times: list[float] = field(factory=list)  # simulated seconds, as each client saw
    waits: list[float] = field(factory=list)  # seconds patience held a request, from the log
    served_by: dict[str, str] = field(factory=dict)  # request id -> provider, from the log
    client_times: dict[str, list[float]] = field(factory=dict)  # `--clients`: request times by client

    # ----- figures

    @property
    def boundary(self) -> float:
        return self.start + self.workload.boundary

    @property
    def minutes(self) -> float:
        return self.workload.minutes

    @property
    def cerebras_tokens(self) -> int:
        return _tokens(self.cerebras_usage)

    @property
    def day1_tokens(self) -> int:
        """Tokens Cerebras's day 1 counted (a completion counts when it is settled)."""
        return _tokens([u for u in self.cerebras_usage if u.at < self.boundary])

    @property
    def day2_tokens(self) -> int:
        return self.cerebras_tokens - self.day1_tokens

    @property
    def rpm_allowed(self) -> float:
        return REAL_RPM * (self.minutes + 1)

    @property
    def tpm_allowed(self) -> float:
        return REAL_TPM * (self.minutes + 1)

    def shares(self) -> dict[str, float]:
        """Whole run: each limit's counted / allowed (tpd per day)."""
        return {
            "rpm": self.cerebras_served / self.rpm_allowed,
            "tpm": self.cerebras_tokens / self.tpm_allowed,
            "tpd day 1": self.day1_tokens / self.workload.tokens_left,
            "tpd day 2": self.day2_tokens / REAL_TPD,
        }

    def parts(self) -> list[Part]:
        """The run cut at the day boundary; in each part one limit binds."""
        end = self.start + self.workload.seconds
        cuts = [self.start, min(self.boundary, end), end]
        parts = []
        for i, (first, last) in enumerate(zip(cuts, cuts[1:])):
            if last <= first:
                continue
            def within(at: float) -> bool:
                return first <= at and (at < last or last == end)

            admitted = [u for u in self.cerebras_usage if within(u.admitted_at)]
            settled = [u for u in self.cerebras_usage if within(u.at)]
            minutes = (last - first) / 60.0
            if i == 0:  # the buckets start full; the day has what was left of it
                rpm_start, tpm_start, tpd = REAL_RPM, REAL_TPM, self.workload.tokens_left
            else:  # the buckets hold what was unused at the boundary; a new day
                levels = self.levels_at_boundary or {}
                rpm_start, tpm_start, tpd = levels.get("rpm") or 0, levels.get("tpm") or 0, REAL_TPD
            parts.append(Part(
                "to the day boundary" if i == 0 else "after the boundary",
                (first - self.start) / 60.0, (last - self.start) / 60.0,
                counted={"rpm": len(admitted), "tpm": _tokens(admitted), "tpd": _tokens(settled)},
                allowed={"rpm": rpm_start + REAL_RPM * minutes,
                         "tpm": tpm_start + REAL_TPM * minutes, "tpd": tpd},
            ))
        return parts

    def binding(self) -> float:
        """Utilisation of the binding limit over the run: each part's, weighted by its length."""
        parts = self.parts()
        return sum(p.binding()[1] * p.minutes for p in parts) / sum(p.minutes for p in parts)

    def request_time(self, statistic: str) -> float:
        """Mean, p50 or p95 of the time requests took, as their clients saw it."""
        times = sorted(self.request_times)
        if not times:
            return 0.0
        if statistic == "mean":
            return sum(times) / len(times)
        share = {"p50": 0.50, "p95": 0.95}[statistic]
        return times[min(len(times) - 1, int(share * len(times)))]

    @property
    def share_429(self) -> float:
        return len(self.refusals) / self.cerebras_received if self.cerebras_received else 0.0

    @property
    def client_errors(self) -> int:
        return sum(self.errors.values())

    def cerebras_by_client(self) -> dict[str, int]:
        """`--clients`: Cerebras tokens each client's answers took (prompt and completion), of
        the requests sent while every client is active (from the last one's first request on:
        before, fewer clients share, and one alone takes what it likes, by design)."""
        tokens = {name: 0 for name, _ in getattr(self.workload, "clients", ())}
        requests = self.workload.requests()
        firsts: dict[str, float] = {}
        for request in requests:
            firsts.setdefault(request.client, request.at)
        all_active = max(firsts.values(), default=0.0)
        for request in requests:
            if (request.at >= all_active and self.served_by.get(f"sim-{request.index}") == "cerebras"
                    and request.index in self.answers):
                tokens[request.client] += sum(self.answers[request.index])
        return tokens

    def jain(self) -> float:
        """Jain's fairness index of the clients' Cerebras shares over their weights (all 1 here):
        1 when equal, 1/n when one client has it all."""
        shares = list(self.cerebras_by_client().values())
        squares = sum(x * x for x in shares)
        return sum(shares) ** 2 / (len(shares) * squares) if squares else 0.0

    def consistency(self) -> list[str]:
        """Accounting identities that must hold; each broken one is described."""
        problems = []
        if self.ok + self.client_errors != self.requests:
            problems.append(f"client: {self.ok} ok + {self.client_errors} errors != {self.requests}")
        if self.ok != self.cerebras_served + self.chutes_served:
            problems.append(f"{self.ok} answers != {self.cerebras_served} Cerebras + "
                            f"{self.chutes_served} Chutes")
        if self.client_tokens != self.cerebras_tokens + self.chutes_tokens:
            problems.append(f"client saw {self.client_tokens} tokens != {self.cerebras_tokens} "
                            f"Cerebras + {self.chutes_tokens} Chutes")
        if self.cerebras_served + len(self.refusals) > self.cerebras_received:
            problems.append("Cerebras answered more requests than it received")
        return problems


def _tokens(usage: Sequence[emulator.Usage]) -> int:
    return sum(u.prompt_tokens + u.completion_tokens for u in usage)


class _ProxyLog(logging.Handler):
    """Collects what the proxy logs during one run (routes, cooldowns, failures)."""

    def __init__(self, result: RunResult, cerebras: emulator.EmulatedProvider,
                 needs: dict[str, tuple[int, int | None]], cap: int | None,
                 chutes_seconds: Callable[[str], float]) -> None:
        super().__init__(logging.DEBUG)
        self.result = result
        self.cerebras = cerebras
        self.needs = needs  # request id -> (prompt tokens, completion budget named)
        self.cap = cap
        self.chutes_seconds = chutes_seconds  # request id -> its expected Chutes answer time

    _REQUEST = re.compile(r"request (\S+) api=\w+ provider=(\S+) reason='([^']*)'.*?latency_ms=(\d+)"
                          r"(?: waited_ms=(\d+))?")
    _SKIPPED = re.compile(r"request (\S+): cerebras\S* skipped \((\w+)\)")
    _FAILED = re.compile(r"request \S+: (\S+) failed \(([^)]*)\)")
    _COOLDOWN = re.compile(r"(\S+) cooldown started for (\d+) s \((.*)\)")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            now = trio.current_time()
        except Exception:  # a record from outside the run, or a format we do not know
            return
        if match := self._REQUEST.match(message):
            request_id, provider, reason, latency, waited = match.groups()
            provider = provider.split("#")[0]
            self.result.routes[(provider, reason)] += 1
            self.result.served_by[request_id] = provider
            waited_seconds = int(waited or 0) / 1000
            if waited_seconds:
                self.result.waits.append(waited_seconds)
            if provider == "chutes":
                beyond = int(latency) / 1000 - waited_seconds - self.chutes_seconds(request_id)
                self.result.chutes_latencies.append(0.0 if abs(beyond) <= 0.002 else beyond)
        elif match := self._SKIPPED.match(message):
            # Logged the moment the proxy passed Cerebras over for quota (after any wait).
            self._diversion(now, match.group(1), f"fallback: {match.group(2)}")
        elif match := self._FAILED.match(message):
            self.result.failures[f"{match.group(1).split('#')[0]} {match.group(2)}"] += 1
        elif match := self._COOLDOWN.match(message):
            if match.group(1).startswith("cerebras"):
                self.result.cooldowns.append((now, float(match.group(2)), match.group(3)))

    def _diversion(self, now: float, request_id: str, reason: str) -> None:
        """Would the emulated Cerebras have taken this request at the moment it was routed?"""
        need = self.needs.get(request_id)
        if need is None:
            return
        prompt, budget = need
        if self.cap is not None:
            budget = self.cap if budget is None else min(budget, self.cap)
        reserved = prompt + (budget or emulator.DEFAULT_RESERVED_COMPLETION)
        levels = self.cerebras.levels()
        fits = (prompt + (budget or 0) <= CONTEXT_WINDOW
                and (levels["rpm"] or 0) >= 1
                and (levels["tpm"] or 0) >= reserved
                and (levels["tpd"] or 0) >= prompt)
        self.result.diversions.append(Diversion(now, reason, fits))


async def run_setup(setup: Setup, workload: AnyWorkload, requests: Sequence[AnyRequest],
                    deployment: Deployment = Deployment(), speeds: Speeds = Speeds()) -> RunResult:
    """One configuration against the workload, with fresh emulators and proxies."""
    start = trio.current_time()
    result = RunResult(setup, workload, start)
    wall = time.perf_counter()
    words = workload.completion_words()
    cerebras = emulator.cerebras(
        requests_per_minute=REAL_RPM, tokens_per_minute=REAL_TPM, tokens_per_day=REAL_TPD,
        requests_per_day=REQUESTS_PER_DAY, context_window=CONTEXT_WINDOW,
        day_started_at=start + workload.boundary - emulator.DAY_SECONDS,
        day_tokens_used=REAL_TPD - workload.tokens_left,
        completion_words=words, words_per_chunk=WORDS_PER_CHUNK,
        tokens_per_second=speeds.cerebras_tokens_per_second,
        first_token_seconds=speeds.cerebras_first_token,
    )
    chutes = emulator.chutes(completion_words=words, words_per_chunk=WORDS_PER_CHUNK,
                             tokens_per_second=speeds.chutes_tokens_per_second,
                             first_token_seconds=speeds.chutes_first_token)

    def chutes_seconds(request_id: str) -> float:
        tokens = workload.completion_of(int(request_id.rsplit("-", 1)[-1]))
        return speeds.chutes_first_token + tokens / speeds.chutes_tokens_per_second

    needs: dict[str, tuple[int, int | None]] = {}
    handler = _ProxyLog(result, cerebras, needs, setup.cap, chutes_seconds)
    proxy_logger = logging.getLogger("trioproxy")
    router_logger = logging.getLogger("trioproxy.router")  # its DEBUG line: Cerebras passed over
    saved = proxy_logger.level, proxy_logger.propagate, router_logger.level
    proxy_logger.addHandler(handler)
    proxy_logger.setLevel(logging.INFO)
    router_logger.setLevel(logging.DEBUG)
    proxy_logger.propagate = False
    try:
        async with trio.open_nursery() as nursery:
            cerebras_url = await nursery.start(emulator.serve, cerebras)
            chutes_url = await nursery.start(emulator.serve, chutes)
            clients = getattr(workload, "clients", ())
            config = deployment.apply(proxy_config(setup, cerebras_url, cerebras.api_key, chutes_url, chutes.api_key,
                                                   clients), setup.key)
            shutdown = trio.Event()

            async def note_boundary() -> None:
                await trio.sleep_until(result.boundary)
                result.levels_at_boundary = cerebras.levels()

            nursery.start_soon(note_boundary)
            # A shared ledger's buckets refill in simulated time, like everything else here.
            STORE_CLOCK.set(lambda: SIM_EPOCH + trio.current_time())
            async with trio.open_nursery() as proxy_nursery:
                base_urls = [await proxy_nursery.start(run_proxy, config, shutdown) for _ in range(deployment.replicas)]
                await _drive(base_urls, requests, start, result, needs, chutes)
                shutdown.set()
            nursery.cancel_scope.cancel()
    finally:
        proxy_logger.removeHandler(handler)
        proxy_logger.setLevel(saved[0])
        proxy_logger.propagate = saved[1]
        router_logger.setLevel(saved[2])
    result.cerebras_received = len(cerebras.received)
    result.cerebras_served = cerebras.served
    result.cerebras_usage = list(cerebras.usage_log)
    result.refusals = list(cerebras.quota_refusals)
    result.refusal_causes, result.refusal_notes = _refusal_causes(cerebras)
    result.chutes_received += len(chutes.received)
    result.chutes_served = chutes.served
    result.chutes_tokens = _tokens(chutes.usage_log)
    result.wall_seconds = time.perf_counter() - wall
    return result


async def _drive(base_urls: list[str], requests: Sequence[AnyRequest], start: float, result: RunResult,
                 needs: dict[str, tuple[int, int | None]],
                 chutes: emulator.EmulatedProvider) -> None:
    """Send every planned request at its time, to each proxy in turn, and wait for all answers."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
    async with AsyncExitStack() as stack:
        proxies = [await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=CLIENT_TIMEOUT, limits=limits))
                   for url in base_urls]
        async with trio.open_nursery() as clients:
            for planned in requests:
                await trio.sleep_until(start + planned.at)
                # Chutes keeps every body it received; only the count matters here.
                result.chutes_received += len(chutes.received)
                chutes.received.clear()
                chutes.received_headers.clear()
                clients.start_soon(_send, proxies[planned.index % len(proxies)], planned, result, needs)
    result.requests = len(requests)


async def _send(client: httpx.AsyncClient, planned: AnyRequest, result: RunResult,
                needs: dict[str, tuple[int, int | None]]) -> None:
    body, prompt = planned.body()
    request_id = f"sim-{planned.index}"
    needs[request_id] = (prompt, planned.budget[1] if planned.budget else None)
    headers = {"content-type": "application/json", "x-request-id": request_id}
    sender = getattr(planned, "client", "")
    if sender:
        headers["authorization"] = f"Bearer {client_key(sender)}"
    error: str | None = None
    usage: dict[str, Any] | None = None
    sent_at = trio.current_time()
    try:
        if planned.stream:
            async with client.stream("POST", "chat/completions", content=body, headers=headers) as response:
                if response.status_code != 200:
                    await response.aread()
                    error = f"status {response.status_code}"
                else:
                    usage, error = await _read_stream(response)
        else:
            response = await client.post("chat/completions", content=body, headers=headers)
            if response.status_code != 200:
                error = f"status {response.status_code}"
            else:
                usage = response.json().get("usage")
    except (httpx.HTTPError, ValueError) as exc:
        error = type(exc).__name__
    if error is None and not isinstance(usage, dict):
        error = "no usage"
    if error is not None:
        result.errors[error] += 1
        return
    assert usage is not None
    result.request_times.append(trio.current_time() - sent_at)
    if sender:
        result.client_times.setdefault(sender, []).append(result.request_times[-1])
    result.ok += 1
    answer = int(usage["prompt_tokens"]), int(usage["completion_tokens"])
    result.answers[planned.index] = answer
    result.client_tokens += sum(answer)


async def _read_stream(response: httpx.Response) -> tuple[dict[str, Any] | None, str | None]:
    usage, done = None, False
    async for line in response.aiter_lines():
        if not line.startswith("data: "):
            continue
        data = line[len("data: "):]
        if data == "[DONE]":
            done = True
            continue
        if '"usage"' not in data and '"error"' not in data:
            continue  # a content chunk: nothing to count (saves the parsing)
        event = json.loads(data)
        if "error" in event:
            return None, "stream error event"
        if event.get("usage"):
            usage = event["usage"]
    return usage, None if done else "stream without [DONE]"


def _refusal_causes(cerebras: emulator.EmulatedProvider) -> tuple[Counter[str], list[str]]:
    """Why each quota 429 happened, as far as the request itself tells, with details."""
    causes: Counter[str] = Counter()
    notes: list[str] = []
    for refusal in cerebras.quota_refusals:
        body = cerebras.received[refusal.request]
        named = any(isinstance(body.get(k), int) for k in ("max_completion_tokens", "max_tokens"))
        guess = estimate_prompt_tokens(body)
        available = "-" if refusal.available is None else _n(refusal.available)
        notes.append(f"{refusal.limit} 429: prompt {_n(refusal.prompt_tokens)} (raw estimate "
                     f"{_n(guess)}), reserved {_n(refusal.reserved)}, Cerebras had {available}")
        if refusal.limit == "tpd":
            causes["tpd: the day's tokens ran out (spent before the proxy started)"] += 1
        elif refusal.limit == "tpm" and guess < refusal.prompt_tokens:
            causes["tpm: prompt underestimated (non-ASCII text)"] += 1
        elif refusal.limit == "tpm" and not named:
            causes["tpm: no budget sent, Cerebras reserved its default 8,192"] += 1
        else:
            causes[f"{refusal.limit}: the proxy's count allowed it, Cerebras's did not"] += 1
    return causes, notes[:8]


# --------------------------------------------------------------------------- entry points


def simulate(workload: AnyWorkload, setups: Sequence[Setup] = SETUPS,
             deployment: Deployment = Deployment(), speeds: Speeds = Speeds()) -> list[RunResult]:
    """Run every setup on the same workload in one trio.run on an autojumping MockClock.

    With Redis the clock jumps only after 5 ms of real idleness: a jump at once would move the
    simulated time while a call to Redis is on its way, again and again (patience's waiters
    keep timers pending), and the shared ledger would see time its callers never lived."""
    requests = workload.requests()

    async def main() -> list[RunResult]:
        return [await run_setup(setup, workload, requests, deployment, speeds) for setup in setups]

    with simulated_clock(deployment) as clock:
        return trio.run(main, clock=clock)


@contextmanager
def simulated_clock(deployment: Deployment) -> Iterator[trio.testing.MockClock]:
    """The autojumping clock of a simulation. With Redis, it also stands still while a call to
    Redis is on its way: on loopback a call takes a fraction of a millisecond of real time, but
    on a loaded machine its answer can come later than the idle threshold, and the clock jumped
    meanwhile (measured on a 2-core machine under load: one call of the clients' exchange spanned
    up to 3.3 simulated seconds). The shared ledger and the clients' figures then lived through
    time that nobody else did, and the runs' figures depended on the machine's load."""
    idle = REDIS_IDLE_SECONDS if deployment.backend == "redis" else 0
    clock = trio.testing.MockClock(autojump_threshold=idle)
    if deployment.backend != "redis":
        yield clock
        return
    in_flight = 0

    def held(call: Callable[..., Any]) -> Callable[..., Any]:
        async def holding(*args: Any, **kwargs: Any) -> Any:
            nonlocal in_flight
            in_flight += 1
            clock.autojump_threshold = math.inf
            try:
                return await call(*args, **kwargs)
            finally:
                in_flight -= 1
                if not in_flight:
                    clock.autojump_threshold = idle
        return holding

    saved = {name: getattr(QuotaStore, name) for name in ("send", "commands")}
    for name, call in saved.items():
        setattr(QuotaStore, name, held(call))
    try:
        yield clock
    finally:
        for name, call in saved.items():
            setattr(QuotaStore, name, call)


def rpm_ceiling(arrivals: Sequence[float]) -> int:
    """The most requests any router could send Cerebras on these arrivals (seconds from the
    start): send each one the moment the requests/minute bucket (full at the start) holds
    one. Greedy is optimal for one bucket of whole requests; tokens can only lower it. Where
    arrivals pause, the bucket sits full and its refill is lost to every router alike."""
    level, last, sent = float(REAL_RPM), 0.0, 0
    for at in arrivals:
        level, last = min(REAL_RPM, level + (at - last) * REAL_RPM / 60.0), at
        if level >= 1:
            level, sent = level - 1, sent + 1
    return sent


def best_mean_times(completions: Sequence[int], served: int, speeds: Speeds) -> tuple[float, float]:
    """The lowest mean request time an admission policy could reach if Cerebras answered
    `served` of these requests and Chutes the rest: (knowing every answer's length in advance,
    not knowing them).

    A request takes its provider's first token plus its length over the provider's speed; on
    Cerebras it saves the difference, which grows with the length. Knowing the lengths, the best
    is to give Cerebras's answers to the longest ones. Not knowing them, any choice of `served`
    requests saves `served` times the mean saving on average (the lengths here do not depend
    on anything a proxy sees before the answer). Both are optimistic: no request waits for
    its slot and tokens never bind, so no policy of the proxy can do better."""
    if not completions:
        return 0.0, 0.0

    def chutes(tokens: int) -> float:
        return speeds.chutes_first_token + tokens / speeds.chutes_tokens_per_second

    def cerebras(tokens: int) -> float:
        return speeds.cerebras_first_token + tokens / speeds.cerebras_tokens_per_second

    savings = sorted((chutes(t) - cerebras(t) for t in completions), reverse=True)
    served = min(served, len(completions))
    all_chutes = sum(chutes(t) for t in completions)
    known = (all_chutes - sum(savings[:served])) / len(completions)
    blind = (all_chutes - served * sum(savings) / len(savings)) / len(completions)
    return known, blind


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def _n(value: float) -> str:
    return f"{value:,.0f}"


def report(results: Sequence[RunResult], deployment: Deployment = Deployment(),
           speeds: Speeds | None = None) -> tuple[str, bool]:
    """The printed report, and whether the first results (P and A) met every target."""
    w = results[0].workload
    lines = [*w.headline(results[0].requests), f"  {deployment.describe()}",
             *([f"  speeds: {speeds.describe()}"] if speeds is not None else []), ""]
    for r in results:
        lines.append(f"  {r.setup.key}: {r.setup.title}: {r.setup.describe()}")
    lines.append("")
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, fn: Callable[[RunResult], str]) -> None:
        rows.append((label, [fn(r) for r in results]))

    row("Cerebras utilisation, whole run", lambda r: "counted / allowed")
    row(f"  rpm  requests / {REAL_RPM} x (min + 1)",
        lambda r: f"{_pct(r.shares()['rpm'])}  {r.cerebras_served}/{_n(r.rpm_allowed)}")
    ceiling = rpm_ceiling([request.at for request in w.requests()])
    row("  rpm  requests / most these arrivals allow",
        lambda r: f"{_pct(r.cerebras_served / ceiling)}  {r.cerebras_served}/{ceiling}")
    row(f"  tpm  tokens / {REAL_TPM:,} x (min + 1)",
        lambda r: f"{_pct(r.shares()['tpm'])}  {_n(r.cerebras_tokens)}/{_n(r.tpm_allowed)}")
    row("  tpd  day 1 tokens / left that day",
        lambda r: f"{_pct(r.shares()['tpd day 1'])}  {_n(r.day1_tokens)}/{_n(w.tokens_left)}")
    row(f"  tpd  day 2 tokens / {REAL_TPD:,}",
        lambda r: f"{_pct(r.shares()['tpd day 2'])}  {_n(r.day2_tokens)}")
    for index, part in enumerate(results[0].parts()):
        row(f"Minutes {part.first_minute:g}-{part.last_minute:g} ({part.name})",
            lambda r: "rpm / tpm / tpd")
        row("  each limit", lambda r, i=index: " / ".join(
            _pct(r.parts()[i].share(limit)) for limit in ("rpm", "tpm", "tpd")))
        row("  binding limit", lambda r, i=index: "{1}  {0}  ({2}/{3})".format(
            r.parts()[i].binding()[0], _pct(r.parts()[i].binding()[1]),
            _n(r.parts()[i].counted[r.parts()[i].binding()[0]]),
            _n(r.parts()[i].allowed[r.parts()[i].binding()[0]])))
    row("Binding-limit utilisation (parts by length)", lambda r: _pct(r.binding()))
    row("Tokens served: Cerebras", lambda r: _n(r.cerebras_tokens))
    row("Tokens served: Chutes", lambda r: _n(r.chutes_tokens))
    row("Cerebras requests: sent / 200", lambda r: f"{r.cerebras_received} / {r.cerebras_served}")
    row("Cerebras 429s (share of its requests)",
        lambda r: f"{len(r.refusals)}  ({_pct(r.share_429)})")
    row("  by limit", lambda r: ", ".join(f"{k} {v}" for k, v in sorted(
        Counter(x.limit for x in r.refusals).items())) or "-")
    row("Chutes requests: sent / 200", lambda r: f"{r.chutes_received} / {r.chutes_served}")
    row("Client requests / errors (non-200)", lambda r: f"{r.requests} / {r.client_errors}")
    row("Request time: mean / p50 / p95", lambda r: " / ".join(
        f"{r.request_time(s):.1f} s" for s in ("mean", "p50", "p95")))
    row("Total agent time (sum of request times)", lambda r: f"{sum(r.request_times) / 3600:.2f} h")
    completions = [completion for _, completion in results[0].answers.values()]
    pace = speeds or Speeds()
    row("Best mean any policy could reach, lengths",
        lambda r: f"known / unknown (Cerebras answers {r.cerebras_served})")
    row("  with this run's Cerebras answers", lambda r: "{0:.1f} s / {1:.1f} s".format(
        *best_mean_times(completions, r.cerebras_served, pace)))
    row(f"  with the most requests/minute allows ({ceiling})", lambda r: "{0:.1f} s / {1:.1f} s".format(
        *best_mean_times(completions, ceiling, pace)))
    row("Requests patience held / mean wait", lambda r: f"{len(r.waits)} / "
        + (f"{sum(r.waits) / len(r.waits):.1f} s" if r.waits else "-"))
    for name, _ in getattr(w, "clients", ()):
        row(f"Client {name}: Cerebras share (all active) / mean time", lambda r, n=name: "{0}  / {1:.1f} s ({2} req)".format(
            _pct(r.cerebras_by_client()[n] / max(1, sum(r.cerebras_by_client().values()))),
            sum(r.client_times.get(n, [0])) / max(1, len(r.client_times.get(n, []))), len(r.client_times.get(n, []))))
    if getattr(w, "clients", ()):
        row("Jain index of the clients' Cerebras shares (all active)", lambda r: f"{r.jain():.3f}")
    row("Wall time", lambda r: f"{r.wall_seconds:.1f} s")
    width = max(len(label) for label, _ in rows) + 2
    col = max(28, *(len(v) + 2 for _, values in rows for v in values))
    lines.append(" " * width + "".join(f"{r.setup.key + ': ' + r.setup.title:<{col}}" for r in results))
    for label, values in rows:
        lines.append(f"{label:<{width}}" + "".join(f"{v:<{col}}" for v in values))
    lines.append("")

    passed = True
    for i, r in enumerate(results):
        bounds: list[str] = []
        checks = [
            (r.binding() >= TARGET_UTILISATION,
             f"binding-limit utilisation {_pct(r.binding())} >= {_pct(TARGET_UTILISATION)}"
             " (" + ", ".join(f"{p.binding()[0]} {_pct(p.binding()[1])}" for p in r.parts()) + ")"),
            (r.share_429 <= TARGET_429_SHARE,
             f"Cerebras 429s {_pct(r.share_429)} of its requests <= {_pct(TARGET_429_SHARE)}"),
            (r.client_errors == 0, f"client-visible errors {r.client_errors} == 0"),
        ]
        problems = r.consistency()
        checks.append((not problems, "counts add up" + (": " + "; ".join(problems) if problems else "")))
        checks += w.checks(r)
        several = bool(getattr(w, "clients", ()))
        if several:
            checks.append((r.jain() >= TARGET_JAIN, f"Jain index of the clients' Cerebras shares {r.jain():.3f} "
                                                    f">= {TARGET_JAIN}"))
        if i == 0 and r.setup.max_wait_ms and len(results) > 1 and not several:
            mean, without = r.request_time("mean"), results[1].request_time("mean")
            cut = 1 - mean / without if without else 0.0
            checks.append((cut >= TARGET_PATIENCE_CUT,
                           f"mean request time {mean:.1f} s is {_pct(cut)} below {results[1].setup.key}'s "
                           f"{without:.1f} s (target >= {_pct(TARGET_PATIENCE_CUT)})"))
            bounds = _reachable_cuts(completions, results[1], ceiling, pace)
        # The original design, and first come first served among clients, are there for comparison only.
        counted = r.setup.key != "B" and (r.setup.fair_share or not several)
        title = "Targets" if counted else "Same targets, for comparison only"
        lines.append(f"{title} ({r.setup.key}: {r.setup.title}):")
        for ok, text in checks:
            lines.append(f"  {'PASS' if ok else 'FAIL'}  {text}")
            if counted:
                passed = passed and ok
        lines.extend(bounds)
        lines.append("")

    lines.append("Diagnosis")
    for r in results:
        lines.extend(_diagnosis(r))
    return "\n".join(lines), passed


def _reachable_cuts(completions: Sequence[int], without: RunResult, ceiling: int, speeds: Speeds) -> list[str]:
    """What share of the patience target any admission policy could reach (best_mean_times)."""
    mean = without.request_time("mean")
    lines = [f"  The cut of the mean any admission policy could reach against {without.setup.key}'s "
             f"{mean:.1f} s (optimistic: no waits, tokens never bind):"]
    for label, served in ((f"{without.cerebras_served} Cerebras answers as in {without.setup.key}", without.cerebras_served),
                          (f"{ceiling} Cerebras answers, the most requests/minute allows", ceiling)):
        known, blind = best_mean_times(completions, served, speeds)
        lines.append(f"    with {label}: {_pct(1 - known / mean)} knowing every answer's length in "
                     f"advance, {_pct(1 - blind / mean)} not knowing them (on average)")
    return lines


def _diagnosis(r: RunResult) -> list[str]:
    out = [f"  {r.setup.key}: {r.setup.title}"]
    rates = {"rpm": REAL_RPM, "tpm": REAL_TPM}
    for part in r.parts():
        limit, share = part.binding()
        allowed, counted = part.allowed[limit], part.counted[limit]
        line = (f"    minutes {part.first_minute:g}-{part.last_minute:g}: {limit} binds, "
                f"{_n(allowed - counted)} of {_n(allowed)} unused")
        if limit in rates:  # for reference: what counting in sliding windows could reach
            ceiling = min(rates[limit] * part.minutes, allowed)
            line += f" (a 60 s sliding window could use at most {_pct(ceiling / allowed)})"
        out.append(line)
    for cause, count in r.refusal_causes.most_common():
        out.append(f"    429 x{count}: {cause}")
    out.extend(f"      {note}" for note in r.refusal_notes)
    if r.cooldowns:
        total = sum(seconds for _, seconds, _ in r.cooldowns)
        out.append(f"    cooldowns: {len(r.cooldowns)}, {total:,.0f} s in all")
        for at, seconds, reason in r.cooldowns[:6]:
            out.append(f"      at minute {(at - r.start) / 60:5.1f}: {seconds:,.0f} s ({reason})")
        if len(r.cooldowns) > 6:
            out.append(f"      ... {len(r.cooldowns) - 6} more")
    reasons = Counter(reason for (provider, reason), n in r.routes.items() for _ in range(n)
                      if provider == "chutes")
    out.append("    Chutes got: " + ", ".join(f"{reason} {n}" for reason, n in reasons.most_common()))
    by_reason: dict[str, list[Diversion]] = {}
    for d in r.diversions:
        by_reason.setdefault(d.reason, []).append(d)
    room = [f"{reason.split(': ')[-1]} {sum(d.cerebras_would_accept for d in items)}/{len(items)}"
            for reason, items in sorted(by_reason.items())]
    if room:
        out.append("    of those, the emulated Cerebras had room at that very moment for: "
                   + ", ".join(room))
    if r.failures:
        out.append("    upstream failures seen by the proxy: "
                   + ", ".join(f"{k} x{v}" for k, v in r.failures.most_common()))
    timeouts = sum(v for k, v in r.failures.items() if "timeout" in k)
    moved = [latency for latency in r.chutes_latencies if latency > 0]
    if moved:
        verdict = (f"{len(moved)} of {len(r.chutes_latencies)} Chutes answers took simulated time "
                   f"(up to {max(moved):.3f} s): loopback I/O was late and the clock jumped "
                   "meanwhile (seen on a busy machine); figures may shift slightly")
    else:
        verdict = "no Chutes answer took simulated time: I/O never moved the clock"
    out.append(f"    clock check: {timeouts} timeouts; {verdict}")
    if r.errors:
        out.append("    client errors: " + ", ".join(f"{k} x{v}" for k, v in r.errors.most_common()))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, metavar="M", default=None,
                        help="simulated minutes of arrivals (default 30; --quick: 6); with "
                             "--trace, the window's length in trace minutes (default: to the end)")
    parser.add_argument("--seed", type=int, default=1, help="workload seed (default 1)")
    parser.add_argument("--rate", type=float, default=None, help="arrivals per simulated second")
    parser.add_argument("--quick", action="store_true", help="a short run (6 simulated minutes)")
    parser.add_argument("--stream-share", type=float, metavar="S", default=0.5,
                        help="share of requests that stream (default 0.5)")
    trace = parser.add_argument_group("replaying a trace (CSV: TIMESTAMP,ContextTokens,GeneratedTokens)")
    trace.add_argument("--trace", metavar="FILE", help="replay FILE instead of the generated workload")
    trace.add_argument("--speed", type=float, metavar="K", default=1.0, help="compress the trace's time K-fold")
    trace.add_argument("--sample", type=float, metavar="P", default=1.0,
                       help="keep this share of rows, chosen by --seed (default 1)")
    trace.add_argument("--start", type=float, metavar="M", default=0.0,
                       help="start the window this many minutes after the first row")
    trace.add_argument("--budget", type=int, metavar="N", default=None,
                       help="the max_tokens every request names (default: none)")
    parser.add_argument("--clients", action="store_true",
                        help="five clients: one heavy (10x the requests), four agent sessions; compares "
                             "the fair share (F) with first come, first served (U)")
    parser.add_argument("--agents", action="store_true",
                        help="the coding-agent sessions workload against the dual-bucket Cerebras "
                             "(bench/agent_sessions.py; --minutes default 10, --seed, --replicas, --backend)")
    parser.add_argument("--sticky", action="store_true",
                        help="with --agents and replicas: each session stays on one replica (default: turns go round)")
    parser.add_argument("--replicas", type=int, default=1, help="trioproxy processes sharing the key (default 1)")
    parser.add_argument("--backend", choices=("memory", "redis"), default="memory",
                        help="their quota ledger; redis starts a redis-server of its own (default memory)")
    defaults = Speeds()
    for name, help_text in (("cerebras-tokens-per-second", "Cerebras's output speed"),
                            ("cerebras-first-token", "Cerebras's time to first token, seconds"),
                            ("chutes-tokens-per-second", "Chutes's output speed"),
                            ("chutes-first-token", "Chutes's time to first token, seconds")):
        default = getattr(defaults, name.replace("-", "_"))
        parser.add_argument(f"--{name}", type=float, default=default, help=f"{help_text} (default {default:g})")
    args = parser.parse_args(argv)
    speeds = Speeds(args.cerebras_tokens_per_second, args.cerebras_first_token,
                    args.chutes_tokens_per_second, args.chutes_first_token)
    if min(speeds.cerebras_tokens_per_second, speeds.chutes_tokens_per_second) <= 0 or min(
            speeds.cerebras_first_token, speeds.chutes_first_token) < 0:
        parser.error("speeds must be positive and times to first token not negative")
    if not 0 <= args.stream_share <= 1:
        parser.error("--stream-share must lie in [0, 1]")
    if args.agents:
        return _agents(args, speeds)
    try:
        workload = _trace_workload(args, parser) if args.trace else _generated_workload(args, parser)
    except llm_trace.TraceError as exc:
        print(f"quota_sim: {exc}", file=sys.stderr)
        return 2
    wall = time.perf_counter()
    with deployed(args) as deployment:
        results = simulate(workload, CLIENT_SETUPS if args.clients else SETUPS, deployment=deployment, speeds=speeds)
    text, passed = report(results, deployment, speeds)
    print(text)
    print(f"\ntotal wall time {time.perf_counter() - wall:.1f} s")
    return 0 if passed else 1


@contextmanager
def deployed(args: argparse.Namespace) -> Iterator[Deployment]:
    """The deployment the arguments ask for, with a redis-server of its own for --backend redis."""
    with ExitStack() as stack:
        redis_url = ""
        if args.backend == "redis":
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="quota-sim-redis-"))
            redis_url = stack.enter_context(running_redis(Path(folder))).url
        yield Deployment(args.replicas, args.backend, redis_url, args.sticky)


def _agents(args: argparse.Namespace, speeds: Speeds) -> int:
    import agent_sessions  # (it builds on this module)

    workload = agent_sessions.AgentWorkload(minutes=args.minutes or 10.0, seed=args.seed)
    wall = time.perf_counter()
    with deployed(args) as deployment:
        results = agent_sessions.simulate(workload, deployment, speeds)
    text, passed = agent_sessions.report(results, deployment)
    print(text)
    print(f"\ntotal wall time {time.perf_counter() - wall:.1f} s")
    return 0 if passed else 1


def _generated_workload(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Workload:
    given = [name for name in ("speed", "sample", "start", "budget")
             if getattr(args, name) != parser.get_default(name)]
    if given:
        parser.error(f"--{given[0]} needs --trace")
    minutes = args.minutes if args.minutes is not None else (6.0 if args.quick else 30.0)
    rate = 2.0 if args.rate is None else args.rate
    if minutes <= 0 or rate <= 0:
        parser.error("--minutes and --rate must be positive")
    return Workload(minutes=minutes, seed=args.seed, arrivals_per_second=rate,
                    stream_share=args.stream_share, clients=CLIENTS if args.clients else ())


def _trace_workload(args: argparse.Namespace, parser: argparse.ArgumentParser) -> TraceWorkload:
    if args.clients:
        parser.error("--clients shapes the generated workload; it does not go with --trace")
    if args.quick or args.rate is not None:
        parser.error("--quick and --rate shape the generated workload; with --trace use "
                     "--minutes, --sample or --speed")
    if args.speed <= 0 or not 0 < args.sample <= 1 or args.start < 0:
        parser.error("--speed must be positive, --sample in (0, 1], --start not negative")
    if (args.minutes is not None and args.minutes <= 0) or (args.budget is not None and args.budget < 1):
        parser.error("--minutes and --budget must be positive")
    selection = llm_trace.select(llm_trace.read_trace(args.trace), start_minute=args.start,
                                 minutes=args.minutes, sample=args.sample, speed=args.speed,
                                 seed=args.seed)
    return TraceWorkload(selection=selection, seed=args.seed, budget=args.budget,
                         stream_share=args.stream_share)


if __name__ == "__main__":
    sys.exit(main())
