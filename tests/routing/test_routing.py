"""Routing through the proxy: which emulated provider serves a request, and what the client sees.

Every test sends real HTTP to a trioproxy that talks to emulated Cerebras and Chutes over
loopback; the emulators' records (`received`, `received_headers`, `served`) say who did what.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing

from support.chat import (
    CLIENT_KEY,
    MESSAGES,
    PROXY_MODEL,
    WEATHER_TOOL,
    advance,
    assert_openai_error,
    chat,
    client_for,
    health,
    post,
    sized_messages,
    stream,
    stream_text,
    strict_tool,
)
from support.proxies import Providers, Proxy, StartProxy
from trioproxy.config.schema import Adaptation
from trioproxy.testing.emulator import CEREBRAS_MODEL, CHUTES_MODEL, Faults, completion_text, prompt_tokens

# --------------------------------------------------------------------------- helpers


def served(providers: Providers) -> tuple[int, int]:
    return providers.cerebras.served, providers.chutes.served


# --------------------------------------------------------------------------- 1. normal


async def test_normal_request_is_served_by_cerebras_under_its_own_model_id(
    providers: Providers, proxy: Proxy
) -> None:
    """A plain request goes to Cerebras as the first candidate its catalogue lists and comes back as `qwen-3-coder`."""
    async with client_for(proxy) as client:
        response = await post(client, chat())
    assert response.status_code == 200
    document = response.json()
    assert document["model"] == PROXY_MODEL
    assert document["choices"][0]["message"]["content"] == completion_text("cerebras")
    assert served(providers) == (1, 0)
    assert providers.cerebras.received[0]["model"] == CEREBRAS_MODEL
    assert providers.chutes.received == []


async def test_chutes_receives_its_own_model_id(providers: Providers, proxy: Proxy) -> None:
    """When Chutes serves, it is asked for the first candidate its catalogue lists."""
    providers.cerebras.faults = Faults(status=503)
    async with client_for(proxy) as client:
        response = await post(client, chat())
    assert response.status_code == 200
    assert response.json()["model"] == PROXY_MODEL
    assert response.json()["choices"][0]["message"]["content"] == completion_text("chutes")
    assert served(providers) == (0, 1)
    assert providers.chutes.received[0]["model"] == CHUTES_MODEL


# --------------------------------------------------------------------------- 2. proactive limits


async def test_requests_per_minute_spills_to_chutes_then_frees_after_a_minute(
    providers: Providers, start_proxy: StartProxy, mock_clock: trio.testing.MockClock
) -> None:
    """With cerebras rpm=2 the 3rd request is served by Chutes without error; 61 s later Cerebras again."""
    proxy = await start_proxy(cerebras={"requests_per_minute": 2})
    async with client_for(proxy) as client:
        for _ in range(3):
            assert (await post(client, chat())).status_code == 200
        assert served(providers) == (2, 1)
        assert len(providers.cerebras.received) == 2  # the proxy never tried a 3rd time
        await advance(mock_clock, 61)
        response = await post(client, chat())
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == completion_text("cerebras")
    assert served(providers) == (3, 1)


async def test_tokens_per_minute_spills_to_chutes_then_frees_after_a_minute(
    providers: Providers, start_proxy: StartProxy, mock_clock: trio.testing.MockClock
) -> None:
    """A prompt beyond cerebras tpm goes to Chutes; tokens spent fill the minute; 61 s later they are free."""
    proxy = await start_proxy(cerebras={"tokens_per_minute": 1000, "max_completion_tokens_cap": None})
    async with client_for(proxy) as client:
        assert (await post(client, chat(messages=sized_messages(1200)))).status_code == 200
        assert served(providers) == (0, 1)  # larger than the whole limit: never sent to Cerebras
        assert (await post(client, chat(messages=sized_messages(600)))).status_code == 200
        assert served(providers) == (1, 1)
        assert (await post(client, chat(messages=sized_messages(600)))).status_code == 200
        assert served(providers) == (1, 2)  # 600 + 600 > 1000 within the minute
        await advance(mock_clock, 61)
        assert (await post(client, chat(messages=sized_messages(600)))).status_code == 200
    assert served(providers) == (2, 2)
    assert len(providers.cerebras.received) == 2


async def test_tokens_per_day_stays_exhausted_after_a_minute_and_frees_after_a_day(
    providers: Providers, start_proxy: StartProxy, mock_clock: trio.testing.MockClock
) -> None:
    """When cerebras tpd is spent, Chutes serves; still after 61 s; Cerebras again after a day."""
    proxy = await start_proxy(cerebras={"tokens_per_day": 1000, "max_completion_tokens_cap": None})
    body = chat(messages=sized_messages(600))
    async with client_for(proxy) as client:
        assert (await post(client, body)).status_code == 200
        assert (await post(client, body)).status_code == 200
        assert served(providers) == (1, 1)
        await advance(mock_clock, 61)
        assert (await post(client, body)).status_code == 200
        assert served(providers) == (1, 2)
        await advance(mock_clock, 86_400)
        assert (await post(client, body)).status_code == 200
    assert served(providers) == (2, 2)
    assert len(providers.cerebras.received) == 2


# --------------------------------------------------------------------------- 3. reactive 429


async def test_cerebras_429_fails_over_and_cools_down_until_the_period_ends(
    providers: Providers, start_proxy: StartProxy, mock_clock: trio.testing.MockClock
) -> None:
    """A real Cerebras 429 is invisible (Chutes serves), Cerebras is skipped while cooling down, then retried."""
    providers.cerebras.requests_per_minute = 1  # the emulator's own limit, below the proxy's
    proxy = await start_proxy(cooldown_period_ms=120_000)
    async with client_for(proxy) as client:
        first = await post(client, chat())
        second = await post(client, chat())
        assert first.status_code == 200 and second.status_code == 200
        assert second.json()["choices"][0]["message"]["content"] == completion_text("chutes")
        assert len(providers.cerebras.received) == 2
        assert served(providers) == (1, 1)

        third = await post(client, chat())
        assert third.status_code == 200
        assert len(providers.cerebras.received) == 2  # cooling down: not even tried
        assert served(providers) == (1, 2)

        state = (await health(client, proxy))["providers"]["cerebras"]
        assert state["usable"] is False
        assert 0 < state["accounts"]["cerebras"]["cooldown_seconds"] <= 120
        assert "429" in state["accounts"]["cerebras"]["cooldown_reason"]

        await advance(mock_clock, 120)
        state = (await health(client, proxy))["providers"]["cerebras"]
        assert state["usable"] is True and state["accounts"]["cerebras"]["cooldown_seconds"] == 0
        fourth = await post(client, chat())
    assert fourth.status_code == 200
    assert len(providers.cerebras.received) == 3
    assert fourth.json()["choices"][0]["message"]["content"] == completion_text("cerebras")
    assert served(providers) == (2, 2)


async def test_cerebras_capacity_429_is_retried_after_its_retry_after_not_a_quota_cooldown(
    providers: Providers, start_proxy: StartProxy, mock_clock: trio.testing.MockClock
) -> None:
    """Cerebras's `queue_exceeded` 429 (Retry-After: 1) is no quota signal: Cerebras is used again seconds later."""
    providers.cerebras.faults = Faults(queue_exceeded=True, remaining=1)
    proxy = await start_proxy()  # cooldown_period_ms keeps its default of 300 s
    async with client_for(proxy) as client:
        response = await post(client, chat())
        assert response.status_code == 200
        assert served(providers) == (0, 1)
        await advance(mock_clock, 5)
        response = await post(client, chat())
    assert response.status_code == 200
    assert len(providers.cerebras.received) == 2
    assert served(providers) == (1, 1)


