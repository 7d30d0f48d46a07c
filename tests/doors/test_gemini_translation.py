"""The Gemini door without a proxy: a path and a request in, fixed chat answers and chunks in, the
GenerateContentResponse or the streamed documents out (server-sent events with `alt=sse`, one
JSON array written piece by piece without), for text, function calls and failures.
(Through the official SDK, against the emulated providers: test_gemini_door.py.)"""

from __future__ import annotations

import json
from typing import Any

import pytest

from support.chat_answers import (
    ARGUMENTS, CALL_ID, MODELS, PROVIDER_MODEL, ROUTE, body, chunk, in_reads, one_by_one, sse, text_answer,
    text_chunks, tool_answer, tool_chunks,
)
from trioproxy.doors import gemini
from trioproxy.doors.gemini import GeminiCall
from trioproxy.errors import ProxyError

CLIENT_MODEL = "gemini-2.5-pro"  # an alias of the route
GENERATE = GeminiCall(CLIENT_MODEL, "generateContent")
STREAM = GeminiCall(CLIENT_MODEL, "streamGenerateContent")
DECLARATION = {"name": "get_weather", "description": "Weather of a city",
               "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}}}
USAGE_METADATA = {"promptTokenCount": 5, "candidatesTokenCount": 2, "totalTokenCount": 7, "cachedContentTokenCount": 3}


def request(**extra: Any) -> bytes:
    return body({"systemInstruction": {"parts": [{"text": "Be brief."}]},
                 "contents": [{"role": "user", "parts": [{"text": "Say hello."}]}], **extra})


def parts_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    return document["candidates"][0]["content"]["parts"]


@pytest.mark.parametrize(("path", "call"), [
    ("/v1beta/models", GeminiCall(None, None)),
    (f"/v1beta/models/{CLIENT_MODEL}", GeminiCall(CLIENT_MODEL, None)),
    (f"/v1beta/models/{CLIENT_MODEL}:generateContent", GENERATE),
    (f"/v1/models/{CLIENT_MODEL}:streamGenerateContent", STREAM),
])
def test_the_path_names_the_model_and_the_call(path: str, call: GeminiCall) -> None:
    assert gemini.owns(path, google_key=False) == (call.method is not None or path.startswith("/v1beta/"))
    assert gemini.gemini_call(path) == call


@pytest.mark.parametrize(("path", "status"), [
    (f"/v1beta/models/{CLIENT_MODEL}:embedContent", 404),
    ("/v1beta/tunedModels/x", 404),
    ("/v1beta/models/bad%20id:generateContent", 400),
])
def test_a_path_that_names_no_call_is_refused(path: str, status: int) -> None:
    with pytest.raises(ProxyError) as refused:
        gemini.gemini_call(path)
    assert refused.value.status == status


def test_a_request_becomes_a_chat_request() -> None:
    exchange = gemini.parse(request(tools=[{"functionDeclarations": [DECLARATION]}],
                                    generationConfig={"maxOutputTokens": 300, "temperature": 0.2}), MODELS, STREAM, True)
    assert exchange.request.route == ROUTE and exchange.request.stream is True
    chat = exchange.request.body
    assert chat["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]
    assert (chat["max_tokens"], chat["temperature"], chat["stream"]) == (300, 0.2, True)
    [tool] = chat["tools"]
    assert tool["function"]["name"] == "get_weather"
    assert tool["function"]["parameters"]["properties"]["city"]["type"] == "string"  # Google's Schema as JSON Schema
    assert gemini.parse(request(), MODELS, GENERATE, False).request.stream is False


def test_a_function_call_and_its_response_become_a_call_and_a_tool_message() -> None:
    contents = [{"role": "user", "parts": [{"text": "Weather?"}]},
                {"role": "model", "parts": [{"functionCall": {"id": CALL_ID, "name": "get_weather",
                                                              "args": {"city": "Paris"}}}]},
                {"role": "user", "parts": [{"functionResponse": {"id": CALL_ID, "name": "get_weather",
                                                                 "response": {"output": "sunny"}}}]}]
    messages = gemini.parse(request(contents=contents), MODELS, GENERATE, False).request.body["messages"]
    assert messages[2]["tool_calls"] == [
        {"id": CALL_ID, "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]
    assert messages[3]["role"] == "tool" and messages[3]["tool_call_id"] == CALL_ID and "sunny" in messages[3]["content"]


def test_an_answer_is_one_candidate_with_its_text_and_usage() -> None:
    answer = gemini.parse(request(), MODELS, GENERATE, False).answer(text_answer())
    assert parts_of(answer) == [{"text": "Hello world"}]
    assert answer["candidates"][0]["finishReason"] == "STOP"
    assert answer["usageMetadata"] == USAGE_METADATA
    assert answer["modelVersion"] == CLIENT_MODEL and PROVIDER_MODEL not in str(answer)


def test_a_tool_call_answer_is_a_function_call_part() -> None:
    answer = gemini.parse(request(), MODELS, GENERATE, False).answer(tool_answer())
    assert parts_of(answer) == [{"functionCall": {"name": "get_weather", "args": json.loads(ARGUMENTS), "id": CALL_ID}}]
    assert answer["candidates"][0]["finishReason"] == "STOP"  # Google reports a call as STOP


def test_an_answer_cut_at_the_token_budget_says_max_tokens() -> None:
    answer = gemini.parse(request(), MODELS, GENERATE, False).answer(text_answer("length"))
    assert answer["candidates"][0]["finishReason"] == "MAX_TOKENS"


def test_a_stream_with_sse_is_a_document_per_read_then_the_finish() -> None:
    exchange = gemini.parse(request(), MODELS, STREAM, True)
    assert exchange.stream_content_type.startswith(b"text/event-stream")
    documents = [data for _, data in sse(in_reads(exchange, one_by_one(text_chunks())))]
    assert [parts_of(d) for d in documents] == [[{"text": "Hello"}], [{"text": " world"}], [{"text": ""}]]
    assert "finishReason" not in documents[0]["candidates"][0]
    assert documents[-1]["candidates"][0]["finishReason"] == "STOP"
    assert documents[-1]["usageMetadata"] == USAGE_METADATA
    assert {d["responseId"] for d in documents} == {documents[0]["responseId"]}


def test_a_read_of_several_chunks_is_one_document() -> None:
    documents = [data for _, data in sse(in_reads(gemini.parse(request(), MODELS, STREAM, True), [text_chunks()]))]
    assert [parts_of(d) for d in documents] == [[{"text": "Hello world"}], [{"text": ""}]]


def test_a_stream_without_sse_is_one_json_array() -> None:
    exchange = gemini.parse(request(), MODELS, STREAM, False)
    assert exchange.stream_content_type.startswith(b"application/json")
    documents = json.loads(in_reads(exchange, one_by_one(text_chunks())))
    assert "".join(part.get("text", "") for d in documents for part in parts_of(d)) == "Hello world"
    assert documents[-1]["candidates"][0]["finishReason"] == "STOP"


def test_a_streamed_function_call_comes_whole_in_the_last_document() -> None:
    documents = json.loads(in_reads(gemini.parse(request(), MODELS, STREAM, False), one_by_one(tool_chunks())))
    assert len(documents) == 1  # no text: nothing goes out before the end
    assert parts_of(documents[0]) == [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}, "id": CALL_ID}}]


@pytest.mark.parametrize("sse_framing", [True, False], ids=["sse", "array"])
def test_a_stream_that_fails_ends_with_googles_error(sse_framing: bool) -> None:
    failure = ProxyError(429, "Slow down.", "rate_limit_error", headers={"retry-after": "7"})
    stream = in_reads(gemini.parse(request(), MODELS, STREAM, sse_framing), [[chunk({"content": "Hel"})]], failure)
    documents = [data for _, data in sse(stream)] if sse_framing else json.loads(stream)
    assert parts_of(documents[0]) == [{"text": "Hel"}]
    assert documents[-1] == {"error": {"code": 429, "message": "Slow down.", "status": "RESOURCE_EXHAUSTED", "details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]}}


def test_an_empty_stream_is_still_a_whole_array() -> None:
    documents = json.loads(in_reads(gemini.parse(request(), MODELS, STREAM, False), []))
    assert [parts_of(d) for d in documents] == [[{"text": ""}]]


@pytest.mark.parametrize(("status", "name"), [
    (400, "INVALID_ARGUMENT"), (401, "UNAUTHENTICATED"), (404, "NOT_FOUND"), (429, "RESOURCE_EXHAUSTED"),
    (500, "INTERNAL"), (502, "UNAVAILABLE"), (503, "UNAVAILABLE"), (504, "DEADLINE_EXCEEDED"),
])
def test_an_error_is_in_googles_shape(status: int, name: str) -> None:
    assert gemini.error_body(ProxyError(status, "No.")) == {"error": {"code": status, "message": "No.", "status": name}}


@pytest.mark.parametrize("document", [
    pytest.param({"contents": []}, id="no-contents"),
    pytest.param({"contents": [{"role": "user", "parts": []}]}, id="empty-parts"),
    pytest.param({"contents": [{"role": "user", "parts": [{"text": "x"}]}], "surprise": 1}, id="unknown-field"),
    pytest.param({"contents": [{"role": "robot", "parts": [{"text": "x"}]}]}, id="bad-role"),
    pytest.param({"contents": [{"role": "user", "parts": [{"text": "x"}]}], "cachedContent": "c/1"}, id="cached-content"),
    pytest.param({"contents": [{"role": "user", "parts": [{"text": "x"}]}],
                  "generationConfig": {"candidateCount": 2}}, id="two-candidates"),
    pytest.param({"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}]},
                 id="response-to-no-call"),
])
def test_a_bad_request_is_refused_with_a_400(document: dict[str, Any]) -> None:
    with pytest.raises(ProxyError) as refused:
        gemini.parse(body(document), MODELS, GENERATE, False)
    assert refused.value.status == 400
    assert gemini.error_body(refused.value)["error"]["status"] == "INVALID_ARGUMENT"
