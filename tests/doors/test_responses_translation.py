"""The Responses door without a proxy: a request in, fixed chat answers and chunks in, the response
object or the stream's numbered events out, for text, tool calls and failures.
(Through the official SDK, against the emulated providers: test_responses_door.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from support.chat_answers import (
    ARGUMENTS, CALL_ID, MODELS, PROVIDER_MODEL, ROUTE, body, chunk, in_reads, one_by_one, sse, text_answer,
    text_chunks, tool_answer, tool_chunks,
)
from trioproxy.doors import chat, responses
from trioproxy.errors import ProxyError

CLIENT_MODEL = "gpt-5-codex"  # an alias of the route
FUNCTION = {"type": "function", "name": "get_weather", "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}

TEXT_EVENTS = [
    "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
    "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
    "response.content_part.done", "response.output_item.done", "response.completed",
]
TOOL_EVENTS = [
    "response.created", "response.in_progress", "response.output_item.added",
    "response.function_call_arguments.delta", "response.function_call_arguments.delta",
    "response.function_call_arguments.done", "response.output_item.done", "response.completed",
]


def request(**extra: Any) -> bytes:
    return body({"model": CLIENT_MODEL, "instructions": "Be brief.", "input": "Say hello.", **extra})


def events_of(stream: bytes) -> list[dict[str, Any]]:
    """The stream's events; each names its type twice (`event:` and `type`), which must agree."""
    events = sse(stream)
    assert all(name == data["type"] for name, data in events), events
    return [data for _, data in events]


def test_a_request_becomes_a_chat_request() -> None:
    exchange = responses.parse(request(tools=[FUNCTION, {"type": "web_search"}], max_output_tokens=300,
                                       stream=True), MODELS)
    assert exchange.request.route == ROUTE and exchange.request.stream is True
    assert exchange.request.body == {
        "model": CLIENT_MODEL,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}],
        "max_completion_tokens": 300,
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                                    "parameters": FUNCTION["parameters"]}}],
        "stream": True,
    }
    assert exchange.request.dropped_tools == ("web_search",)


def test_a_conversation_with_a_call_and_its_output_becomes_chat_messages() -> None:
    items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
             {"type": "function_call", "call_id": CALL_ID, "name": "get_weather", "arguments": ARGUMENTS},
             {"type": "function_call_output", "call_id": CALL_ID, "output": "sunny"}]
    messages = responses.parse(request(input=items, tools=[FUNCTION]), MODELS).request.body["messages"]
    assert messages[1:] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": CALL_ID, "type": "function", "function": {"name": "get_weather", "arguments": ARGUMENTS}}]},
        {"role": "tool", "tool_call_id": CALL_ID, "content": "sunny"},
    ]


