"""Cerebras's two token buckets (uncached prompt tokens, total tokens) and the prompt-cache
prediction that books a conversation's turn by its new tail: the prefix memory, both ledgers,
the emulated Cerebras's cache, and the proxy end to end."""

import json
import logging
import os
import re
import subprocess
import sys
from typing import Any

import pytest

import attrs
import trio
import trio.testing

from support.chat import client_for, post, stream
from support.emulator_http import FakeClock, start, stream_events
from support.proxies import Providers, StartProxy
from support.redis_ledgers import Clock, replica
from support.redis_ledgers import cerebras as redis_cerebras
from trioproxy.config.schema import Config, ProviderConfig
from trioproxy.quota.contract import Refusal, Reservation
from trioproxy.quota.ledger import QuotaLedger
from trioproxy.quota.redis.ledger import SharedReservation
from trioproxy.routing.prompt_cache import OUTBOX_ENTRIES, PromptMemory, PromptPrefix, Remembered
from trioproxy.quota.redis.prompt_stream import RedisPromptStream
from trioproxy.routing.prompt_exchange import PromptExchange
from trioproxy.routing.settlement import Reported, Settlement
from trioproxy.cli.status_table import render_table
from trioproxy.routing.tokens import PromptEstimator, estimate_prompt_tokens
from trioproxy.testing import emulator
from trioproxy.testing.redis_server import RedisServer

PROXY_MODEL = "qwen-3-coder"
SYSTEM = {"role": "system", "content": "You are a coding agent. " * 200}


def turn(count: int, size: int = 400) -> list[dict[str, Any]]:
    """The messages of a conversation after `count` exchanges: each adds a tool result's worth
    of text and an answer, the earlier ones unchanged."""
    messages: list[dict[str, Any]] = [SYSTEM]
    for number in range(count):
        messages.append({"role": "user", "content": f"result {number}: " + "y" * size})
        messages.append({"role": "assistant", "content": f"answer {number}"})
    return messages[:-1]  # the conversation ends with the user's turn


def prefix(messages: list[dict[str, Any]], **body: Any) -> PromptPrefix:
    return PromptPrefix.of({"messages": messages, **body})[0]


# --------------------------------------------------------------------------- prefix memory


def test_a_conversation_is_recognised_by_the_prompt_it_continues() -> None:
    clock = FakeClock()
    memory = PromptMemory(keys=2, ttl=300, block=100, entries=64, clock=clock)
    memory.remember(0, prefix(turn(3)), 5_000)
    assert memory.cached(prefix(turn(4)), 6_000) == [4_900, 0]  # key 1's cache, less a block; key 2 saw nothing
    assert memory.cached(prefix(turn(3)), 5_000) == [4_900, 0]
    other = [{"role": "system", "content": "another agent"}, {"role": "user", "content": "hi"}]
    assert memory.cached(prefix(other), 6_000) == [0, 0]
    with_tools = prefix(turn(4), tools=[{"type": "function", "function": {"name": "f"}}])
    assert memory.cached(with_tools, 6_000) == [0, 0]  # other tools: another prompt from the first token


def test_conversations_of_one_agent_share_its_system_prompt() -> None:
    memory = PromptMemory(keys=1, ttl=300, block=0, entries=64, clock=FakeClock())
    memory.remember(0, prefix(turn(3)), 1_000)
    shared = prefix(turn(3)).chars[1] / prefix(turn(3)).chars[-1]
    fresh = [SYSTEM, {"role": "user", "content": "a new task"}]
    assert memory.cached(prefix(fresh), 900) == [int(1_000 * shared)]


def test_the_prediction_ends_with_the_cache_life_and_never_exceeds_the_prompt() -> None:
    clock = FakeClock()
    memory = PromptMemory(keys=1, ttl=300, block=100, entries=64, clock=clock)
    memory.remember(0, prefix(turn(3)), 5_000)
    assert memory.cached(prefix(turn(3)), 2_000) == [2_000]  # a count below the remembered one caps it
    clock.now += 299
    assert memory.cached(prefix(turn(4)), 6_000) == [4_900]
    clock.now += 2
    assert memory.cached(prefix(turn(4)), 6_000) == [0]
    assert memory.size() == 0


