"""The Anthropic Messages door without a proxy: a request in, fixed chat answers and chunks in, the
message or the stream's events out, for text, tool use, stop reasons and failures.
(Through the official SDK, against the emulated providers: test_messages_door.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from support.chat_answers import (
    ARGUMENT_PIECES, CALL_ID, MODELS, PROVIDER_MODEL, ROUTE, body, chunk, in_reads, one_by_one, sse, text_answer,
    text_chunks, tool_answer, tool_chunks,
)
from trioproxy.doors import messages
from trioproxy.errors import ProxyError

CLIENT_MODEL = "claude-sonnet-4-5"  # an alias of the route
TOOL = {"name": "get_weather", "description": "Weather of a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
TEXT_EVENTS = ["message_start", "ping", "content_block_start", "content_block_delta", "content_block_delta",
               "content_block_stop", "message_delta", "message_stop"]


def request(**extra: Any) -> bytes:
    return body({"model": CLIENT_MODEL, "max_tokens": 1024, "system": "Be brief.",
                 "messages": [{"role": "user", "content": "Say hello."}], **extra})


def events_of(stream: bytes) -> list[dict[str, Any]]:
    """The stream's events; each names its type twice (`event:` and `type`), which must agree."""
    events = sse(stream)
    assert all(name == data["type"] for name, data in events), events
    return [data for _, data in events]


def test_a_request_becomes_a_chat_request() -> None:
    exchange = messages.parse(request(tools=[TOOL], tool_choice={"type": "any"}, stop_sequences=["END"],
                                      stream=True, thinking={"type": "enabled"}), MODELS)
    assert exchange.request.route == ROUTE and exchange.request.stream is True
    assert exchange.request.body == {
        "model": CLIENT_MODEL,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}],
        "stop": ["END"],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": TOOL["input_schema"],
                                                    "description": "Weather of a city"}}],
        "tool_choice": "required",
        "max_tokens": 1024,
        "stream": True,
    }


