"""Codex CLI 0.171 as it ships, through the Responses door: its request bodies replayed.

The bodies in `data/codex_0171/` were recorded from `codex exec` against `trioproxy --demo`
(default settings, only the long instruction texts shortened): the first turn (function tools,
the `multi_agent_v1` namespace, OpenAI's hosted `web_search`), the turn after a tool step, and a
turn of its goals feature, whose objective arrives as a `function_call_output` that names its
tool (`goal_objective` in namespace `agent`) instead of a `call_id`.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trio
import trio.testing

from support.proxies import Providers, Proxy, StartProxy

MODEL = "qwen-3-coder"
RECORDED = Path(__file__).parent / "data" / "codex_0171"


def recorded(name: str) -> dict[str, Any]:
    return json.loads((RECORDED / f"{name}.json").read_text())


def sse(body: bytes) -> list[dict[str, Any]]:
    """The JSON data of each event of a Responses stream."""
    return [json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: ")]


async def post(proxy: Proxy, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=10) as http:
        return await http.post("/responses", json=body, headers={"authorization": "Bearer sk-any"})


def namespace_first(body: dict[str, Any]) -> dict[str, Any]:
    """The recorded body with the namespace tool offered first, so the demo model calls into it."""
    body = copy.deepcopy(body)
    body["tools"].sort(key=lambda tool: tool["type"] != "namespace")
    return body


async def test_the_first_turn_goes_through_without_its_hosted_tool(
        proxy: Proxy, providers: Providers, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    response = await post(proxy, recorded("first_turn"))

    assert response.status_code == 200
    assert response.headers["x-trioproxy-dropped-tools"] == "web_search"
    events = sse(response.content)
    assert events[-1]["type"] == "response.completed"
    sent = providers.cerebras.received[-1]
    names = [tool["function"]["name"] for tool in sent["tools"]]
    assert names == ["exec_command", "write_stdin", "request_user_input", "view_image", "close_agent", "resume_agent",
                     "send_input", "spawn_agent", "wait_agent", "get_goal", "create_goal", "update_goal"]
    assert all(tool["type"] == "function" for tool in sent["tools"])
    await trio.testing.wait_all_tasks_blocked()  # the log line is written once the answer is out
    assert any("dropped_tools=web_search" in record.getMessage() for record in caplog.records)


async def test_hosted_tools_are_refused_when_the_operator_says_so(start_proxy: StartProxy, providers: Providers) -> None:
    proxy = await start_proxy(hosted_tools="refuse")
    response = await post(proxy, recorded("first_turn"))

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "unsupported_feature" and error["param"] == "tools" and "`web_search`" in error["message"]
    assert providers.cerebras.received == [] and providers.chutes.received == []


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "plain"])
async def test_a_call_into_a_namespace_comes_back_with_its_namespace(
        proxy: Proxy, providers: Providers, stream: bool) -> None:
    body = {**namespace_first(recorded("first_turn")), "stream": stream}
    response = await post(proxy, body)

    assert response.status_code == 200
    assert providers.cerebras.received[-1]["tools"][0]["function"]["name"] == "close_agent"  # flat upstream
    if stream:
        events = sse(response.content)
        items = [event["item"] for event in events if event["type"] in ("response.output_item.added", "response.output_item.done")]
        output = events[-1]["response"]["output"]
    else:
        items, output = [], response.json()["output"]
    calls = {(item["name"], item["namespace"]) for item in items + output if item["type"] == "function_call"}
    assert calls == {("close_agent", "multi_agent_v1"), ("resume_agent", "multi_agent_v1")}  # two at once


async def test_plain_function_calls_carry_no_namespace(proxy: Proxy) -> None:
    response = await post(proxy, {**recorded("first_turn"), "stream": False})

    calls = [item for item in response.json()["output"] if item["type"] == "function_call"]
    assert [call["name"] for call in calls] == ["exec_command", "write_stdin"]
    assert all("namespace" not in call for call in calls)


async def test_the_openai_sdk_reads_the_namespaced_call(proxy: Proxy) -> None:
    body = namespace_first(recorded("first_turn"))
    sdk = openai.AsyncOpenAI(base_url=proxy.base_url, api_key="sk-any", max_retries=0, timeout=10.0)
    response = await sdk.responses.create(model=MODEL, input=body["input"], tools=body["tools"], stream=False)

    call = next(item for item in response.output if item.type == "function_call")
    assert (call.name, getattr(call, "namespace", None)) == ("close_agent", "multi_agent_v1")


async def test_a_name_clash_between_namespaces_gets_distinct_flat_names(proxy: Proxy, providers: Providers) -> None:
    tool = {"type": "function", "name": "search", "parameters": {"type": "object", "properties": {}}}
    body = {"model": MODEL, "input": "find it", "parallel_tool_calls": True,
            "tools": [{"type": "namespace", "name": "docs", "description": "d", "tools": [tool]}, tool]}
    response = await post(proxy, body)

    sent = [t["function"]["name"] for t in providers.cerebras.received[-1]["tools"]]
    assert sent == ["docs__search", "search"]
    calls = [(item["name"], item.get("namespace")) for item in response.json()["output"] if item["type"] == "function_call"]
    assert calls == [("search", "docs"), ("search", None)]


async def test_the_tool_step_turn_goes_upstream_as_tool_messages(proxy: Proxy, providers: Providers) -> None:
    response = await post(proxy, recorded("tool_step"))

    assert response.status_code == 200 and sse(response.content)[-1]["type"] == "response.completed"
    messages = providers.cerebras.received[-1]["messages"]
    [calls] = [m["tool_calls"] for m in messages if m.get("tool_calls")]
    answered = [m["tool_call_id"] for m in messages if m["role"] == "tool"]
    assert [c["id"] for c in calls] == answered == ["call_1", "call_1_1"]


async def test_the_goal_turn_pairs_its_unnamed_output_with_a_consistent_call(proxy: Proxy, providers: Providers) -> None:
    body = recorded("goal_turn")
    first, second = await post(proxy, body), await post(proxy, body)

    assert first.status_code == second.status_code == 200
    sent = [received["messages"] for received in providers.cerebras.received[-2:]]
    assert sent[0] == sent[1]  # the same ids every turn: the provider's prompt cache keeps matching
    messages = sent[0]
    assistant = next(m for m in messages if m.get("tool_calls"))
    calls = {call["id"]: call["function"]["name"] for call in assistant["tool_calls"]}
    tool_messages = [m for m in messages if m["role"] == "tool"]
    assert messages[-len(tool_messages):] == tool_messages  # every output right after the calls it answers
    assert [calls[m["tool_call_id"]] for m in tool_messages] == [
        "exec_command", "close_agent", "spawn_agent", "create_goal", "update_goal", "goal_objective"]
    assert tool_messages[-1]["content"] == "emulated"
    assert tool_messages[-1]["tool_call_id"].startswith("call_")


async def test_an_output_named_by_tool_answers_the_open_call_of_that_tool(proxy: Proxy, providers: Providers) -> None:
    body = {"model": MODEL, "input": [
        {"type": "message", "role": "user", "content": "spawn one"},
        {"type": "function_call", "call_id": "call_a", "name": "spawn_agent", "namespace": "multi_agent_v1", "arguments": "{}"},
        {"type": "function_call_output", "name": "spawn_agent", "namespace": "multi_agent_v1", "output": "spawned"},
    ]}
    response = await post(proxy, body)

    assert response.status_code == 200
    messages = providers.cerebras.received[-1]["messages"]
    assert messages[-1] == {"role": "tool", "tool_call_id": "call_a", "content": "spawned"}
    assert [call["id"] for call in messages[-2]["tool_calls"]] == ["call_a"]


async def test_the_issue_repro_an_output_after_a_user_message(proxy: Proxy, providers: Providers) -> None:
    body = {"model": MODEL, "input": [{"type": "message", "role": "user", "content": "hi"},
                                      {"type": "function_call_output", "name": "goal_objective", "namespace": "agent", "output": "x"}]}
    response = await post(proxy, body)

    assert response.status_code == 200
    user, assistant, tool = providers.cerebras.received[-1]["messages"]
    assert assistant["tool_calls"][0]["function"] == {"name": "goal_objective", "arguments": "{}"}
    assert tool == {"role": "tool", "tool_call_id": assistant["tool_calls"][0]["id"], "content": "x"}


async def test_custom_tool_calls_and_outputs_in_the_history_are_forwarded(proxy: Proxy, providers: Providers) -> None:
    body = {"model": MODEL, "input": [
        {"type": "message", "role": "user", "content": "patch it"},
        {"type": "custom_tool_call", "call_id": "call_p", "name": "apply_patch", "input": "*** Begin Patch"},
        {"type": "custom_tool_call_output", "call_id": "call_p", "output": "Done"},
    ]}
    response = await post(proxy, body)

    assert response.status_code == 200
    messages = providers.cerebras.received[-1]["messages"]
    assert messages[1]["tool_calls"][0]["function"] == {"name": "apply_patch", "arguments": '{"input":"*** Begin Patch"}'}
    assert messages[2] == {"role": "tool", "tool_call_id": "call_p", "content": "Done"}


@pytest.mark.parametrize("item", [
    pytest.param({"type": "function_call_output", "output": "x"}, id="neither-call-id-nor-name"),
    pytest.param({"type": "custom_tool_call_output", "name": "", "output": "x"}, id="empty-name"),
    pytest.param({"type": "function_call_output", "call_id": 7, "output": "x"}, id="call-id-not-a-string"),
    pytest.param({"type": "function_call_output", "name": "t", "namespace": 3, "output": "x"}, id="namespace-not-a-string"),
])
async def test_an_output_that_answers_nothing_is_a_400_naming_the_item(
        proxy: Proxy, providers: Providers, item: dict[str, Any]) -> None:
    body = {"model": MODEL, "input": [{"type": "message", "role": "user", "content": "hi"}, item]}
    response = await post(proxy, body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert "input[1]" in error["message"] and error["param"] == "input"
    assert providers.cerebras.received == []


@pytest.mark.parametrize(("body", "param"), [
    pytest.param({"previous_response_id": "resp_1"}, "previous_response_id", id="previous-response-id"),
    pytest.param({"store": True}, "store", id="store-true"),
    pytest.param({"background": True}, "background", id="background"),
])
async def test_what_changes_the_answers_meaning_stays_a_clear_400(
        proxy: Proxy, providers: Providers, body: dict[str, Any], param: str) -> None:
    response = await post(proxy, {**recorded("first_turn"), **body})

    assert response.status_code == 400
    assert response.json()["error"]["param"] == param and response.json()["error"]["code"] == "unsupported_feature"
    assert providers.cerebras.received == []


async def test_a_websocket_attempt_gets_426_at_once(proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    """Codex's WebSocket try (`GET /v1/responses` with Upgrade): 426 makes it use HTTP at once."""
    caplog.set_level(logging.INFO)
    headers = {"connection": "Upgrade", "upgrade": "websocket", "sec-websocket-version": "13",
               "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "x-request-id": "ws-try"}
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=5) as http:
        response = await http.get("/responses", headers=headers)

    assert response.status_code == 426
    assert response.json()["error"]["code"] == "websocket_not_supported"
    assert response.headers["x-request-id"] == "ws-try"
    await trio.testing.wait_all_tasks_blocked()
    assert any("ws-try" in r.getMessage() and "status=426" in r.getMessage() for r in caplog.records)
