"""Google's Gemini API door, spoken by the official `google-genai` SDK (what Gemini CLI speaks)."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
from google.genai import errors, types

from support.gemini import client, sdk
from support.proxies import Providers, Proxy, StartProxy
from trioproxy.testing.emulator import Faults, completion_text

MODEL = "qwen-3-coder"
READ_FILE = types.FunctionDeclaration(
    name="read_file", description="Read a file from the workspace",
    parameters=types.Schema(type=types.Type.OBJECT, properties={"path": types.Schema(type=types.Type.STRING)},
                            required=["path"]))
HI = {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}
MODEL_PATH = f"/v1beta/models/{MODEL}:generateContent"


def root(proxy: Proxy) -> str:
    return proxy.base_url.removesuffix("/v1")


async def test_generate_answers_with_a_candidate_and_usage(proxy: Proxy, providers: Providers) -> None:
    response = await sdk(lambda: client(proxy).models.generate_content(
        model=MODEL, contents="Say hello.",
        config=types.GenerateContentConfig(system_instruction="Be brief.", max_output_tokens=300, temperature=0.2,
                                           top_p=0.9, stop_sequences=["END"])))

    assert response.text == completion_text("cerebras")
    candidate = response.candidates[0]
    assert candidate.finish_reason == types.FinishReason.STOP and candidate.content.role == "model"
    usage = response.usage_metadata
    assert usage.candidates_token_count == len(completion_text("cerebras").split()) and usage.prompt_token_count > 0
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
    assert response.model_version == MODEL
    sent = providers.cerebras.received[-1]
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"], sent["stop"]) == (300, 0.2, 0.9, ["END"])


@pytest.mark.parametrize("api_version", ["v1beta", "v1"])
async def test_stream_delivers_text_then_finish_and_usage(proxy: Proxy, api_version: str) -> None:
    chunks = await sdk(lambda: list(client(proxy, api_version=api_version).models.generate_content_stream(
        model=MODEL, contents="Say hello.")))

    assert "".join(chunk.text or "" for chunk in chunks) == completion_text("cerebras")
    assert len(chunks) >= 2
    assert all(chunk.candidates[0].finish_reason is None for chunk in chunks[:-1])
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.candidates_token_count == len(completion_text("cerebras").split())


async def test_function_call_then_function_response_turn(proxy: Proxy, providers: Providers) -> None:
    config = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[READ_FILE])])
    ask = types.Content(role="user", parts=[types.Part(text="Read a.txt")])
    first = await sdk(lambda: client(proxy).models.generate_content(model=MODEL, contents=[ask], config=config))

    call = first.function_calls[0]
    assert call.name == "read_file" and isinstance(call.args, dict) and "path" in call.args and call.id
    assert first.candidates[0].finish_reason == types.FinishReason.STOP
    tool = providers.cerebras.received[-1]["tools"][0]["function"]
    assert tool["parameters"] == {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}

    answer = types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(
        id=call.id, name=call.name, response={"output": "hello from a.txt"}))])
    second = await sdk(lambda: client(proxy).models.generate_content(
        model=MODEL, contents=[ask, first.candidates[0].content, answer], config=config))

    assert second.text == completion_text("cerebras")
    sent = providers.cerebras.received[-1]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.id and sent[1]["tool_calls"][0]["function"]["name"] == "read_file"
    assert sent[2] == {"role": "tool", "tool_call_id": call.id, "content": "hello from a.txt"}


async def test_streamed_function_call_arrives_whole(proxy: Proxy) -> None:
    config = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[READ_FILE])])
    chunks = await sdk(lambda: list(client(proxy).models.generate_content_stream(
        model=MODEL, contents="Read a.txt", config=config)))

    calls = [call for chunk in chunks for call in chunk.function_calls or []]
    assert len(calls) == 1 and calls[0].name == "read_file" and "path" in calls[0].args
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP


async def test_calls_without_ids_get_ids_from_their_place_and_pair_by_name(proxy: Proxy, providers: Providers) -> None:
    contents = [
        {"role": "user", "parts": [{"text": "Read a and b"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "read_file", "args": {"path": "a"}}},
                                    {"functionCall": {"name": "list_dir", "args": {}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "list_dir", "response": {"files": ["a"]}}},
                                   {"functionResponse": {"name": "read_file", "response": {"error": "denied"}}}]},
    ]
    async with httpx.AsyncClient(base_url=root(proxy)) as http:
        for _ in range(2):
            response = await http.post(f"/v1beta/models/{MODEL}:generateContent", json={"contents": contents})
            assert response.status_code == 200, response.text

    first, second = providers.cerebras.received[-2]["messages"], providers.cerebras.received[-1]["messages"]
    assert first == second  # the same history gets the same ids: the provider's prompt cache holds
    ids = [call["id"] for call in first[1]["tool_calls"]]
    assert len(set(ids)) == 2
    assert first[2] == {"role": "tool", "tool_call_id": ids[1], "content": '{"files":["a"]}'}
    assert first[3] == {"role": "tool", "tool_call_id": ids[0], "content": "Error: denied"}


async def test_images_a_function_returns_follow_its_tool_message(proxy: Proxy, providers: Providers) -> None:
    image = {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}
    contents = [
        {"role": "user", "parts": [{"text": "Look at logo.png"}]},
        {"role": "model", "parts": [{"functionCall": {"id": "c1", "name": "read_file", "args": {"path": "logo.png"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"id": "c1", "name": "read_file", "response": {"output": "read"},
                                                         "parts": [image]}}]},
    ]
    async with httpx.AsyncClient(base_url=root(proxy)) as http:
        response = await http.post(MODEL_PATH, json={"contents": contents})

    assert response.status_code == 200, response.text
    sent = providers.cerebras.received[-1]["messages"]
    assert sent[2] == {"role": "tool", "tool_call_id": "c1", "content": "read"}
    assert sent[3] == {"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}


async def test_tool_config_any_with_one_allowed_name_forces_that_function(proxy: Proxy, providers: Providers) -> None:
    other = types.FunctionDeclaration(name="list_dir", parameters_json_schema={"type": "object", "properties": {}})
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[READ_FILE, other])],
        tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(
            mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=["read_file"])))
    await sdk(lambda: client(proxy).models.generate_content(model=MODEL, contents="Read it", config=config))

    sent = providers.chutes.received[-1]  # Cerebras refuses a named tool_choice: Chutes serves it
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "read_file"}}
    assert [tool["function"]["name"] for tool in sent["tools"]] == ["read_file"]


async def test_json_output_and_images_are_forwarded(proxy: Proxy, providers: Providers) -> None:
    image = types.Part.from_bytes(data=b"\x89PNG fake", mime_type="image/png")
    config = types.GenerateContentConfig(response_mime_type="application/json",
                                         response_json_schema={"type": "object", "properties": {"a": {"type": "string"}}})
    await sdk(lambda: client(proxy).models.generate_content(model=MODEL, contents=[image, "What is this?"], config=config))

    sent = providers.cerebras.received[-1]
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"]["properties"] == {"a": {"type": "string"}}
    parts = sent["messages"][-1]["content"]
    assert parts[0]["type"] == "image_url" and parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert parts[1] == {"type": "text", "text": "What is this?"}


async def test_google_schemas_become_json_schema(proxy: Proxy, providers: Providers) -> None:
    schema = {"type": "OBJECT", "propertyOrdering": ["n", "tags"], "required": ["tags"], "properties": {
        "n": {"type": "INTEGER", "nullable": True, "description": "a count"},
        "tags": {"type": "ARRAY", "items": {"type": "STRING", "enum": ["a", "b"]}, "minItems": "1"}}}
    body = {**HI, "generationConfig": {"responseMimeType": "application/json", "responseSchema": schema}}
    async with httpx.AsyncClient(base_url=root(proxy)) as http:
        response = await http.post(MODEL_PATH, json=body)

    assert response.status_code == 200, response.text
    assert providers.cerebras.received[-1]["response_format"]["json_schema"]["schema"] == {
        "type": "object", "required": ["tags"], "properties": {
            "n": {"type": ["integer", "null"], "description": "a count"},
            "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "minItems": 1}}}


async def test_count_tokens_of_a_whole_request_counts_its_tools_too(proxy: Proxy) -> None:
    tools = [{"functionDeclarations": [{"name": f"tool_{i}", "description": "x" * 400} for i in range(4)]}]
    async with httpx.AsyncClient(base_url=root(proxy)) as http:
        bare = await http.post(f"/v1beta/models/{MODEL}:countTokens", json=HI)
        whole = await http.post(f"/v1beta/models/{MODEL}:countTokens",
                                json={"generateContentRequest": {"model": f"models/{MODEL}", **HI, "tools": tools}})

    assert bare.status_code == whole.status_code == 200
    assert whole.json()["totalTokens"] >= bare.json()["totalTokens"] + 400


async def test_count_tokens_asks_no_provider(proxy: Proxy, providers: Providers) -> None:
    counted = await sdk(lambda: client(proxy).models.count_tokens(model=MODEL, contents="x" * 400))

    assert 90 <= counted.total_tokens <= 130
    assert providers.cerebras.received == [] and providers.chutes.received == []


async def test_model_list_gives_each_route_its_limits(start_proxy: StartProxy) -> None:
    proxy = await start_proxy(cerebras={"context_window": 65_536, "max_completion_tokens_cap": 8_192},
                              chutes={"context_window": 32_768, "max_completion_tokens_cap": 4_096})
    listed = await sdk(lambda: list(client(proxy).models.list()))
    one = await sdk(lambda: client(proxy, api_version="v1beta").models.get(model=MODEL))

    assert [model.name for model in listed] == [f"models/{MODEL}"]
    assert (one.input_token_limit, one.output_token_limit) == (65_536, 8_192)
    assert "generateContent" in one.supported_actions and "countTokens" in one.supported_actions


async def test_a_provider_without_a_cap_makes_the_output_limit_the_window(proxy: Proxy) -> None:
    one = await sdk(lambda: client(proxy).models.get(model=MODEL))  # Chutes has no cap by default

    assert (one.input_token_limit, one.output_token_limit) == (131_072, 131_072)


async def test_openai_model_list_keeps_its_shape_on_the_shared_path(proxy: Proxy) -> None:
    async with httpx.AsyncClient(base_url=proxy.base_url) as http:
        listed = (await http.get("/models")).json()

    assert listed["object"] == "list" and listed["data"][0]["id"] == MODEL


async def test_a_cerebras_503_is_served_by_chutes_unnoticed(proxy: Proxy, providers: Providers) -> None:
    providers.cerebras.faults = Faults(status=503, remaining=1)
    chunks = await sdk(lambda: list(client(proxy).models.generate_content_stream(model=MODEL, contents="Hi")))

    assert "".join(chunk.text or "" for chunk in chunks) == completion_text("chutes")


async def test_cerebras_out_of_quota_sends_the_next_request_to_chutes(start_proxy: StartProxy) -> None:
    proxy = await start_proxy(cerebras={"requests_per_minute": 1})
    first = await sdk(lambda: client(proxy).models.generate_content(model=MODEL, contents="Hi"))
    second = await sdk(lambda: client(proxy).models.generate_content(model=MODEL, contents="Hi"))

    assert (first.text, second.text) == (completion_text("cerebras"), completion_text("chutes"))


async def test_no_quota_anywhere_is_resource_exhausted_with_retry_info(start_proxy: StartProxy) -> None:
    proxy = await start_proxy(cerebras={"requests_per_minute": 1}, chutes={"requests_per_minute": 1})
    for _ in range(2):
        await sdk(lambda: client(proxy).models.generate_content(model=MODEL, contents="Hi"))
    with pytest.raises(errors.ClientError) as caught:
        await sdk(lambda: client(proxy).models.generate_content(model=MODEL, contents="Hi"))

    assert caught.value.code == 429 and caught.value.status == "RESOURCE_EXHAUSTED"
    retry = caught.value.details["error"]["details"][0]
    assert retry["@type"] == "type.googleapis.com/google.rpc.RetryInfo" and retry["retryDelay"].endswith("s")


async def test_a_failure_after_the_first_byte_ends_the_stream_with_an_error(start_proxy: StartProxy,
                                                                           providers: Providers) -> None:
    """With continuation off, a break after content went out ends the stream with an error."""
    providers.cerebras.faults = Faults(break_after_events=2, remaining=1)
    proxy = await start_proxy(max_continuations=0)
    with pytest.raises(errors.APIError) as caught:
        await sdk(lambda: list(client(proxy).models.generate_content_stream(model=MODEL, contents="Hi")))

    assert caught.value.code >= 500 and caught.value.status in ("UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED")


async def test_a_break_after_the_first_byte_is_finished_by_the_next_provider(start_proxy: StartProxy,
                                                                             providers: Providers) -> None:
    """The Gemini door renders the continued answer like any other: whole, no error."""
    providers.chutes.speaks_as = "cerebras"
    providers.cerebras.faults = Faults(break_after_events=4, remaining=1)
    proxy = await start_proxy()

    chunks = await sdk(lambda: list(client(proxy).models.generate_content_stream(model=MODEL, contents="Hi")))

    assert "".join(chunk.text or "" for chunk in chunks) == completion_text("cerebras")
    assert len(providers.chutes.received) == 1


async def test_stream_without_alt_sse_is_one_json_array(proxy: Proxy) -> None:
    async with httpx.AsyncClient(base_url=root(proxy)) as http:
        response = await http.post(f"/v1beta/models/{MODEL}:streamGenerateContent",
                                   json={"contents": [{"parts": [{"text": "Hi"}]}]})

    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    documents = json.loads(response.content)
    assert "".join(part.get("text", "") for doc in documents for part in doc["candidates"][0]["content"]["parts"]) \
        == completion_text("cerebras")
    assert documents[-1]["candidates"][0]["finishReason"] == "STOP" and "usageMetadata" in documents[-1]


async def test_a_json_array_stream_that_fails_ends_with_the_error_element(start_proxy: StartProxy,
                                                                        providers: Providers) -> None:
    providers.cerebras.faults = Faults(break_after_events=2, remaining=1)
    proxy = await start_proxy(max_continuations=0)
    async with httpx.AsyncClient(base_url=root(proxy)) as http:
        response = await http.post(f"/v1beta/models/{MODEL}:streamGenerateContent", json=HI)

    documents = json.loads(response.content)
    assert response.status_code == 200 and all("candidates" in document for document in documents[:-1])
    assert documents[-1]["error"]["code"] >= 500 and documents[-1]["error"]["status"]


async def test_snake_case_fields_are_read_as_google_reads_them(proxy: Proxy, providers: Providers) -> None:
    body = {"system_instruction": {"parts": [{"text": "Be brief."}]}, "contents": [{"parts": [{"text": "Hi"}]}],
            "generation_config": {"max_output_tokens": 40, "top_k": 5}}
    async with httpx.AsyncClient(base_url=root(proxy)) as http:
        response = await http.post(f"/v1beta/models/{MODEL}:generateContent", json=body)

    assert response.status_code == 200
    sent = providers.chutes.received[-1] if providers.chutes.received else providers.cerebras.received[-1]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."} and sent["max_tokens"] == 40


async def test_client_keys_come_from_the_header_or_the_query(start_proxy: StartProxy, caplog: Any) -> None:
    proxy = await start_proxy(client_api_keys=("team-key",))
    caplog.set_level(logging.DEBUG)
    assert (await sdk(lambda: client(proxy, key="team-key").models.generate_content(model=MODEL, contents="Hi"))).text
    with pytest.raises(errors.ClientError) as caught:
        await sdk(lambda: client(proxy, key="wrong").models.generate_content(model=MODEL, contents="Hi"))
    assert caught.value.code == 401 and caught.value.status == "UNAUTHENTICATED"

    async with httpx.AsyncClient(base_url=root(proxy)) as http:
        by_query = await http.post(f"/v1beta/models/{MODEL}:generateContent?key=team-key",
                                   json={"contents": [{"parts": [{"text": "Hi"}]}]})
        unknown = await http.get("/v1beta/tunedModels?key=team-key")
    assert by_query.status_code == 200 and unknown.status_code == 404
    proxy_lines = [record.getMessage() for record in caplog.records if record.name.startswith("trioproxy")]
    assert any("status=404" in line for line in proxy_lines)  # the refused path was logged, without its query
    assert not any("team-key" in line for line in proxy_lines)


async def test_the_model_path_goes_through_aliases(start_proxy: StartProxy) -> None:
    proxy = await start_proxy(model_aliases=("gemini-*",))
    response = await sdk(lambda: client(proxy).models.generate_content(model="gemini-2.5-pro", contents="Hi"))

    assert response.text == completion_text("cerebras") and response.model_version == "gemini-2.5-pro"



@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "name"),
    [
        pytest.param(MODEL_PATH, {"contents": [{"parts": [{"image": "x"}]}]}, {}, 400, "INVALID_ARGUMENT", id="part-type"),
        pytest.param(MODEL_PATH, {"contents": [{"parts": [{"text": 5}]}]}, {}, 400, "INVALID_ARGUMENT", id="text-number"),
        pytest.param(MODEL_PATH, {"contents": [{"parts": [{"text": "a", "functionCall": {"name": "f"}}]}]}, {}, 400,
                     "INVALID_ARGUMENT", id="two-data-fields"),
        pytest.param(MODEL_PATH, {"contents": [{"parts": [{"fileData": {"fileUri": "gs://x"}}]}]}, {}, 400,
                     "INVALID_ARGUMENT", id="file-data"),
        pytest.param(MODEL_PATH, {"contents": [{"parts": [{"inlineData": {"mimeType": "audio/wav", "data": "AA=="}}]}]},
                     {}, 400, "INVALID_ARGUMENT", id="audio"),
        pytest.param(MODEL_PATH, {"contents": [
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "read_file", "response": {}}}]}]}, {}, 400,
                     "INVALID_ARGUMENT", id="unmatched-function-response"),
        pytest.param(MODEL_PATH, {"contents": [{"role": "assistant", "parts": [{"text": "Hi"}]}]}, {}, 400,
                     "INVALID_ARGUMENT", id="role-assistant"),
        pytest.param(MODEL_PATH, {"contents": []}, {}, 400, "INVALID_ARGUMENT", id="contents-empty"),
        pytest.param(MODEL_PATH, {**HI, "bogus": 1}, {}, 400, "INVALID_ARGUMENT", id="unknown-field"),
        pytest.param(MODEL_PATH, {**HI, "tools": [{"googleSearch": {}}]}, {}, 400, "INVALID_ARGUMENT", id="hosted-tool"),
        pytest.param(MODEL_PATH, {**HI, "generationConfig": {"candidateCount": 2}}, {}, 400, "INVALID_ARGUMENT",
                     id="two-candidates"),
        pytest.param(MODEL_PATH, {**HI, "cachedContent": "cachedContents/x"}, {}, 400, "INVALID_ARGUMENT", id="cache"),
        pytest.param(MODEL_PATH, [1], {}, 400, "INVALID_ARGUMENT", id="not-an-object"),
        pytest.param("/v1beta/models/qwen$3:generateContent", HI, {}, 400, "INVALID_ARGUMENT", id="odd-model"),
        pytest.param("/v1beta/models/a:b:generateContent", HI, {}, 400, "INVALID_ARGUMENT", id="colon-in-model"),
        pytest.param("/v1beta/models/gpt-4o:generateContent", HI, {}, 404, "NOT_FOUND", id="unknown-model"),
        pytest.param(f"/v1beta/models/{MODEL}:embedContent", HI, {}, 404, "NOT_FOUND", id="unknown-method"),
        pytest.param(MODEL_PATH + "?key=a", HI, {"x-goog-api-key": "a"}, 400, "INVALID_ARGUMENT", id="two-keys"),
    ],
)
async def test_bad_requests_get_google_shaped_errors(proxy: Proxy, providers: Providers, path: str, body: Any,
                                                     headers: dict[str, str], status: int, name: str) -> None:
    async with httpx.AsyncClient(base_url=root(proxy)) as http:
        response = await http.post(path, json=body, headers=headers)

    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (status, name) and error["message"]
    assert providers.cerebras.received == [] and providers.chutes.received == []


@pytest.mark.parametrize(
    ("headers", "status", "name"),
    [
        pytest.param({"content-type": "text/plain"}, 415, "INVALID_ARGUMENT", id="not-json"),
        pytest.param({"content-type": "application/json", "host": "evil.example"}, 403, "PERMISSION_DENIED",
                     id="rebound-host"),
        pytest.param({"content-type": "application/json", "origin": "http://evil.example"}, 403,
                     "PERMISSION_DENIED", id="foreign-origin"),
    ],
)
async def test_the_server_edge_checks_answer_in_google_shape(proxy: Proxy, providers: Providers,
                                                             headers: dict[str, str], status: int, name: str) -> None:
    async with httpx.AsyncClient(base_url=root(proxy)) as http:
        response = await http.post(MODEL_PATH, content=json.dumps(HI), headers=headers)

    assert response.status_code == status, response.text
    assert (response.json()["error"]["code"], response.json()["error"]["status"]) == (status, name)
    assert providers.cerebras.received == []


async def test_wrong_method_is_refused_in_google_shape(proxy: Proxy) -> None:
    async with httpx.AsyncClient(base_url=root(proxy)) as http:
        response = await http.get(MODEL_PATH)

    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