def test_tool_use_and_its_result_become_a_call_and_a_tool_message() -> None:
    turns = [{"role": "user", "content": "Weather in Paris?"},
             {"role": "assistant", "content": [{"type": "text", "text": "Looking."},
                                               {"type": "tool_use", "id": CALL_ID, "name": "get_weather",
                                                "input": {"city": "Paris"}}]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": CALL_ID, "content": "sunny"},
                                          {"type": "text", "text": "And tomorrow?"}]}]
    chat_messages = messages.parse(request(messages=turns, tools=[TOOL]), MODELS).request.body["messages"]
    assert chat_messages[2:] == [
        {"role": "assistant", "content": "Looking.", "tool_calls": [
            {"id": CALL_ID, "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": CALL_ID, "content": "sunny"},
        {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]},
    ]


def test_an_answer_is_a_message_with_its_text_and_usage() -> None:
    answer = messages.parse(request(), MODELS).answer(text_answer())
    assert (answer["type"], answer["role"], answer["model"]) == ("message", "assistant", CLIENT_MODEL)
    assert answer["content"] == [{"type": "text", "text": "Hello world"}]
    assert (answer["stop_reason"], answer["stop_sequence"]) == ("end_turn", None)
    assert answer["usage"] == {"input_tokens": 5, "output_tokens": 2, "cache_creation_input_tokens": 0,
                               "cache_read_input_tokens": 3}
    assert answer["id"].startswith("msg_") and PROVIDER_MODEL not in str(answer)


def test_a_tool_call_answer_is_a_tool_use_block_with_its_input() -> None:
    answer = messages.parse(request(tools=[TOOL]), MODELS).answer(tool_answer())
    assert answer["content"] == [{"type": "tool_use", "id": CALL_ID, "name": "get_weather", "input": {"city": "Paris"}}]
    assert answer["stop_reason"] == "tool_use"


@pytest.mark.parametrize(("finish", "choice", "reason", "sequence"), [
    pytest.param("length", {}, "max_tokens", None, id="budget"),
    pytest.param("stop", {"stop_reason": "END"}, "stop_sequence", "END", id="stop-sequence"),
    pytest.param("stop", {"stop_reason": "OTHER"}, "end_turn", None, id="not-a-requested-sequence"),
    pytest.param("content_filter", {}, "refusal", None, id="filtered"),
])
def test_why_an_answer_stopped(finish: str, choice: dict[str, Any], reason: str, sequence: str | None) -> None:
    answer = messages.parse(request(stop_sequences=["END"]), MODELS).answer(text_answer(finish, **choice))
    assert (answer["stop_reason"], answer["stop_sequence"]) == (reason, sequence)


def test_a_streamed_answer_is_one_text_block_between_start_and_stop() -> None:
    events = events_of(in_reads(messages.parse(request(stream=True), MODELS), one_by_one(text_chunks())))
    assert [event["type"] for event in events] == TEXT_EVENTS
    assert events[0]["message"]["model"] == CLIENT_MODEL and events[0]["message"]["content"] == []
    assert events[2]["content_block"] == {"type": "text", "text": ""}
    assert [event["delta"]["text"] for event in events[3:5]] == ["Hello", " world"]
    assert {event["index"] for event in events[2:6]} == {0}
    assert events[6]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert events[6]["usage"] == {"input_tokens": 5, "output_tokens": 2}


def test_a_streamed_tool_call_is_a_tool_use_block_with_its_input_in_pieces() -> None:
    events = events_of(in_reads(messages.parse(request(stream=True, tools=[TOOL]), MODELS), one_by_one(tool_chunks())))
    assert [event["type"] for event in events] == ["message_start", "ping", "content_block_start", "content_block_delta",
                                                   "content_block_delta", "content_block_stop", "message_delta",
                                                   "message_stop"]
    assert events[2]["content_block"] == {"type": "tool_use", "id": CALL_ID, "name": "get_weather", "input": {}}
    assert [e["delta"] for e in events[3:5]] == [{"type": "input_json_delta", "partial_json": p} for p in ARGUMENT_PIECES]
    assert events[6]["delta"]["stop_reason"] == "tool_use"


def test_text_then_a_call_are_two_blocks_in_order() -> None:
    events = events_of(in_reads(messages.parse(request(stream=True, tools=[TOOL]), MODELS),
                                [text_chunks()[:3], tool_chunks()[1:]]))
    starts = [event for event in events if event["type"] == "content_block_start"]
    assert [(s["index"], s["content_block"]["type"]) for s in starts] == [(0, "text"), (1, "tool_use")]
    stops = [event["index"] for event in events if event["type"] == "content_block_stop"]
    assert stops == [0, 1]


def test_how_upstream_reads_split_the_chunks_does_not_change_the_events() -> None:
    whole = events_of(in_reads(messages.parse(request(stream=True), MODELS), [text_chunks()]))
    split = events_of(in_reads(messages.parse(request(stream=True), MODELS), one_by_one(text_chunks())))
    assert [(e["type"], e.get("delta")) for e in whole] == [(e["type"], e.get("delta")) for e in split]


def test_an_empty_stream_is_still_a_whole_message() -> None:
    events = events_of(in_reads(messages.parse(request(stream=True), MODELS), []))
    assert [event["type"] for event in events] == ["message_start", "ping", "message_delta", "message_stop"]


@pytest.mark.parametrize(("status", "kind"), [
    (400, "invalid_request_error"), (401, "authentication_error"), (404, "not_found_error"), (413, "request_too_large"),
    (429, "rate_limit_error"), (500, "api_error"), (502, "api_error"), (503, "overloaded_error"),
])
def test_a_stream_that_fails_ends_with_an_error_event_in_anthropics_shape(status: int, kind: str) -> None:
    failure = ProxyError(status, "It went wrong.")
    stream = in_reads(messages.parse(request(stream=True), MODELS), [[chunk({"content": "Hel"})]], failure)
    name, data = sse(stream)[-1]
    assert name == "error"
    assert data == {"type": "error", "error": {"type": kind, "message": "It went wrong."}}
    assert messages.error_body(failure) == data


@pytest.mark.parametrize("document", [
    pytest.param({"model": CLIENT_MODEL, "messages": [{"role": "user", "content": "x"}]}, id="no-max-tokens"),
    pytest.param({"model": CLIENT_MODEL, "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}, id="zero-max-tokens"),
    pytest.param({"model": CLIENT_MODEL, "max_tokens": 9, "messages": []}, id="no-messages"),
    pytest.param({"model": CLIENT_MODEL, "max_tokens": 9, "messages": [{"role": "tool", "content": "x"}]}, id="bad-role"),
    pytest.param({"model": CLIENT_MODEL, "max_tokens": 9, "messages": [{"role": "user", "content": "x"}], "extra": 1},
                 id="unknown-field"),
    pytest.param({"model": CLIENT_MODEL, "max_tokens": 9, "messages": [{"role": "user", "content": "x"}],
                  "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, id="server-tool"),
    pytest.param({"model": CLIENT_MODEL, "max_tokens": 9, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {}}]}]}, id="unsupported-block"),
])
def test_a_bad_request_is_refused_in_anthropics_shape(document: dict[str, Any]) -> None:
    with pytest.raises(ProxyError) as refused:
        messages.parse(body(document), MODELS)
    assert refused.value.status == 400
    rendered = messages.error_body(refused.value)
    assert rendered["type"] == "error" and rendered["error"]["type"] == "invalid_request_error"
    assert rendered["error"]["message"]
