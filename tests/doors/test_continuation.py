"""A stream that breaks off after content reached the client is finished by the next provider.

Every door, streamed, through its official SDK: whatever event a provider's stream breaks
after, the client gets exactly the answer it would have had without the break, and no error.
Emulated Chutes answers as Cerebras does (`speaks_as`): one model served by two providers.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

from trioproxy.testing.emulator import Faults

from support.fault_server import ROLE, send_then_close, start_fault_server, tiny_chunk
from support.proxies import Providers, Proxy, StartProxy
from support.raw_http import SSE_HEAD
from support.door_answers import DOORS, MODEL, door_answer

TEXT_WORDS = 18  # with the role chunk and the finish: a 20-event answer
TEXT_EVENTS = 20
TOOL_EVENTS = 10  # role, two calls of a header and three argument pieces each, finish


async def same_model(providers: Providers, start_proxy: StartProxy, continuation: str = "prefill-vllm",
                     **settings: Any) -> Proxy:
    """A proxy whose Chutes serves Cerebras's model and continues in the way named."""
    for provider in (providers.cerebras, providers.chutes):
        provider.completion_words = TEXT_WORDS
        provider.parallel_tool_calls_by_default = True  # the Messages door does not say
    providers.chutes.speaks_as = "cerebras"
    return await start_proxy(chutes={"continuation": continuation}, **settings)


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("cut", range(1, TEXT_EVENTS + 1))
async def test_a_text_answer_broken_after_any_event_is_whole(
    providers: Providers, start_proxy: StartProxy, door: str, cut: int
) -> None:
    proxy = await same_model(providers, start_proxy)
    unbroken = await door_answer(door, proxy)
    providers.cerebras.faults = Faults(break_after_events=cut, remaining=1)

    answer = await door_answer(door, proxy)

    assert answer.error is None
    assert answer.without_ids() == unbroken.without_ids()
    assert len(answer.text.split()) == TEXT_WORDS


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("cut", range(1, TOOL_EVENTS + 1))
async def test_an_answer_with_two_tool_calls_broken_after_any_event_is_whole(
    providers: Providers, start_proxy: StartProxy, door: str, cut: int
) -> None:
    proxy = await same_model(providers, start_proxy)
    unbroken = await door_answer(door, proxy, tools=True)
    providers.cerebras.faults = Faults(break_after_events=cut, remaining=1)

    answer = await door_answer(door, proxy, tools=True)

    assert answer.error is None
    assert answer.without_ids() == unbroken.without_ids()
    assert len(answer.calls) == 2 and len({call_id for call_id, _, _ in answer.calls}) == 2


def test_the_tool_answer_has_the_events_the_parametrisation_assumes() -> None:
    """The emulator's stream for the tool request above: role, 2 x (header + 3 pieces), finish."""
    from trioproxy.testing.emulator.answers import answer
    from trioproxy.testing.emulator.bodies import Meta, stream_action

    provider = providers_for_count()
    body = {"model": provider.model, "messages": [{"role": "user", "content": "x"}], "stream": True,
            "tools": [{"type": "function", "function": {"name": name, "parameters": {
                "type": "object", "properties": {key: {"type": "string"}}, "required": [key]}}}
                for name, key in (("read_file", "path"), ("list_files", "dir"))]}
    composed = answer(provider, body, None, 1)
    stream = stream_action(Meta("chutes", "c", 0, provider.model), composed, {}, body, Faults())
    assert len(stream.events) == TOOL_EVENTS


def providers_for_count() -> Any:
    from trioproxy.testing.emulator import chutes

    return chutes(parallel_tool_calls_by_default=True)


@pytest.mark.parametrize("door", DOORS)
async def test_a_break_inside_a_tool_calls_arguments_is_invisible(
    providers: Providers, start_proxy: StartProxy, door: str
) -> None:
    proxy = await same_model(providers, start_proxy)
    unbroken = await door_answer(door, proxy, tools=True)
    providers.cerebras.faults = Faults(break_after_argument_bytes=30, remaining=1)  # inside the second call

    answer = await door_answer(door, proxy, tools=True)

    assert answer.error is None and answer.without_ids() == unbroken.without_ids()