# --------------------------------------------------------------------------- 4. failover on faults

FAILOVER_FAULTS = {
    "status_500": Faults(status=500),
    "status_503": Faults(status=503),
    "no_instances": Faults(no_instances=True),
    "reset_before_response": Faults(reset_before_response=True),
    "stall": Faults(stall=True),
}


@pytest.mark.parametrize("stream_mode", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("fault", list(FAILOVER_FAULTS))
async def test_cerebras_failure_before_any_byte_fails_over_to_chutes_invisibly(
    providers: Providers, start_proxy: StartProxy, fault: str, stream_mode: bool
) -> None:
    """5xx, no instances, a reset or a stall past request_timeout_ms at Cerebras: the client gets Chutes' 200."""
    providers.cerebras.faults = attrs.evolve(FAILOVER_FAULTS[fault])
    proxy = await start_proxy(request_timeout_ms=300)
    async with client_for(proxy) as client:
        if stream_mode:
            result = await stream(client, chat())
            assert result.status == 200, result.body
            assert result.events[-1] == "[DONE]"
            assert not any(isinstance(e, dict) and "error" in e for e in result.events)
            assert stream_text(result.events) == completion_text("chutes")
        else:
            response = await post(client, chat())
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["message"]["content"] == completion_text("chutes")
            assert response.json()["model"] == PROXY_MODEL
    assert len(providers.cerebras.received) == 1
    assert served(providers) == (0, 1)


# --------------------------------------------------------------------------- 5. stream failures


async def test_a_reset_after_the_role_announcement_fails_over_invisibly(providers: Providers, proxy: Proxy) -> None:
    """The role-only first chunk is no content: a reset after it is hidden, and Chutes serves."""
    providers.cerebras.faults = Faults(reset_mid_stream=True)
    async with client_for(proxy) as client:
        result = await stream(client, chat())
    assert not any(isinstance(e, dict) and "error" in e for e in result.events)
    assert stream_text(result.events) == completion_text("chutes")
    assert served(providers) == (0, 1)


async def test_reset_mid_stream_ends_with_an_error_event_and_done(providers: Providers, start_proxy: StartProxy) -> None:
    """Cerebras resets after content reached the client and no continuation is allowed: first
    chunk, SSE error event, [DONE]; no hang."""
    providers.cerebras.faults = Faults(break_after_events=2)
    proxy = await start_proxy(max_continuations=0)
    async with client_for(proxy) as client:
        result = await stream(client, chat())
    assert result.status == 200
    assert result.headers["content-type"].startswith("text/event-stream")
    assert len(result.events) >= 3, result.events
    first, error_event, done = result.events[0], result.events[-2], result.events[-1]
    assert first["model"] == PROXY_MODEL and first["choices"][0]["delta"]["role"] == "assistant"
    assert_openai_error(error_event)
    assert done == "[DONE]"
    assert providers.chutes.received == []  # too late to fail over: the client has bytes already


async def test_error_as_first_event_fails_over_to_chutes_invisibly(providers: Providers, proxy: Proxy) -> None:
    """A Cerebras stream whose first event is an error never reaches the client: Chutes' stream does."""
    providers.cerebras.faults = Faults(error_first_event=True)
    async with client_for(proxy) as client:
        result = await stream(client, chat())
    assert result.status == 200
    assert not any(isinstance(e, dict) and "error" in e for e in result.events)
    assert stream_text(result.events) == completion_text("chutes")
    assert result.events[-1] == "[DONE]"
    assert len(providers.cerebras.received) == 1
    assert served(providers) == (0, 1)


# --------------------------------------------------------------------------- 6. both down

BOTH_DOWN = {
    "status_503": (Faults(status=503), 503),
    "status_500": (Faults(status=500), 502),
    "reset": (Faults(reset_before_response=True), 502),
    "stall": (Faults(stall=True), 504),
}


async def send(client: httpx.AsyncClient, body: dict[str, Any], stream_mode: bool) -> tuple[int, httpx.Headers, bytes]:
    """Status, headers and whole body of a request sent plain or as a stream."""
    if stream_mode:
        result = await stream(client, body)
        return result.status, result.headers, result.body
    response = await post(client, body)
    return response.status_code, response.headers, response.content


@pytest.mark.parametrize("stream_mode", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("case", list(BOTH_DOWN))
async def test_both_providers_down_gives_an_openai_error(
    providers: Providers, start_proxy: StartProxy, case: str, stream_mode: bool
) -> None:
    """When both fail, the client gets `{"error": {...}}` with 502/503/504 as JSON, never SSE."""
    faults, status = BOTH_DOWN[case]
    providers.cerebras.faults, providers.chutes.faults = attrs.evolve(faults), attrs.evolve(faults)
    proxy = await start_proxy(request_timeout_ms=300)
    async with client_for(proxy) as client:
        code, headers, raw = await send(client, chat(), stream_mode)
    assert code == status, raw
    assert headers["content-type"].startswith("application/json")
    assert_openai_error(json.loads(raw))
    assert len(providers.cerebras.received) == 1 and len(providers.chutes.received) == 1


@pytest.mark.parametrize("stream_mode", [False, True], ids=["plain", "stream"])
async def test_both_out_of_proxy_quota_gives_429_with_retry_after(
    providers: Providers, start_proxy: StartProxy, stream_mode: bool
) -> None:
    """Both providers' configured rpm spent: 429 in OpenAI's shape with a Retry-After, nothing sent upstream."""
    proxy = await start_proxy(cerebras={"requests_per_minute": 1}, chutes={"requests_per_minute": 1})
    async with client_for(proxy) as client:
        assert (await post(client, chat())).status_code == 200
        assert (await post(client, chat())).status_code == 200
        code, headers, raw = await send(client, chat(), stream_mode)
    assert code == 429
    assert headers["content-type"].startswith("application/json")
    assert 1 <= int(headers["retry-after"]) <= 60
    assert assert_openai_error(json.loads(raw))["type"] == "rate_limit_error"
    assert served(providers) == (1, 1)
    assert len(providers.cerebras.received) == 1 and len(providers.chutes.received) == 1


async def test_both_answering_429_gives_429_with_retry_after(providers: Providers, start_proxy: StartProxy) -> None:
    """Cerebras and Chutes both answer 429: the client gets a 429 that says when to retry."""
    providers.cerebras.faults = Faults(queue_exceeded=True)  # 429 with Retry-After: 1
    providers.chutes.faults = Faults(queue_exceeded=True)  # FastAPI-shaped 429, no headers
    proxy = await start_proxy()
    async with client_for(proxy) as client:
        response = await post(client, chat())
    assert response.status_code == 429
    assert assert_openai_error(response.json())["type"] == "rate_limit_error"
    assert int(response.headers["retry-after"]) >= 1
    assert len(providers.cerebras.received) == 1 and len(providers.chutes.received) == 1


# --------------------------------------------------------------------------- 7. Cerebras adaptation

ADAPTED_FIELDS = {
    "parallel_tool_calls_false": {"parallel_tool_calls": False, "tools": [WEATHER_TOOL]},
    "store": {"store": True},
    "top_k": {"top_k": 20},
    "min_p": {"min_p": 0.05},
}


@pytest.mark.parametrize("case", list(ADAPTED_FIELDS))
async def test_cerebras_only_fields_are_dropped_for_cerebras(providers: Providers, proxy: Proxy, case: str) -> None:
    """Fields Cerebras refuses are removed from what Cerebras receives, and Cerebras serves."""
    extra = ADAPTED_FIELDS[case]
    async with client_for(proxy) as client:
        response = await post(client, chat(temperature=0.2, **extra))
    assert response.status_code == 200, response.text
    assert served(providers) == (1, 0)
    received = providers.cerebras.received[0]
    dropped = next(iter(extra))
    assert dropped not in received
    assert received["temperature"] == 0.2
    assert received["messages"] == MESSAGES


async def test_strict_tools_are_stripped_for_cerebras_only(providers: Providers, proxy: Proxy) -> None:
    """`strict: true` in a tool is stripped for Cerebras (which serves the tool call); the rest stays."""
    async with client_for(proxy) as client:
        response = await post(client, chat(tools=[strict_tool()], tool_choice="auto", parallel_tool_calls=True))
    assert response.status_code == 200, response.text
    call = response.json()["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert served(providers) == (1, 0)
    received = providers.cerebras.received[0]
    assert received["tools"] == [WEATHER_TOOL]
    assert received["tool_choice"] == "auto"
    assert received["parallel_tool_calls"] is True  # only `false` is refused by Cerebras


async def test_chutes_receives_cerebras_only_fields_unchanged(providers: Providers, proxy: Proxy) -> None:
    """When Chutes serves, it gets store/top_k/min_p/parallel_tool_calls/strict exactly as the client sent them."""
    providers.cerebras.faults = Faults(status=500)
    body = chat(tools=[strict_tool()], parallel_tool_calls=False, store=True, top_k=20, min_p=0.05)
    async with client_for(proxy) as client:
        response = await post(client, body)
    assert response.status_code == 200, response.text
    assert served(providers) == (0, 1)
    assert "store" not in providers.cerebras.received[0]  # the adapted copy went to Cerebras
    assert providers.chutes.received[0] == {**body, "model": CHUTES_MODEL}


@pytest.mark.parametrize(
    "tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}], ids=["required", "object"]
)
async def test_tool_choice_cerebras_cannot_honour_goes_to_chutes(
    providers: Providers, proxy: Proxy, tool_choice: Any
) -> None:
    """tool_choice "required" or a named function skips Cerebras; Chutes serves it unchanged."""
    async with client_for(proxy) as client:
        response = await post(client, chat(tools=[WEATHER_TOOL], tool_choice=tool_choice))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert providers.cerebras.received == []
    assert served(providers) == (0, 1)
    assert providers.chutes.received[0]["tool_choice"] == tool_choice


async def test_cerebras_wrong_api_format_fails_over_with_the_original_field(
    providers: Providers, start_proxy: StartProxy
) -> None:
    """With adaptation off, Cerebras's 400 wrong_api_format sends the request to Chutes, `store` intact; no cooldown."""
    proxy = await start_proxy(cerebras={"adaptation": Adaptation()})
    async with client_for(proxy) as client:
        response = await post(client, chat(store=True))
        assert response.status_code == 200, response.text
        assert providers.cerebras.received[0]["store"] is True
        assert providers.chutes.received[0]["store"] is True
        assert served(providers) == (0, 1)
        again = await post(client, chat())
    assert again.status_code == 200
    assert served(providers) == (1, 1)  # a 400 is not a rate limit: Cerebras stays in use


async def test_context_length_exceeded_fails_over_to_chutes(providers: Providers, proxy: Proxy) -> None:
    """A prompt beyond Cerebras's context window is served by Chutes; Cerebras stays in use for small ones."""
    cap = proxy.config.cerebras.max_completion_tokens_cap or 0
    providers.cerebras.context_window = cap + 100  # Cerebras counts prompt plus completion budget
    async with client_for(proxy) as client:
        response = await post(client, chat(messages=sized_messages(150)))
        assert response.status_code == 200, response.text
        assert len(providers.cerebras.received) == 1
        assert served(providers) == (0, 1)
        small = await post(client, chat())
    assert small.status_code == 200
    assert served(providers) == (1, 1)


# --------------------------------------------------------------------------- 8. pass-through


@pytest.mark.parametrize("stream_mode", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("target", ["cerebras", "chutes"])
async def test_unknown_fields_pass_through_and_client_key_is_not_forwarded(
    providers: Providers, proxy: Proxy, target: str, stream_mode: bool
) -> None:
    """Fields the proxy does not know reach the provider unchanged, with the provider's key, not the client's."""
    if target == "chutes":
        providers.cerebras.faults = Faults(status=503)
    body = chat(
        my_custom_field={"a": 1},
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        functions=[WEATHER_TOOL["function"]],
        function_call="auto",
        stream_options={"include_usage": True},
        temperature=0.3,
        stream=stream_mode,
    )
    async with client_for(proxy) as client:
        if stream_mode:
            assert (await stream(client, body)).status == 200
        else:
            assert (await post(client, body)).status_code == 200
    emulated = getattr(providers, target)
    model = CEREBRAS_MODEL if target == "cerebras" else CHUTES_MODEL
    assert emulated.served == 1
    # Cerebras also gets the completion-token cap, since the client named no budget.
    cap = {"max_completion_tokens": proxy.config.cerebras.max_completion_tokens_cap} if target == "cerebras" else {}
    assert emulated.received[-1] == {**body, "model": model, **cap}
    headers = emulated.received_headers[-1]
    assert headers["authorization"] == f"Bearer {emulated.api_key}"
    assert not any(CLIENT_KEY in value for value in headers.values())


# --------------------------------------------------------------------------- 9. stream rewrite, usage


@pytest.mark.parametrize("target", ["cerebras", "chutes"])
async def test_stream_without_include_usage_has_no_usage_and_model_rewritten(
    providers: Providers, proxy: Proxy, target: str
) -> None:
    """Without include_usage no chunk carries `usage` or lacks choices; every chunk says `qwen-3-coder`."""
    if target == "chutes":
        providers.cerebras.faults = Faults(status=503)
    async with client_for(proxy) as client:
        result = await stream(client, chat())
    assert result.status == 200
    assert result.events[-1] == "[DONE]"
    chunks = result.events[:-1]
    assert chunks and all(isinstance(chunk, dict) for chunk in chunks)
    assert all(chunk["model"] == PROXY_MODEL for chunk in chunks)
    assert all("usage" not in chunk for chunk in chunks)
    assert all(chunk.get("choices") for chunk in chunks)
    assert stream_text(chunks) == completion_text(target)
    assert getattr(providers, target).served == 1


@pytest.mark.parametrize("target", ["cerebras", "chutes"])
async def test_stream_with_include_usage_delivers_usage(providers: Providers, proxy: Proxy, target: str) -> None:
    """With include_usage the client receives the provider's real usage figures, model rewritten."""
    if target == "chutes":
        providers.cerebras.faults = Faults(status=503)
    async with client_for(proxy) as client:
        result = await stream(client, chat(stream_options={"include_usage": True}))
    assert result.status == 200
    chunks = result.events[:-1]
    assert all(chunk["model"] == PROXY_MODEL for chunk in chunks)
    usages = [chunk["usage"] for chunk in chunks if chunk.get("usage")]
    words = len(completion_text(target).split())
    expected = prompt_tokens({"messages": MESSAGES})
    details = {"prompt_tokens_details": {"cached_tokens": 0}} if target == "cerebras" else {}
    assert usages == [{"prompt_tokens": expected, "completion_tokens": words, "total_tokens": expected + words, **details}]
    assert getattr(providers, target).served == 1


# --------------------------------------------------------------------------- 10. concurrency


async def test_fifty_concurrent_requests_never_exceed_cerebras_rpm(
    providers: Providers, start_proxy: StartProxy, mock_clock: trio.testing.MockClock
) -> None:
    """50 requests at once with rpm 10 on both sides: all 200, Cerebras exactly 10 (no 429), Chutes 40."""
    providers.cerebras.requests_per_minute = 10
    proxy = await start_proxy(cerebras={"requests_per_minute": 10})
    statuses: list[int] = []

    async def one(client: httpx.AsyncClient) -> None:
        statuses.append((await post(client, chat())).status_code)

    async with client_for(proxy) as client:
        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(one, client)
    assert statuses == [200] * 50
    assert served(providers) == (10, 40)
    assert len(providers.cerebras.received) == 10  # received - served == 0: no 429 from Cerebras