def test_the_table_is_bounded_and_the_oldest_leave_first() -> None:
    clock = FakeClock()
    memory = PromptMemory(keys=1, ttl=300, block=0, entries=8, clock=clock)
    for number in range(1_000):
        memory.remember(0, prefix([{"role": "user", "content": f"task {number}"}, {"role": "user", "content": "go"}]), 100)
        clock.now += 0.01
    assert memory.size() == 8
    newest = prefix([{"role": "user", "content": "task 999"}, {"role": "user", "content": "go"}])
    oldest = prefix([{"role": "user", "content": "task 0"}, {"role": "user", "content": "go"}])
    assert memory.cached(newest, 100) == [100]
    assert memory.cached(oldest, 100) == [0]


def test_a_body_without_messages_or_with_odd_ones_has_a_prefix_all_the_same() -> None:
    assert len(prefix([]).digests) == 1 and len(PromptPrefix.of({})[0].digests) == 1
    assert PromptPrefix.of({"messages": "not a list"})[1] is None
    odd, dumped = PromptPrefix.of({"messages": [1, None, "x"]})
    assert len(odd.digests) == 4 and dumped == b'[1,null,"x"]'


def test_the_estimate_from_the_prefix_dump_is_the_estimate_from_the_body() -> None:
    body = {"messages": [*turn(5), {"role": "user", "content": "日本語のテキスト \u2028 \"quoted\""}],
            "tools": [{"type": "function", "function": {"name": "f"}}]}
    _, dumped = PromptPrefix.of(body)
    assert estimate_prompt_tokens(body, dumped) == estimate_prompt_tokens(body)


# --------------------------------------------------------------------------- the memory ledger


def dual(**limits: Any) -> ProviderConfig:
    defaults = {"requests_per_minute": None, "tokens_per_minute": 100_000, "tokens_per_day": None,
                "uncached_tokens_per_minute": 10_000, "api_key": "csk-one"}
    return attrs.evolve(Config().cerebras, **{**defaults, **limits})


def used(ledger: Any, account: str) -> tuple[int, int]:
    state = ledger.snapshot(account)
    return state["tpm"]["used"], state["utpm"]["used"]


async def test_both_buckets_are_booked_at_admission_and_settled_from_usage() -> None:
    ledger = QuotaLedger([dual()], clock=lambda: 0.0)
    reservation = await ledger.reserve("cerebras", 5_000, floor=4_000, uncached=[1_000])
    assert isinstance(reservation, Reservation) and reservation.uncached == 1_000
    assert used(ledger, "cerebras") == (5_000, 1_000)
    await ledger.settle(reservation, 4_500, 300)
    assert used(ledger, "cerebras") == (4_500, 300)


async def test_without_a_prediction_the_whole_prompt_is_booked_uncached() -> None:
    ledger = QuotaLedger([dual()], clock=lambda: 0.0)
    reservation = await ledger.reserve("cerebras", 5_000, floor=4_000)
    assert isinstance(reservation, Reservation)
    assert used(ledger, "cerebras") == (5_000, 4_000)


async def test_the_uncached_bucket_refuses_alone() -> None:
    ledger = QuotaLedger([dual(uncached_tokens_per_minute=4_000)], clock=lambda: 0.0)
    assert isinstance(await ledger.reserve("cerebras", 5_000, floor=4_000, uncached=[3_000]), Reservation)
    refused = await ledger.reserve("cerebras", 5_000, floor=4_000, uncached=[3_000])
    assert isinstance(refused, Refusal) and refused.reason == "utpm"
    assert refused.retry_at == 30.0  # 2,000 tokens short of a bucket regaining 4,000 a minute
    assert await ledger.refusal("cerebras", 5_000, 1, 3_000) == refused
    assert isinstance(await ledger.reserve("cerebras", 5_000, floor=4_000, uncached=[500]), Reservation)


