"""What routing did for a request is the outcome of its `Routing` (Router.take), which the router
writes from what patience, settlement and the stream relay hand it: whole once the answer is,
and kept as far as it went when the client leaves half-way. Against the emulated providers."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from support.chat import chat
from support.proxies import Providers, proxy_config
from trioproxy.providers.upstream import Deadlines, ProviderClient, Upstream
from trioproxy.quota.cooldown import CooldownTimers
from trioproxy.quota.ledger import QuotaLedger
from trioproxy.routing.request import ChatRequest
from trioproxy.routing.router import Router
from trioproxy.secrets import Sanitizer
from trioproxy.testing.emulator import Faults

WORDS = 18


@asynccontextmanager
async def cerebras_then_chutes(nursery: trio.Nursery, providers: Providers) -> AsyncIterator[Router]:
    """A router over both emulators; Chutes serves Cerebras's model and continues its broken streams."""
    for provider in (providers.cerebras, providers.chutes):
        provider.completion_words = WORDS
    providers.chutes.speaks_as = "cerebras"
    config = proxy_config(providers, chutes={"continuation": "prefill-vllm"})
    clients = [ProviderClient.for_provider(p, 5.0) for p in (config.cerebras, config.chutes)]
    upstreams = [Upstream(p, c, Sanitizer(()), Deadlines(10, 10, 10))
                 for p, c in zip((config.cerebras, config.chutes), clients)]
    ledger = QuotaLedger([config.cerebras, config.chutes])
    try:
        yield Router(upstreams, ledger, CooldownTimers(nursery, ledger), 300, 5, max_continuations=2)
    finally:
        for client in clients:
            await client.aclose()


def text_of(batch: list[dict[str, Any]]) -> str:
    return "".join(choice["delta"].get("content") or "" for chunk in batch for choice in chunk["choices"])


async def test_a_plain_answer_s_outcome_names_its_provider_and_its_usage(
    nursery: trio.Nursery, providers: Providers
) -> None:
    async with cerebras_then_chutes(nursery, providers) as router:
        routing = router.take(ChatRequest(body=chat(), stream=False))
        with trio.fail_after(10):
            document = await routing.complete()
    outcome = routing.outcome
    assert (outcome.provider, outcome.account, outcome.reason) == ("cerebras", "cerebras", "preferred")
    usage = document["usage"]
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert outcome.upstream_seconds > 0
    assert outcome.failed_over == [] and outcome.continuations == []


async def test_a_failed_over_answer_s_outcome_names_who_failed_it(nursery: trio.Nursery, providers: Providers) -> None:
    providers.cerebras.faults = Faults(status=503)
    async with cerebras_then_chutes(nursery, providers) as router:
        routing = router.take(ChatRequest(body=chat(), stream=False))
        with trio.fail_after(10):
            await routing.complete()
    assert (routing.outcome.provider, routing.outcome.failed_over) == ("chutes", ["cerebras"])
    assert routing.outcome.reason.startswith("failover: 503")


async def test_a_continued_stream_s_outcome_has_the_whole_answer_s_tokens_and_the_break(
    nursery: trio.Nursery, providers: Providers
) -> None:
    providers.cerebras.faults = Faults(break_after_events=5, remaining=1)
    async with cerebras_then_chutes(nursery, providers) as router:
        routing = router.take(ChatRequest(body=chat(stream=True), stream=True))
        with trio.fail_after(10):
            async with routing.stream() as relay:
                batches = [batch async for batch in relay.batches()]
    usage = batches[-1][-1]["usage"]  # the answer's one usage block: both providers' parts added up
    outcome = routing.outcome
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert outcome.provider == "chutes" and outcome.reason == "preferred"  # the answer's reason, kept
    assert [name for name, _ in outcome.continuations] == ["cerebras"]


async def test_a_stream_its_client_leaves_after_a_continuation_keeps_the_break(
    nursery: trio.Nursery, providers: Providers
) -> None:
    providers.cerebras.faults = Faults(break_after_events=5, remaining=1)
    providers.chutes.faults = Faults(chunk_delay=0.05)  # the client leaves before the end
    async with cerebras_then_chutes(nursery, providers) as router:
        routing = router.take(ChatRequest(body=chat(stream=True), stream=True))
        with trio.fail_after(10):
            with trio.CancelScope() as leaving:
                async with routing.stream() as relay:
                    async for batch in relay.batches():
                        if providers.chutes.received and text_of(batch):
                            leaving.cancel()  # the continuation's first words arrived: the client goes
    assert leaving.cancelled_caught
    outcome = routing.outcome
    assert outcome.provider == "chutes" and outcome.reason == "preferred"
    assert [name for name, _ in outcome.continuations] == ["cerebras"]
    assert outcome.completion_tokens is None  # no provider reported usage before the client left