@pytest.mark.parametrize("continuation", ["prefix", "restart"])
@pytest.mark.parametrize("door", DOORS)
async def test_the_other_ways_to_continue(
    providers: Providers, start_proxy: StartProxy, door: str, continuation: str
) -> None:
    proxy = await same_model(providers, start_proxy, continuation)
    unbroken = await door_answer(door, proxy)
    providers.cerebras.faults = Faults(break_after_events=7, remaining=1)

    answer = await door_answer(door, proxy)

    assert answer.error is None and answer.without_ids() == unbroken.without_ids()
    sent = providers.chutes.received[-1]
    if continuation == "prefix":
        assert sent["messages"][-1]["prefix"] is True and sent["messages"][-1]["role"] == "assistant"
    else:
        assert sent["messages"][-1]["role"] == "user"


async def test_the_continuation_asks_vllm_to_continue_the_partial_answer(
    providers: Providers, start_proxy: StartProxy
) -> None:
    proxy = await same_model(providers, start_proxy)
    providers.cerebras.faults = Faults(break_after_events=4, remaining=1)

    await door_answer("chat", proxy, max_tokens=100)

    sent = providers.chutes.received[-1]
    assert sent["continue_final_message"] is True and sent["add_generation_prompt"] is False
    assert sent["messages"][-1] == {"role": "assistant", "content": "Hello from emulated"}
    assert sent["max_tokens"] == 100 - 3  # the three words sent are spent


async def test_the_log_and_metrics_name_the_continuation(
    providers: Providers, start_proxy: StartProxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await same_model(providers, start_proxy)
    providers.cerebras.faults = Faults(break_after_events=4, remaining=1)

    with caplog.at_level("INFO", logger="trioproxy.request"):
        await door_answer("chat", proxy)
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(proxy.base_url.removesuffix("/v1") + "/metrics")).text

    line = next(r.getMessage() for r in caplog.records if r.name == "trioproxy.request")
    assert "provider=chutes" in line and "continued_from=cerebras" in line
    assert 'trioproxy_continuations_total{from_provider="cerebras",reason="connection"} 1.0' in metrics


# --------------------------------------------------------------------------- bounds and bad input


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("chutes_faults", [Faults(break_after_events=3), Faults(refuse_prefill=True)],
                         ids=["cuts-every-continuation", "refuses-the-prefill"])
async def test_a_continuation_that_fails_ends_in_the_doors_error(
    providers: Providers, start_proxy: StartProxy, door: str, chutes_faults: Faults
) -> None:
    """In bounded time, with each provider asked (and its quota booked) exactly once."""
    proxy = await same_model(providers, start_proxy)
    providers.cerebras.faults = Faults(break_after_events=4)
    providers.chutes.faults = chutes_faults

    with trio.fail_after(10):
        answer = await door_answer(door, proxy)

    assert answer.error is not None
    assert (len(providers.cerebras.received), len(providers.chutes.received)) == (1, 1)
    await assert_booked_once_each(proxy, {"cerebras": 1, "chutes": 1})


@pytest.mark.parametrize("door", DOORS)
async def test_a_restart_that_mints_its_own_id_for_a_sent_call_goes_on_under_the_sent_id(
    providers: Providers, start_proxy: StartProxy, door: str
) -> None:
    """The first call went out with Cerebras's id; Chutes's new answer has its own id for the
    same call (as every provider mints its own): the client keeps the id it holds."""
    proxy = await same_model(providers, start_proxy, "restart")
    unbroken = await door_answer(door, proxy, tools=True)  # Cerebras's call ids now differ from Chutes's
    providers.cerebras.faults = Faults(break_after_argument_bytes=30, remaining=1)  # inside the second call

    with trio.fail_after(10):
        answer = await door_answer(door, proxy, tools=True)

    assert answer.error is None and answer.without_ids() == unbroken.without_ids()
    (first_id, _, _), (second_id, _, _) = answer.calls
    assert "call_2" in first_id and "call_1_1" in second_id  # Cerebras's 2nd answer's, Chutes's 1st's