def test_an_answer_is_a_completed_response_with_its_text_and_usage() -> None:
    answer = responses.parse(request(), MODELS).answer(text_answer())
    assert (answer["object"], answer["status"], answer["model"]) == ("response", "completed", CLIENT_MODEL)
    assert answer["instructions"] == "Be brief." and answer["store"] is False
    [message] = answer["output"]
    assert message["type"] == "message" and message["role"] == "assistant"
    assert [part["text"] for part in message["content"]] == ["Hello world"]
    assert answer["usage"] == {"input_tokens": 5, "input_tokens_details": {"cached_tokens": 3}, "output_tokens": 2,
                               "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 7}
    assert PROVIDER_MODEL not in str(answer)


def test_an_answer_cut_at_the_token_budget_is_incomplete() -> None:
    answer = responses.parse(request(), MODELS).answer(text_answer("length"))
    assert answer["status"] == "incomplete"
    assert answer["incomplete_details"] == {"reason": "max_output_tokens"}


def test_a_tool_call_answer_is_a_function_call_item() -> None:
    answer = responses.parse(request(tools=[FUNCTION]), MODELS).answer(tool_answer())
    [call] = answer["output"]
    assert {key: call[key] for key in ("type", "call_id", "name", "arguments", "status")} == {
        "type": "function_call", "call_id": CALL_ID, "name": "get_weather", "arguments": ARGUMENTS,
        "status": "completed"}


def test_a_call_to_a_namespaced_tool_comes_back_with_its_namespace() -> None:
    namespace = {"type": "namespace", "name": "agent", "tools": [{**FUNCTION, "name": "spawn"}]}
    exchange = responses.parse(request(tools=[namespace]), MODELS)
    assert exchange.request.body["tools"][0]["function"]["name"] == "spawn"
    document = tool_answer()
    document["choices"][0]["message"]["tool_calls"][0]["function"]["name"] = "spawn"
    [call] = exchange.answer(document)["output"]
    assert (call["namespace"], call["name"]) == ("agent", "spawn")


def test_a_streamed_answer_is_numbered_events_around_one_message() -> None:
    events = events_of(in_reads(responses.parse(request(stream=True), MODELS), one_by_one(text_chunks())))
    assert [event["type"] for event in events] == TEXT_EVENTS
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert [event["delta"] for event in events if event["type"] == "response.output_text.delta"] == ["Hello", " world"]
    done = events[-1]["response"]
    assert done["status"] == "completed" and done["model"] == CLIENT_MODEL
    assert done["output"][0]["content"][0]["text"] == "Hello world"
    assert done["usage"]["output_tokens"] == 2


def test_a_streamed_tool_call_is_a_function_call_item_with_its_arguments_in_pieces() -> None:
    events = events_of(in_reads(responses.parse(request(stream=True, tools=[FUNCTION]), MODELS),
                                one_by_one(tool_chunks())))
    assert [event["type"] for event in events] == TOOL_EVENTS
    assert events[2]["item"]["call_id"] == CALL_ID and events[2]["item"]["name"] == "get_weather"
    assert "".join(e["delta"] for e in events if e["type"].endswith("arguments.delta")) == ARGUMENTS
    assert events[5]["arguments"] == ARGUMENTS
    assert events[-1]["response"]["output"][0]["arguments"] == ARGUMENTS


def test_text_then_a_call_closes_the_message_before_the_call_opens() -> None:
    text, calls = text_chunks()[:3], tool_chunks()[1:]
    events = events_of(in_reads(responses.parse(request(stream=True, tools=[FUNCTION]), MODELS), [text, calls]))
    kinds = [event["type"] for event in events]
    assert kinds.index("response.output_item.done") < kinds.index("response.function_call_arguments.delta")
    assert [item["type"] for item in events[-1]["response"]["output"]] == ["message", "function_call"]
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.added"] == [0, 1]


def test_how_upstream_reads_split_the_chunks_does_not_change_the_events() -> None:
    whole = events_of(in_reads(responses.parse(request(stream=True), MODELS), [text_chunks()]))
    split = events_of(in_reads(responses.parse(request(stream=True), MODELS), one_by_one(text_chunks())))
    assert [(e["type"], e.get("delta")) for e in whole] == [(e["type"], e.get("delta")) for e in split]


def test_a_stream_cut_at_the_token_budget_ends_incomplete() -> None:
    events = events_of(in_reads(responses.parse(request(stream=True), MODELS), [text_chunks("length")]))
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_a_stream_that_fails_ends_with_response_failed() -> None:
    failure = ProxyError(504, "No provider answered in time.", "api_error", code="upstream_timeout")
    events = events_of(in_reads(responses.parse(request(stream=True), MODELS), [[chunk({"content": "Hel"})]], failure))
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["status"] == "failed"
    assert events[-1]["response"]["error"] == {"code": "upstream_timeout", "message": "No provider answered in time."}


def test_a_stream_that_fails_before_any_chunk_still_announces_the_response() -> None:
    failure = ProxyError(502, "The provider failed.", "api_error")
    events = events_of(in_reads(responses.parse(request(stream=True), MODELS), [], failure))
    assert [event["type"] for event in events] == ["response.created", "response.in_progress", "response.failed"]
    assert events[-1]["response"]["error"]["code"] == "api_error"  # the type stands in for a missing code


@pytest.mark.parametrize(("extra", "param", "code"), [
    pytest.param({"previous_response_id": "resp_1"}, "previous_response_id", "unsupported_feature", id="stateful"),
    pytest.param({"store": True}, "store", "unsupported_feature", id="store"),
    pytest.param({"frobnicate": 1}, "frobnicate", "invalid_request", id="unknown-field"),
    pytest.param({"max_output_tokens": 0}, "max_output_tokens", "invalid_request", id="zero-budget"),
    pytest.param({"input": 7}, "input", "invalid_request", id="input-not-items"),
    pytest.param({"input": [{"type": "item_reference", "id": "x"}]}, "input", "unsupported_feature", id="item-reference"),
    pytest.param({"tool_choice": "sometimes"}, "tool_choice", "invalid_request", id="tool-choice"),
])
def test_a_bad_request_is_refused_in_openais_shape(extra: dict[str, Any], param: str, code: str) -> None:
    with pytest.raises(ProxyError) as refused:
        responses.parse(request(**extra), MODELS)
    assert (refused.value.status, refused.value.param, refused.value.code) == (400, param, code)
    assert chat.error_body(refused.value)["error"]["param"] == param  # the Responses door answers in OpenAI's shape