async def test_a_prediction_outside_the_prompt_books_within_it() -> None:
    ledger = QuotaLedger([dual()], clock=lambda: 0.0)
    more = await ledger.reserve("cerebras", 5_000, floor=4_000, uncached=[9_000])
    less = await ledger.reserve("cerebras", 5_000, floor=4_000, uncached=[-50])
    assert isinstance(more, Reservation) and isinstance(less, Reservation)
    assert (more.uncached, less.uncached) == (4_000, 0)
    assert used(ledger, "cerebras") == (10_000, 4_000)


async def test_a_conversation_returns_to_the_key_whose_cache_holds_it_unless_that_key_lacks_quota() -> None:
    ledger = QuotaLedger([dual(api_keys=("csk-two",), uncached_tokens_per_minute=5_000)], clock=lambda: 0.0)
    first = await ledger.reserve("cerebras", 2_000, floor=1_000)  # headroom alone: the first key
    assert isinstance(first, Reservation) and first.account == "cerebras#1"
    # The second key now has more headroom, but the first holds the conversation's prefix.
    again = await ledger.reserve("cerebras", 4_000, floor=3_000, uncached=[500, 3_000])
    assert isinstance(again, Reservation) and again.account == "cerebras#1"
    await ledger.reserve("cerebras", 4_000, floor=4_000, uncached=[3_500, 4_000])  # key 1's uncached bucket is spent
    moved = await ledger.reserve("cerebras", 4_000, floor=3_000, uncached=[500, 3_000])
    assert isinstance(moved, Reservation) and moved.account == "cerebras#2"


async def usage_document(prompt: int, completion: int, details: Any) -> dict[str, Any]:
    return {"usage": {"prompt_tokens": prompt, "completion_tokens": completion, "prompt_tokens_details": details}}


async def test_usage_with_cached_tokens_beyond_the_prompt_or_nonsense_never_over_books() -> None:
    ledger = QuotaLedger([dual()], clock=lambda: 0.0)
    cases = [({"cached_tokens": 10**12}, 0), ({"cached_tokens": -5}, 1_000), ({"cached_tokens": "many"}, 1_000),
             ({"cached_tokens": True}, 1_000), ("not an object", 1_000), (None, 1_000), ({"cached_tokens": 400}, 600)]
    for details, uncached in cases:
        reservation = await ledger.reserve("cerebras", 3_000, floor=1_000)
        assert isinstance(reservation, Reservation)
        settlement = Settlement(ledger, PromptEstimator(), reservation, 1_000)
        assert await settlement.from_usage(await usage_document(1_000, 50, details))
        assert reservation.uncached == uncached and reservation.tokens == 1_050
        assert settlement.reported == Reported(1_000, 50, 1_000 - uncached)
    assert used(ledger, "cerebras") == (7 * 1_050, 600 + 5 * 1_000)


# --------------------------------------------------------------------------- the Redis ledger


async def test_the_shared_ledger_keeps_both_buckets_and_the_cache_affinity(nursery: trio.Nursery, redis: RedisServer) -> None:
    clock = Clock()
    provider = redis_cerebras(tokens_per_minute=100_000, uncached_tokens_per_minute=5_000, api_keys=("csk-two",))
    one, two = [await replica(nursery, redis.url, [provider], clock, name=name) for name in ("r1", "r2")]
    first = await one.reserve("cerebras", 4_000, floor=3_000, uncached=[1_000, 3_000])
    assert isinstance(first, Reservation) and first.account == "cerebras#1" and first.uncached == 1_000
    refused = await two.reserve("cerebras", 7_000, floor=6_000, uncached=[4_500, 5_500])
    assert isinstance(refused, Refusal) and refused.reason == "utpm"
    moved = await two.reserve("cerebras", 6_000, floor=5_000, uncached=[4_500, 2_000])
    assert isinstance(moved, Reservation) and moved.account == "cerebras#2"
    await one.settle(first, 3_500, 10**9)  # a figure beyond the total counts as the total
    await two.settle(moved, 5_200, 700)
    await one.store.drained()
    await two.store.drained()
    await one.refresh()
    assert used(one, "cerebras#1") == (3_500, 3_500)
    assert used(one, "cerebras#2") == (5_200, 700)
    assert await one.refusal("cerebras", 100, 1, 4_300) is None  # key 2 has 4,300 left, key 1 1,500
    assert isinstance(await one.refusal("cerebras", 100, 1, 4_301), Refusal)