@pytest.mark.parametrize("door", DOORS)
async def test_a_restart_that_calls_another_tool_where_one_was_sent_ends_in_the_doors_error(
    nursery: trio.Nursery, providers: Providers, start_proxy: StartProxy, door: str
) -> None:
    """Chutes's new answer calls another tool first than the one Cerebras sent."""
    other = tiny_chunk({"tool_calls": [{"index": 0, "id": "call_other", "type": "function",
                                        "function": {"name": "other_tool", "arguments": "{}"}}]})
    chutes = await start_fault_server(nursery, lambda s: send_then_close(
        s, SSE_HEAD, ROLE, other, tiny_chunk({}, "tool_calls"), b"data: [DONE]\n\n"))
    providers.cerebras.parallel_tool_calls_by_default = True
    proxy = await start_proxy(chutes={"continuation": "restart", "base_url": chutes.url})
    providers.cerebras.faults = Faults(break_after_argument_bytes=30, remaining=1)  # inside the second call

    with trio.fail_after(10):
        answer = await door_answer(door, proxy, tools=True)

    assert answer.error is not None and "continu" in answer.error
    assert chutes.requests == 1  # the restart was asked for, and refused for its other call


@pytest.mark.parametrize("door", DOORS)
async def test_no_continuation_beyond_the_answers_budget(providers: Providers, start_proxy: StartProxy, door: str) -> None:
    proxy = await same_model(providers, start_proxy)
    providers.cerebras.faults = Faults(break_after_events=6, remaining=1)  # five words went out

    answer = await door_answer(door, proxy, max_tokens=5)

    assert answer.error is not None
    assert providers.chutes.received == []


async def test_max_continuations_bounds_the_switches(providers: Providers, start_proxy: StartProxy) -> None:
    proxy = await same_model(providers, start_proxy, max_continuations=0)
    providers.cerebras.faults = Faults(break_after_events=4, remaining=1)

    answer = await door_answer("chat", proxy)

    assert answer.error is not None and providers.chutes.received == []


async def test_a_client_leaving_during_the_switch_stops_it(providers: Providers, start_proxy: StartProxy) -> None:
    """Chutes is slow to start its continuation and the client leaves meanwhile: the proxy drops
    Chutes at once and accounts the request as the client's leaving."""
    proxy = await same_model(providers, start_proxy)
    providers.cerebras.faults = Faults(break_after_events=4, remaining=1)
    providers.chutes.faults = Faults(latency=30)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "stream": True}
    base = proxy.base_url.removesuffix("/v1")
    async with httpx.AsyncClient(timeout=10) as http:
        with trio.fail_after(10):
            async with http.stream("POST", proxy.base_url + "/chat/completions", json=body) as response:
                async for line in response.aiter_lines():
                    if "Hello" in line:
                        break
                while not providers.chutes.received:  # the switch has begun: now the client leaves
                    await trio.sleep(0.01)
        with trio.fail_after(5):
            while 'status="499"' not in (await http.get(base + "/metrics")).text:
                await trio.sleep(0.05)
    assert providers.chutes.served == 0


async def assert_booked_once_each(proxy: Proxy, calls: dict[str, int]) -> None:
    """The ledger counted each provider call once: the requests booked this minute per provider."""
    async with httpx.AsyncClient() as http:
        status = (await http.get(proxy.base_url + "/status")).json()
    booked = {provider["name"]: sum(account["rpm"]["used"] for account in provider["accounts"].values())
              for provider in status["providers"]}
    assert booked == calls
