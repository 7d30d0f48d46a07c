"""The Chat Completions door without a proxy: a request in, fixed chat answers and chunks in, the
body or the stream's events out. The pipeline speaks this shape, so the door passes answers
through with the client's model name and drops usage the client did not ask for.
(Through the official SDK, against the emulated providers: test_openai_sdk.py.)"""

from __future__ import annotations

import pytest

from support.chat_answers import (
    ARGUMENTS, CALL_ID, MODELS, PROVIDER_MODEL, ROUTE, USAGE, WEATHER_TOOL, body, in_reads, one_by_one, sse,
    text_answer, text_chunks, tool_answer, tool_chunks,
)
from trioproxy.doors import chat
from trioproxy.errors import ProxyError

CLIENT_MODEL = "gpt-4o"  # an alias of the route


def request(**extra: object) -> bytes:
    return body({"model": CLIENT_MODEL, "messages": [{"role": "user", "content": "Say hello."}], **extra})


def test_a_request_becomes_the_pipelines_request_unchanged() -> None:
    exchange = chat.parse(request(tools=[WEATHER_TOOL], temperature=0.2), MODELS)
    assert exchange.request.route == ROUTE
    assert exchange.request.stream is False
    assert exchange.request.body == {"model": CLIENT_MODEL, "messages": [{"role": "user", "content": "Say hello."}],
                                     "tools": [WEATHER_TOOL], "temperature": 0.2}
    assert chat.parse(request(stream=True), MODELS).request.stream is True


def test_an_answer_carries_the_clients_model_name() -> None:
    answer = chat.parse(request(), MODELS).answer(text_answer())
    assert answer["model"] == CLIENT_MODEL
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "Hello world"}
    assert answer["usage"] == USAGE


def test_a_tool_call_answer_passes_through() -> None:
    answer = chat.parse(request(tools=[WEATHER_TOOL]), MODELS).answer(tool_answer())
    call = answer["choices"][0]["message"]["tool_calls"][0]
    assert (call["id"], call["function"]["name"], call["function"]["arguments"]) == (CALL_ID, "get_weather", ARGUMENTS)
    assert answer["choices"][0]["finish_reason"] == "tool_calls"


def test_a_stream_is_each_chunk_renamed_then_done_without_usage_unasked() -> None:
    exchange = chat.parse(request(stream=True), MODELS)
    events = sse(in_reads(exchange, one_by_one(text_chunks())))
    assert [name for name, _ in events] == [None] * 5
    chunks, done = [data for _, data in events[:-1]], events[-1][1]
    assert done == "[DONE]"
    assert [c["model"] for c in chunks] == [CLIENT_MODEL] * 4  # the usage-only chunk is gone
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "Hello world"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert not any("usage" in c for c in chunks)
    assert PROVIDER_MODEL.encode() not in in_reads(chat.parse(request(stream=True), MODELS), [text_chunks()])


def test_a_stream_keeps_usage_when_the_client_asks_for_it() -> None:
    exchange = chat.parse(request(stream=True, stream_options={"include_usage": True}), MODELS)
    events = sse(in_reads(exchange, [text_chunks()]))
    assert events[-2][1]["usage"] == USAGE and events[-2][1]["choices"] == []
    assert events[-1][1] == "[DONE]"


def test_a_streamed_tool_call_arrives_in_its_pieces() -> None:
    exchange = chat.parse(request(stream=True, tools=[WEATHER_TOOL]), MODELS)
    chunks = [data for _, data in sse(in_reads(exchange, one_by_one(tool_chunks())))[:-1]]
    calls = [call for c in chunks for call in c["choices"][0]["delta"].get("tool_calls") or []]
    assert calls[0]["id"] == CALL_ID and calls[0]["function"]["name"] == "get_weather"
    assert "".join(call["function"]["arguments"] for call in calls) == ARGUMENTS
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_a_stream_that_fails_ends_with_an_error_event_then_done() -> None:
    exchange = chat.parse(request(stream=True), MODELS)
    failure = ProxyError(502, "The provider's stream broke off.", "api_error", code="upstream_error")
    events = sse(in_reads(exchange, [text_chunks()[:2]], failure))
    assert events[-2][1] == {"error": {"message": "The provider's stream broke off.", "type": "api_error",
                                       "param": None, "code": "upstream_error"}}
    assert events[-1][1] == "[DONE]"


@pytest.mark.parametrize(("document", "status", "param"), [
    pytest.param({"model": CLIENT_MODEL}, 400, "messages", id="no-messages"),
    pytest.param({"model": CLIENT_MODEL, "messages": ["hi"]}, 400, "messages", id="message-not-object"),
    pytest.param({"model": "llama-9", "messages": [{"role": "user", "content": "x"}]}, 404, "model", id="unknown-model"),
    pytest.param({"model": CLIENT_MODEL, "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, 400,
                 "stream", id="stream-not-bool"),
    pytest.param({"model": CLIENT_MODEL, "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
                 400, "tools", id="tool-without-function"),
])
def test_a_bad_request_is_refused_in_openais_shape(document: dict[str, object], status: int, param: str) -> None:
    with pytest.raises(ProxyError) as refused:
        chat.parse(body(document), MODELS)
    assert (refused.value.status, refused.value.param) == (status, param)
    rendered = chat.error_body(refused.value)
    assert set(rendered["error"]) == {"message", "type", "param", "code"}
    assert rendered["error"]["param"] == param and rendered["error"]["message"]