# --------------------------------------------------------------------------- the memory shared through Redis


def test_digests_are_the_same_in_every_process() -> None:
    """Processes with other hash seeds compute the same digests (a memory shared between them)."""
    program = ("import json, sys; from trioproxy.routing.prompt_cache import PromptPrefix; "
               "print(json.dumps(PromptPrefix.of(json.loads(sys.stdin.read()))[0].digests))")
    body = json.dumps({"messages": turn(3), "tools": [{"type": "function", "function": {"name": "f"}}]})
    seen = [json.loads(subprocess.run([sys.executable, "-c", program], input=body, capture_output=True, text=True,
                                      check=True, env={**os.environ, "PYTHONHASHSEED": seed}, timeout=60).stdout)
            for seed in ("1", "2")]
    assert seen[0] == seen[1] == list(PromptPrefix.of(json.loads(body))[0].digests)
    assert len(set(seen[0])) == len(seen[0])


def test_the_digests_of_a_prompt_continue_those_of_its_prefix() -> None:
    shorter, longer = (PromptPrefix.of({"messages": turn(n)})[0] for n in (3, 4))
    assert longer.digests[: len(shorter.digests)] == shorter.digests
    assert PromptPrefix.of({"messages": turn(3, size=401)})[0].digests[2:] != shorter.digests[2:]


def test_what_another_process_tells_is_kept_for_its_time_left_at_most_the_cache_life() -> None:
    clock = FakeClock()
    memory = PromptMemory(keys=2, ttl=300, block=100, entries=64, clock=clock)
    digest = PromptPrefix.of({"messages": turn(3)})[0].digests[-1]
    memory.learn(Remembered(1, digest, 5_000, seconds_left=10_000))  # beyond the cache's life
    memory.learn(Remembered(2, digest, 5_000, seconds_left=60))  # no such key
    memory.learn(Remembered(0, digest, -5, seconds_left=60))  # nonsense tokens
    longer = PromptPrefix.of({"messages": turn(4)})[0]
    assert memory.cached(longer, 6_000) == [0, 4_900]
    clock.now += 300
    assert memory.cached(longer, 6_000) == [0, 0]
    assert memory.take_remembered() == []  # not shared: nothing kept to publish


def test_a_learned_prefix_expires_even_behind_one_that_lives_longer() -> None:
    clock = FakeClock()
    memory = PromptMemory(keys=1, ttl=300, block=0, entries=64, clock=clock)
    memory.remember(0, PromptPrefix.of({"messages": [{"role": "user", "content": "another"}]})[0], 1_000)  # lives 300 s
    learned = PromptPrefix.of({"messages": turn(3)})[0]
    memory.learn(Remembered(0, learned.digests[-1], 5_000, 10))  # another process's, 10 s left
    assert memory.cached(learned, 6_000) == [5_000]
    clock.now += 20
    assert memory.cached(learned, 6_000) == [0]


def test_what_waits_for_publication_is_bounded() -> None:
    memory = PromptMemory(keys=1, ttl=300, block=0, entries=64, clock=FakeClock())
    memory.share()
    for number in range(OUTBOX_ENTRIES + 10):
        memory.remember(0, PromptPrefix.of({"messages": [{"role": "user", "content": str(number)}]})[0], 10)
    taken = memory.take_remembered()
    assert len(taken) == OUTBOX_ENTRIES and {entry.seconds_left for entry in taken} == {300}
    assert memory.take_remembered() == [] and memory.size() == 64


