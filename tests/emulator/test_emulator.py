"""Tests of the emulated Cerebras and Chutes servers (real sockets on 127.0.0.1)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from support.emulator_http import FakeClock, post, start, stream_events
from trioproxy.testing.emulator import (
    CEREBRAS_MODEL,
    CEREBRAS_MODELS,
    CHUTES_MODELS,
    DEFAULT_RESERVED_COMPLETION,
    EmulatedProvider,
    Faults,
    cerebras,
    chutes,
    completion_text,
    prompt_tokens,
)

MESSAGES = [{"role": "user", "content": "Say hello."}]
READ_FILE_TOOL = {
    "type": "function",
    "function": {
        "name": "read_file",
        "description": "Read a file",
        "parameters": {"type": "object",
                       "properties": {"path": {"type": "string"}, "mode": {"type": "string"}},
                       "required": ["path", "mode"]},
    },
}


def chat_body(provider: EmulatedProvider, **extra: Any) -> dict[str, Any]:
    return {"model": provider.model, "messages": MESSAGES, **extra}


# --------------------------------------------------------------------------- models, auth


async def test_models_lists_the_model_and_needs_auth(nursery: trio.Nursery) -> None:
    provider = chutes()
    async with await start(nursery, provider) as client:
        listing = (await client.get("/models")).json()
        unauthorised = await client.get("/models", headers={"authorization": "Bearer nope"})
        missing = await client.get("/nowhere")
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == list(CHUTES_MODELS)  # today's catalogue
    assert "supported_features" in listing["data"][0]
    assert unauthorised.status_code == 401 and "detail" in unauthorised.json()
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}
    assert provider.received == []  # /models is not a chat request


async def test_cerebras_wrong_key_gives_flat_401(nursery: trio.Nursery) -> None:
    provider = cerebras()
    async with await start(nursery, provider) as client:
        response = await client.post("/chat/completions", json=chat_body(provider),
                                     headers={"authorization": "Bearer csk-wrong"})
        models = (await client.get("/models")).json()
    assert response.status_code == 401
    assert response.json() == {"message": "Wrong API Key", "type": "invalid_request_error",
                               "param": "api_key", "code": "wrong_api_key"}
    assert [m["id"] for m in models["data"]] == list(CEREBRAS_MODELS)
    assert provider.received_headers[0]["authorization"] == "Bearer csk-wrong"
    assert provider.served == 0


# --------------------------------------------------------------------------- completions


async def test_cerebras_completion_shape_and_usage(nursery: trio.Nursery) -> None:
    provider = cerebras()
    async with await start(nursery, provider) as client:
        response = await post(client, chat_body(provider))
    body = response.json()
    text = completion_text("cerebras")
    prompt = max(1, len(json.dumps(MESSAGES, separators=(",", ":"))) // 4)
    assert response.status_code == 200
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == CEREBRAS_MODEL
    assert body["choices"] == [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": text}}]
    assert text.startswith("Hello from emulated cerebras.")
    assert body["usage"] == {"prompt_tokens": prompt, "completion_tokens": len(text.split()),
                             "total_tokens": prompt + len(text.split()),
                             "prompt_tokens_details": {"cached_tokens": 0}}  # a short prompt: no whole block
    assert "time_info" in body and "system_fingerprint" in body
    assert provider.served == 1 and provider.received == [chat_body(provider)]


async def test_max_tokens_truncates_with_finish_reason_length(nursery: trio.Nursery) -> None:
    provider = chutes()
    async with await start(nursery, provider) as client:
        body = (await post(client, chat_body(provider, max_tokens=3))).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["message"]["content"] == "Hello from emulated"
    assert body["usage"]["completion_tokens"] == 3
    assert "time_info" not in body


async def test_cerebras_stream_has_usage_on_final_chunk(nursery: trio.Nursery) -> None:
    provider = cerebras()
    async with await start(nursery, provider) as client:
        events = await stream_events(client, chat_body(provider, stream=True))
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == completion_text("cerebras")
    assert len(chunks) >= 5
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == len(text.split())
    assert all("usage" not in c for c in chunks[:-1])


async def test_chutes_stream_usage_only_with_include_usage(nursery: trio.Nursery) -> None:
    provider = chutes()
    async with await start(nursery, provider) as client:
        plain = await stream_events(client, chat_body(provider, stream=True))
        counted = await stream_events(client, chat_body(
            provider, stream=True, stream_options={"include_usage": True}))
    assert plain[-1] == "[DONE]" and counted[-1] == "[DONE]"
    assert all("usage" not in c for c in plain[:-1])
    assert plain[-2]["choices"][0]["finish_reason"] == "stop"
    usage_chunk = counted[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["total_tokens"] == (usage_chunk["usage"]["prompt_tokens"]
                                                    + usage_chunk["usage"]["completion_tokens"])
    assert counted[-3]["choices"][0]["finish_reason"] == "stop"
    assert provider.served == 2


async def test_tool_call_stream_reassembles_into_json(nursery: trio.Nursery) -> None:
    provider = cerebras()
    body = chat_body(provider, stream=True, tools=[READ_FILE_TOOL], tool_choice="auto")
    async with await start(nursery, provider) as client:
        events = await stream_events(client, body)
    deltas = [c["choices"][0]["delta"] for c in events[:-1] if c["choices"]]
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0]["id"].startswith("call_") and calls[0]["type"] == "function"
    assert calls[0]["function"] == {"name": "read_file", "arguments": ""}
    argument_pieces = [c["function"]["arguments"] for c in calls[1:]]
    assert len(argument_pieces) >= 2
    assert all(set(c) == {"index", "function"} for c in calls[1:])
    assert json.loads("".join(argument_pieces)) == {"path": "emulated", "mode": "emulated"}
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"


async def test_tool_result_gets_text_and_non_stream_tool_call(nursery: trio.Nursery) -> None:
    provider = chutes()
    after_tool = MESSAGES + [{"role": "tool", "tool_call_id": "call_1", "content": "x"}]
    async with await start(nursery, provider) as client:
        called = (await post(client, chat_body(provider, tools=[READ_FILE_TOOL]))).json()
        answered = (await post(client, {"model": provider.model, "messages": after_tool,
                                        "tools": [READ_FILE_TOOL]})).json()
    message = called["choices"][0]["message"]
    assert message["content"] is None and called["choices"][0]["finish_reason"] == "tool_calls"
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {
        "path": "emulated", "mode": "emulated"}
    assert answered["choices"][0]["message"]["content"] == completion_text("chutes")
    assert prompt_tokens(chat_body(provider, tools=[READ_FILE_TOOL])) > prompt_tokens(
        chat_body(provider))


async def test_legacy_function_call(nursery: trio.Nursery) -> None:
    provider = chutes()
    function = {"name": "get_time", "parameters": {"type": "object", "required": ["zone"]}}
    async with await start(nursery, provider) as client:
        body = (await post(client, chat_body(provider, functions=[function]))).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "function_call"
    assert choice["message"]["function_call"]["name"] == "get_time"
    assert json.loads(choice["message"]["function_call"]["arguments"]) == {"zone": "emulated"}


# --------------------------------------------------------------------------- validation


STRICT_TOOL = {"type": "function",
                      "function": {**READ_FILE_TOOL["function"], "strict": True}}
REJECTED_BY_CEREBRAS = [
    ("store", {"store": False}),
    ("top_k", {"top_k": 20}),
    ("min_p", {"min_p": 0.05}),
    ("parallel_tool_calls", {"tools": [READ_FILE_TOOL], "parallel_tool_calls": False}),
    ("tools", {"tools": [STRICT_TOOL]}),
    ("tool_choice", {"tools": [READ_FILE_TOOL], "tool_choice": "required"}),
    ("tool_choice", {"tools": [READ_FILE_TOOL],
                     "tool_choice": {"type": "function", "function": {"name": "read_file"}}}),
]


@pytest.mark.parametrize(("param", "extra"), REJECTED_BY_CEREBRAS)
async def test_cerebras_rejects_and_chutes_accepts(nursery: trio.Nursery, param: str,
                                                   extra: dict[str, Any]) -> None:
    strict, lenient = cerebras(requests_per_day=10), chutes()
    async with await start(nursery, strict) as c_client, \
            await start(nursery, lenient) as h_client:
        rejected = await post(c_client, chat_body(strict, **extra))
        accepted = await post(h_client, chat_body(lenient, **extra))
    body = rejected.json()
    assert rejected.status_code == 400
    assert body["code"] == "wrong_api_format" and body["type"] == "invalid_request_error"
    assert body["param"] == param and param in body["message"]
    assert rejected.headers["x-ratelimit-remaining-requests-day"] == "10"  # no quota used
    assert accepted.status_code == 200
    assert strict.received == [chat_body(strict, **extra)]


async def test_cerebras_rejects_lone_surrogate_and_bad_json(nursery: trio.Nursery) -> None:
    provider = cerebras()
    raw = ('{"model": "gpt-oss-120b", "messages": '
           '[{"role": "user", "content": "broken \\ud800 text"}]}')
    async with await start(nursery, provider) as client:
        surrogate = await client.post("/chat/completions", content=raw,
                                      headers={"content-type": "application/json"})
        not_json = await client.post("/chat/completions", content=b"{nope")
    assert surrogate.status_code == 400 and surrogate.json()["code"] == "wrong_api_format"
    assert not_json.status_code == 400 and "message" in not_json.json()
    assert len(provider.received) == 2 and provider.served == 0


async def test_cerebras_context_length_exceeded(nursery: trio.Nursery) -> None:
    provider = cerebras(context_window=100)
    body = chat_body(provider, max_completion_tokens=200)
    async with await start(nursery, provider) as client:
        response = await post(client, body)
        fits = await post(client, chat_body(provider, max_completion_tokens=50))
    length = prompt_tokens(body) + 200
    assert response.status_code == 400
    assert response.json() == {
        "message": "Please reduce the length of the messages or completion. Current length is "
                   f"{length} while limit is 100",
        "type": "invalid_request_error", "param": "messages",
        "code": "context_length_exceeded"}
    assert fits.status_code == 200


async def test_unknown_model_is_404_and_a_retired_one_503_on_cerebras(nursery: trio.Nursery) -> None:
    """Cerebras answers a retired id with 503 (as it did for qwen-3-coder-480b), an id it never
    had with 404; Chutes answers both with its 404."""
    provider, other = cerebras(), chutes()
    async with await start(nursery, provider) as client:
        unknown = await post(client, {"model": "no-such-model", "messages": MESSAGES})
        retired = await post(client, {"model": "qwen-3-coder-480b", "messages": MESSAGES})
    async with await start(nursery, other) as client:
        gone = await post(client, {"model": "Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8", "messages": MESSAGES})
    assert unknown.status_code == 404 and unknown.json()["code"] == "model_not_found"
    assert retired.status_code == 503 and "qwen-3-coder-480b" in retired.json()["message"]
    assert gone.status_code == 404 and gone.json() == {"detail": "model not found: Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8"}
    assert provider.served == other.served == 0


# --------------------------------------------------------------------------- limits


async def test_cerebras_rpm_limit_with_fake_clock(nursery: trio.Nursery) -> None:
    clock = FakeClock()
    provider = cerebras(requests_per_minute=2, clock=clock)
    async with await start(nursery, provider) as client:
        first = [await post(client, chat_body(provider)) for _ in range(2)]
        limited = await post(client, chat_body(provider))
        clock.now += 10  # 2/min refills one request in 30 s: still short
        still = await post(client, chat_body(provider))
        clock.now += 20
        refilled = await post(client, chat_body(provider))
    assert [r.status_code for r in first] == [200, 200]
    assert limited.status_code == 429
    assert limited.json() == {
        "message": "Requests per minute limit exceeded - too many requests sent.",
        "type": "too_many_requests_error", "param": "quota", "code": "request_quota_exceeded"}
    assert limited.headers["retry-after"] == "30"
    assert still.status_code == 429 and still.headers["retry-after"] == "20"
    assert refilled.status_code == 200
    assert provider.served == 3 and len(provider.received) == 5


async def test_cerebras_tpm_reserves_max_tokens(nursery: trio.Nursery) -> None:
    clock = FakeClock()
    provider = cerebras(tokens_per_minute=6000, clock=clock)
    prompt = prompt_tokens(chat_body(provider))
    async with await start(nursery, provider) as client:
        big = await post(client, chat_body(provider, max_tokens=6000))
        small = await post(client, chat_body(provider, max_tokens=100))
        default = await post(client, chat_body(provider))  # reserves 8192 > 6000
    assert big.status_code == 429
    assert big.json()["code"] == "token_quota_exceeded"
    assert big.json()["message"].startswith("Tokens per minute limit exceeded")
    assert int(big.headers["retry-after"]) >= 1
    assert small.status_code == 200
    used = small.json()["usage"]["total_tokens"]
    assert small.headers["x-ratelimit-remaining-tokens-minute"] == str(6000 - used)
    assert default.status_code == 429
    assert DEFAULT_RESERVED_COMPLETION + prompt > 6000


async def test_stream_headers_show_the_reservation(nursery: trio.Nursery) -> None:
    provider = cerebras(tokens_per_minute=100000, clock=FakeClock())
    prompt = prompt_tokens(chat_body(provider))
    async with await start(nursery, provider) as client:
        async with client.stream("POST", "/chat/completions",
                                 json=chat_body(provider, stream=True, max_tokens=1000)) as r:
            remaining = r.headers["x-ratelimit-remaining-tokens-minute"]
            await r.aread()
        after = await post(client, chat_body(provider, max_tokens=1000))
    assert remaining == str(100000 - prompt - 1000)
    assert int(after.headers["x-ratelimit-remaining-tokens-minute"]) > int(remaining)


async def test_cerebras_rate_limit_headers_decrease(nursery: trio.Nursery) -> None:
    clock = FakeClock()
    provider = cerebras(requests_per_day=100, tokens_per_minute=50000, clock=clock)
    async with await start(nursery, provider) as client:
        responses = []
        for _ in range(3):
            responses.append(await post(client, chat_body(provider, max_tokens=100)))
        chutes_provider = chutes()
        async with await start(nursery, chutes_provider) as other:
            plain = await post(other, chat_body(chutes_provider))
    days = [int(r.headers["x-ratelimit-remaining-requests-day"]) for r in responses]
    tokens = [int(r.headers["x-ratelimit-remaining-tokens-minute"]) for r in responses]
    assert days == [99, 98, 97]
    assert tokens[0] > tokens[1] > tokens[2]
    for response in responses:
        assert response.headers["x-ratelimit-limit-requests-day"] == "100"
        assert response.headers["x-ratelimit-limit-tokens-minute"] == "50000"
        float(response.headers["x-ratelimit-reset-requests-day"])
        float(response.headers["x-ratelimit-reset-tokens-minute"])
        assert "x-ratelimit-limit-requests-minute" not in response.headers
    assert not any(name.startswith("x-ratelimit") for name in plain.headers)


async def test_cerebras_daily_tokens_reset_after_a_day(nursery: trio.Nursery) -> None:
    clock = FakeClock()
    provider = cerebras(tokens_per_day=20, clock=clock)  # prompt 10, reply 5
    async with await start(nursery, provider) as client:
        first = await post(client, chat_body(provider, max_tokens=5))
        exhausted = await post(client, chat_body(provider, max_tokens=5))
        clock.now += 86400
        next_day = await post(client, chat_body(provider, max_tokens=5))
    assert first.status_code == 200
    assert exhausted.status_code == 429
    assert exhausted.json()["message"] == ("Tokens per day limit exceeded - "
                                           "too many tokens processed.")
    assert exhausted.headers["retry-after"] == "86400"
    assert next_day.status_code == 200


async def test_day_can_be_placed_and_preloaded(nursery: trio.Nursery) -> None:
    """day_started_at puts the boundary where a simulation wants it; day_tokens_used makes
    tokens/day bind before it; the 429 is recorded and names the time to the boundary."""
    clock = FakeClock(now=1000.0)
    provider = cerebras(tokens_per_day=1000, requests_per_day=50, clock=clock,
                        day_started_at=1000.0 + 600 - 86400, day_tokens_used=995)
    async with await start(nursery, provider) as client:
        refused = await post(client, chat_body(provider, max_tokens=5))  # prompt 10 > 5 left
        clock.now += 599
        still = await post(client, chat_body(provider, max_tokens=5))
        clock.now += 1
        next_day = await post(client, chat_body(provider, max_tokens=5))
    assert refused.status_code == 429 and refused.headers["retry-after"] == "600"
    assert float(refused.headers["x-ratelimit-reset-requests-day"]) == 600.0
    assert still.status_code == 429 and still.headers["retry-after"] == "1"
    assert next_day.status_code == 200
    assert next_day.headers["x-ratelimit-remaining-requests-day"] == "49"
    assert [(r.at, r.limit, r.available, r.request) for r in provider.quota_refusals] == [
        (1000.0, "tpd", 5, 0), (1599.0, "tpd", 5, 1)]
    assert provider.quota_refusals[0].prompt_tokens == prompt_tokens(chat_body(provider))
    assert [u.at for u in provider.usage_log] == [1600.0]
    used = next_day.json()["usage"]["total_tokens"]
    assert provider.levels() == {"rpm": None, "tpm": None, "utpm": None, "rpd": 49, "tpd": 1000 - used}


async def test_completion_length_chunking_and_generation_time(
        nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    """completion_words sets the length (a cap still truncates), words_per_chunk groups a
    stream's words, and with tokens_per_second the reservation stays taken while the model
    generates: a request arriving meanwhile sees less tokens/minute left."""
    provider = cerebras(tokens_per_minute=6000, tokens_per_second=100.0,
                        completion_words=lambda body: 400 if body.get("stream") else 30,
                        words_per_chunk=50)
    prompt = prompt_tokens(chat_body(provider))
    async with await start(nursery, provider) as client:
        started = trio.current_time()
        events: list[Any] = []
        remaining: list[int] = []

        async def streamed() -> None:
            events.extend(await stream_events(client, chat_body(provider, stream=True,
                                                                max_tokens=1000)))

        async with trio.open_nursery() as inner:
            inner.start_soon(streamed)
            await trio.sleep(1.0)  # the stream is generating 400 tokens for 4 s
            during = await post(client, chat_body(provider, max_tokens=2000))
            remaining.append(int(during.headers["x-ratelimit-remaining-tokens-minute"]))
        elapsed = trio.current_time() - started
        capped = (await post(client, chat_body(provider, max_tokens=7))).json()
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert len(text.split()) == 400 and events[-2]["usage"]["completion_tokens"] == 400
    assert len(events) == 1 + 8 + 1 + 1  # role, 8 chunks of 50 words, final, [DONE]
    assert elapsed == pytest.approx(4.0)  # 400 tokens at 100 per second; nothing else waits
    # The stream's reservation (prompt + 1000) was still taken when `during` settled, 1.3 s
    # (130 tokens of refill) later; settled at once it would have left 6000 - 40 - 40.
    assert remaining[0] == 6000 - (prompt + 1000) + 130 - (prompt + 30)
    assert during.json()["usage"]["completion_tokens"] == 30
    assert capped["usage"]["completion_tokens"] == 7
    assert capped["choices"][0]["finish_reason"] == "length"
    assert [u.completion_tokens for u in provider.usage_log] == [30, 400, 7]
    assert [round(u.at - u.admitted_at, 6) for u in provider.usage_log] == [0.3, 4.0, 0.07]
    assert provider.served == 3


async def test_chutes_rpm_limit(nursery: trio.Nursery) -> None:
    provider = chutes(requests_per_minute=1, clock=FakeClock())
    async with await start(nursery, provider) as client:
        ok = await post(client, chat_body(provider))
        limited = await post(client, chat_body(provider))
    assert ok.status_code == 200 and limited.status_code == 429
    assert limited.json() == {"detail": "Infrastructure is at maximum capacity, try again later"}
    assert "retry-after" not in limited.headers


# --------------------------------------------------------------------------- faults


async def test_status_fault_uses_provider_shape(nursery: trio.Nursery) -> None:
    strict, lenient = cerebras(requests_per_day=5), chutes()
    strict.faults.status = 500
    lenient.faults.status = 502
    async with await start(nursery, strict) as c_client, \
            await start(nursery, lenient) as h_client:
        flat = await post(c_client, chat_body(strict))
        detail = await post(h_client, chat_body(lenient))
        models = await c_client.get("/models")
    assert flat.status_code == 500 and set(flat.json()) == {"message", "type", "param", "code"}
    assert flat.headers["x-ratelimit-remaining-requests-day"] == "5"
    assert detail.status_code == 502 and set(detail.json()) == {"detail"}
    assert models.status_code == 200  # faults leave /models alone
    assert strict.served == 0


async def test_no_instances_fault(nursery: trio.Nursery) -> None:
    lenient, strict = chutes(), cerebras()
    lenient.faults.no_instances = strict.faults.no_instances = True
    async with await start(nursery, lenient) as h_client, \
            await start(nursery, strict) as c_client:
        detail = await post(h_client, chat_body(lenient))
        flat = await post(c_client, chat_body(strict))
    assert detail.status_code == 503
    assert detail.json()["detail"].startswith("No instances available (yet) for chute_id=")
    assert flat.status_code == 503 and "message" in flat.json()


async def test_queue_exceeded_fault(nursery: trio.Nursery) -> None:
    provider = cerebras()
    provider.faults.queue_exceeded = True
    async with await start(nursery, provider) as client:
        response = await post(client, chat_body(provider))
    assert response.status_code == 429
    assert response.json()["code"] == "queue_exceeded"
    assert response.json()["message"] == ("We're experiencing high traffic right now! "
                                          "Please try again soon.")
    assert int(response.headers["retry-after"]) <= 5


async def test_reset_before_response(nursery: trio.Nursery) -> None:
    provider = cerebras()
    provider.faults.reset_before_response = True
    async with await start(nursery, provider) as client:
        with pytest.raises(httpx.ReadError, match="reset"):  # an RST, not an orderly close
            await post(client, chat_body(provider))
    assert len(provider.received) == 1 and provider.served == 0


async def test_reset_mid_stream(nursery: trio.Nursery) -> None:
    provider = chutes()
    provider.faults.reset_mid_stream = True
    seen: list[str] = []
    async with await start(nursery, provider) as client:
        with pytest.raises(httpx.ReadError, match="reset"):
            async with client.stream("POST", "/chat/completions",
                                     json=chat_body(provider, stream=True)) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if line:
                        seen.append(line)
    assert len(seen) == 1 and '"role": "assistant"' in seen[0]
    assert provider.served == 0


async def test_stall_times_out_and_server_survives(nursery: trio.Nursery) -> None:
    provider = cerebras()
    provider.faults = Faults(stall=True, remaining=1)
    async with await start(nursery, provider) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/chat/completions", json=chat_body(provider), timeout=0.2)
        healthy = await post(client, chat_body(provider))
    assert healthy.status_code == 200


async def test_error_first_event(nursery: trio.Nursery) -> None:
    provider = cerebras()
    provider.faults.error_first_event = True
    async with await start(nursery, provider) as client:
        events = await stream_events(client, chat_body(provider, stream=True))
    assert list(events[0]) == ["error"] and "message" in events[0]["error"]
    assert events[1:] == ["[DONE]"]


async def test_remaining_limits_faults_then_healthy(nursery: trio.Nursery) -> None:
    provider = chutes()
    provider.faults = Faults(status=503, remaining=1)
    async with await start(nursery, provider) as client:
        statuses = [(await post(client, chat_body(provider))).status_code for _ in range(3)]
    assert statuses == [503, 200, 200]
    assert provider.faults == Faults()


async def test_latency_and_chunk_delay(nursery: trio.Nursery) -> None:
    provider = chutes()
    provider.faults = Faults(latency=0.05, chunk_delay=0.01)
    async with await start(nursery, provider) as client:
        began = trio.current_time()
        events = await stream_events(client, chat_body(provider, stream=True))
        elapsed = trio.current_time() - began
    assert elapsed >= 0.05 + 0.01 * (len(events) - 1)


async def test_keep_alive_serves_sequential_requests_on_one_connection(
        nursery: trio.Nursery) -> None:
    provider = cerebras()
    async with await start(nursery, provider) as client:
        bodies = []
        for _ in range(5):
            bodies.append((await post(client, chat_body(provider))).json())
    assert len({b["id"] for b in bodies}) == 5
    assert provider.served == 5 and provider.connections == 1


async def test_client_gone_mid_stall_does_not_break_server(nursery: trio.Nursery) -> None:
    provider = chutes()
    provider.faults.stall = True
    async with await start(nursery, provider) as client:
        with trio.move_on_after(0.1):
            await post(client, chat_body(provider))
        provider.faults = Faults()
        response = await post(client, chat_body(provider))
    assert response.status_code == 200 and provider.connections == 2


async def test_chutes_plan_windows_when_enabled_refuse_without_a_reset_time(nursery: trio.Nursery) -> None:
    """A rolling 4-hour window of 2 requests and a 30-day one of 3: the third request in 4 hours
    gets Chutes's 429 (no Retry-After, no rate-limit headers); 4 hours later one more fits, then
    the month is full. Off by default."""
    clock = FakeClock()
    provider = chutes(plan_windows={4 * 3600: 2, 30 * 86400: 3}, clock=clock)
    async with await start(nursery, provider) as client:
        codes = [(await post(client, chat_body(provider))).status_code for _ in range(3)]
        clock.now += 4 * 3600
        later = [(await post(client, chat_body(provider))).status_code for _ in range(2)]
        clock.now += 4 * 3600
        refused = await post(client, chat_body(provider))
    assert codes == [200, 200, 429] and later == [200, 429] and refused.status_code == 429
    assert "detail" in refused.json() and "retry-after" not in refused.headers
    assert not any(name.startswith("x-ratelimit") for name in refused.headers)
    assert chutes().plan_windows == []