async def _two_replicas_sharing(nursery: trio.Nursery, redis: RedisServer) -> tuple[FakeClock, list[PromptMemory], list[PromptExchange]]:
    clock = FakeClock()
    provider = redis_cerebras(tokens_per_minute=100_000, uncached_tokens_per_minute=50_000)
    memories, exchanges = [], []
    for name in ("r1", "r2"):
        ledger = await replica(nursery, redis.url, [provider], Clock(), name=name)
        memory = PromptMemory(keys=1, ttl=300, block=100, entries=64, clock=clock)
        memories.append(memory)
        exchanges.append(PromptExchange(RedisPromptStream(ledger.store, "test:"), [("cerebras", memory)]))
    for exchange in exchanges:  # the first round only finds where the stream ends
        await exchange.exchange()
    return clock, memories, exchanges


async def test_a_turn_on_another_replica_is_booked_by_its_tail_once_the_replicas_exchanged(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    clock, (one, two), (first, second) = await _two_replicas_sharing(nursery, redis)
    one.remember(0, PromptPrefix.of({"messages": turn(3)})[0], 5_000)
    following = PromptPrefix.of({"messages": turn(4)})[0]
    await second.exchange()
    assert two.cached(following, 6_000) == [0]  # not yet published: booked as uncached, safely
    clock.now += 100
    await first.exchange()
    await second.exchange()
    assert two.cached(following, 6_000) == [4_900]
    await first.exchange()  # its own message is not learned again, nor sent back by the other (2 entries:
    # the whole prompt and the system prompt other conversations of the agent share)
    assert one.size() == two.size() == 2 and one.take_remembered() == two.take_remembered() == []
    clock.now += 200  # the cache's life since the first process sent it
    assert two.cached(following, 6_000) == [0]


async def test_a_message_of_another_shape_is_left_out_with_a_warning(
    nursery: trio.Nursery, redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    import coredis

    _, (one, two), (first, second) = await _two_replicas_sharing(nursery, redis)
    async with coredis.Redis.from_url(redis.url, decode_responses=True) as client:
        for garbage in ("not json", '[["cerebras", "zero", 1, 2, 3]]', '{"e": 1}'):
            await client.xadd("test:{prompts}:sent", {"r": "other", "e": garbage})
    one.remember(0, PromptPrefix.of({"messages": turn(3)})[0], 5_000)
    await first.exchange()
    with caplog.at_level(logging.WARNING, "trioproxy.prompt_exchange"):
        await second.exchange()
    assert two.cached(PromptPrefix.of({"messages": turn(4)})[0], 6_000) == [4_900]
    warned = {r.getMessage() for r in caplog.records if "prompt prefixes were left out" in r.getMessage()}
    assert len(warned) == 3, warned


async def test_a_message_read_late_counts_the_time_it_waited(nursery: trio.Nursery, redis: RedisServer) -> None:
    """A replica that reads a backlog (after a Redis outage) counts each message's age: what the
    provider's cache has dropped since is not predicted as cached."""
    import coredis

    clock, (_, two), (_, second) = await _two_replicas_sharing(nursery, redis)
    sent = PromptPrefix.of({"messages": turn(3)})[0].digests[-1]
    following = PromptPrefix.of({"messages": turn(4)})[0]
    async with coredis.Redis.from_url(redis.url, decode_responses=True) as client:
        now_ms = int((await client.time()).timestamp() * 1000)
        await client.xadd("test:{prompts}:sent", {"r": "other", "e": json.dumps([["cerebras", 0, sent, 5_000, 300_000]])},
                          identifier=f"{now_ms - 250_000}-0")  # published 250 s ago, with 300 s left then
    await second.exchange()
    assert two.cached(following, 6_000) == [4_900]
    clock.now += 60  # 310 s since it was published
    assert two.cached(following, 6_000) == [0]


async def test_a_proxy_on_the_redis_ledger_tells_the_others_what_it_sent(
    providers: Providers, start_proxy: StartProxy, redis: RedisServer
) -> None:
    """The proxy starts the exchange on its own on the Redis ledger: a turn it served reaches the
    stream (digests and counts, never the prompt's text), which expires with the cache's life."""
    import coredis

    proxy = await start_proxy(quota_backend="redis", redis_url=redis.url, redis_timeout_ms=10_000, redis_key_prefix="e2e:")
    async with client_for(proxy) as client:
        assert (await post(client, {"model": PROXY_MODEL, "messages": turn(3), "max_tokens": 20})).status_code == 200
    async with coredis.Redis.from_url(redis.url, decode_responses=True) as client:
        with trio.fail_after(10):
            while not (sent := await client.xrange("e2e:{prompts}:sent", "-", "+")):
                await trio.sleep(0.05)
        assert 0 < await client.ttl("e2e:{prompts}:sent") <= 300
    entries = json.loads(sent[0].field_values["e"])
    assert {tuple(entry[:2]) for entry in entries} == {(entries[0][0], 0)} and entries[0][0].startswith("cerebras")
    assert {entry[2] for entry in entries} <= set(PromptPrefix.of({"messages": turn(3)})[0].digests)
    assert "result 0" not in sent[0].field_values["e"]


# --------------------------------------------------------------------------- the emulated Cerebras


def long_body(provider: emulator.EmulatedProvider, count: int, **extra: Any) -> dict[str, Any]:
    return {"model": provider.model, "messages": turn(count), "max_tokens": 20, **extra}


async def test_the_emulated_cache_reports_what_a_prompt_repeats_until_its_life_ends(nursery: trio.Nursery) -> None:
    clock = FakeClock()
    provider = emulator.cerebras(clock=clock)
    provider.prompt_cache.ttl, provider.prompt_cache.block_tokens = 300, 128
    async with await start(nursery, provider) as client:
        first = (await client.post("/chat/completions", json=long_body(provider, 3))).json()["usage"]
        second = (await client.post("/chat/completions", json=long_body(provider, 4))).json()["usage"]
        events = await stream_events(client, long_body(provider, 5, stream=True))
        streamed = [e for e in events if isinstance(e, dict) and e.get("usage")][0]["usage"]
        clock.now += 301
        late = (await client.post("/chat/completions", json=long_body(provider, 5))).json()["usage"]
    assert first["prompt_tokens_details"] == {"cached_tokens": 0}
    cached = second["prompt_tokens_details"]["cached_tokens"]
    assert cached % 128 == 0 and first["prompt_tokens"] - 128 < cached <= first["prompt_tokens"]
    assert second["prompt_tokens"] - 128 < streamed["prompt_tokens_details"]["cached_tokens"] <= second["prompt_tokens"]
    assert late["prompt_tokens_details"] == {"cached_tokens": 0}
    assert [u.cached_tokens for u in provider.usage_log] == [0, cached, streamed["prompt_tokens_details"]["cached_tokens"], 0]


async def test_the_emulated_uncached_bucket_refuses_with_its_own_message(nursery: trio.Nursery) -> None:
    clock = FakeClock()
    provider = emulator.cerebras(clock=clock, uncached_tokens_per_minute=2_000, tokens_per_minute=1_000_000)
    async with await start(nursery, provider) as client:
        assert (await client.post("/chat/completions", json=long_body(provider, 3))).status_code == 200
        again = await client.post("/chat/completions", json=long_body(provider, 4))  # mostly cached: fits
        assert again.status_code == 200
        fresh = {**long_body(provider, 3), "messages": [{"role": "user", "content": "z" * 6_000}]}
        refused = await client.post("/chat/completions", json=fresh)
    assert refused.status_code == 429
    assert "Uncached tokens per minute" in refused.json()["message"] and refused.headers["retry-after"]
    assert [r.limit for r in provider.quota_refusals] == ["utpm"]


# --------------------------------------------------------------------------- end to end


async def converse(proxy: Any, turns: range, streamed: bool = False) -> None:
    async with client_for(proxy) as client:
        for count in turns:
            body = {"model": PROXY_MODEL, "messages": turn(count), "max_tokens": 50}
            if streamed:
                assert (await stream(client, body)).status == 200
            else:
                response = await post(client, body)
                assert response.status_code == 200, response.text


async def test_a_conversation_is_booked_by_its_new_tail_and_stays_on_cerebras(
    providers: Providers, start_proxy: StartProxy, mock_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The uncached bucket takes about one turn's prompt: with the cache in the estimate every
    turn fits it; Cerebras's own usage settles both buckets."""
    providers.cerebras.uncached_tokens_per_minute = 2_500
    providers.cerebras.tokens_per_minute = 1_000_000
    proxy = await start_proxy(cerebras={"uncached_tokens_per_minute": 2_500, "tokens_per_minute": 1_000_000,
                                        "prompt_cache_block_tokens": 128})
    caplog.set_level(logging.INFO, "trioproxy")
    await converse(proxy, range(1, 5))
    await converse(proxy, range(5, 8), streamed=True)
    assert providers.cerebras.served == 7 and providers.chutes.served == 0
    assert not providers.cerebras.quota_refusals
    async with client_for(proxy) as client:
        status = (await client.get(proxy.base_url.removesuffix("/v1") + "/healthz")).json()
        table = render_table((await client.get("/status")).json())
    state = status["providers"]["cerebras"]["accounts"]["cerebras"]
    log = providers.cerebras.usage_log
    uncached = sum(u.prompt_tokens - u.cached_tokens for u in log)
    assert sum(u.cached_tokens for u in log) > uncached  # the cache did serve most of it
    assert state["utpm"] == {"used": uncached, "limit": 2_500}  # settled to Cerebras's figures (no time passed)
    header = table.splitlines()[0].split()
    assert header[header.index("tpm") + 1] == "utpm" and f"{uncached}/2500" in table
    logged = [int(m.group(1)) for r in caplog.records if (m := re.search(r" cached_tokens=(\d+)", r.getMessage()))]
    assert logged == [u.cached_tokens for u in log if u.cached_tokens]


async def test_booking_every_prompt_token_as_uncached_sends_the_same_conversation_elsewhere(
    providers: Providers, start_proxy: StartProxy, mock_clock: trio.testing.MockClock
) -> None:
    """The control for the test above: without the prediction the second turn does not fit."""
    providers.cerebras.uncached_tokens_per_minute = 2_500
    proxy = await start_proxy(cerebras={"uncached_tokens_per_minute": 2_500, "tokens_per_minute": 1_000_000,
                                        "prompt_cache_seconds": 0})
    await converse(proxy, range(1, 5))
    assert providers.cerebras.served == 1 and providers.chutes.served == 3
    assert not providers.cerebras.quota_refusals


async def test_ledgers_of_one_replica_name_never_share_a_lease_id(nursery: trio.Nursery, redis: RedisServer) -> None:
    """A reload's new ledger (or several in one process) counts leases from 1 again: its ids
    must not meet those of leases still out, or settling one would end the other's."""
    provider = redis_cerebras(tokens_per_minute=100_000, uncached_tokens_per_minute=50_000)
    one, two = [await replica(nursery, redis.url, [provider], Clock(), name="same") for _ in range(2)]
    first, second = await one.reserve("cerebras", 1_000, floor=500), await two.reserve("cerebras", 1_000, floor=500)
    assert isinstance(first, SharedReservation) and isinstance(second, SharedReservation)
    assert first.lease != second.lease


def test_the_status_table_has_an_uncached_column_only_where_a_limit_is_set() -> None:
    def status(utpm_limit: int | None) -> dict[str, Any]:
        window = {"used": 5, "limit": 10}
        state = {"rpm": window, "tpm": window, "utpm": {"used": 3, "limit": utpm_limit}, "rpd": window,
                 "tpd": window, "cooldown_seconds": 0, "cooldown_reason": ""}
        provider = {"name": "cerebras", "model": "m", "accounts": {"cerebras": state}, "usable": True,
                    "served_since_start": {"requests": 1}, "last_error": None}
        return {"model": "qwen-3-coder", "providers": [provider]}

    assert "utpm" not in render_table(status(None)).splitlines()[0].split()
    assert "utpm" in render_table(status(40)).splitlines()[0].split() and "3/40" in render_table(status(40))
