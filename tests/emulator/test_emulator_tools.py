"""The emulated model as a coding agent meets it: tool-call arguments that satisfy the JSON
Schema the tool offers, always the same ones, and a tool loop that ends with a text answer.

Everything runs against real emulated servers on 127.0.0.1; the arguments are checked with
`jsonschema`, an independent validator, not with the emulator's own reading of the schema.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest
import trio

from support.emulator_http import post, start, stream_events
from support.proxies import Proxy
from trioproxy.testing.emulator import chutes, completion_text

# Codex CLI's shell tool: `command` is an array (Codex refused `"command": "emulated"`).
SHELL = {"type": "object", "additionalProperties": False, "required": ["command"],
         "properties": {"command": {"type": "array", "items": {"type": "string"}},
                        "workdir": {"type": "string"}, "timeout_ms": {"type": "number"}}}

SCHEMAS: dict[str, dict[str, Any]] = {
    "shell": SHELL,
    "types": {"type": "object", "required": ["text", "count", "ratio", "flag", "nothing"],
              "properties": {"text": {"type": "string"}, "count": {"type": "integer"},
                             "ratio": {"type": "number"}, "flag": {"type": "boolean"},
                             "nothing": {"type": "null"}}},
    "enum_const_default": {
        "type": "object", "required": ["mode", "version", "depth"],
        "properties": {"mode": {"type": "string", "enum": ["read", "write"]},
                       "version": {"const": 2}, "depth": {"type": "integer", "default": 3}}},
    "nested": {
        "type": "object", "required": ["edit"],
        "properties": {"edit": {
            "type": "object", "required": ["file", "changes"],
            "properties": {
                "file": {"type": "string"},
                "changes": {"type": "array", "minItems": 2, "items": {
                    "type": "object", "required": ["line", "text"],
                    "properties": {"line": {"type": "integer", "minimum": 1},
                                   "text": {"type": "string"}}}}}}}},
    "unions": {
        "type": "object", "required": ["target", "limit", "maybe"],
        "properties": {"target": {"anyOf": [{"type": "integer", "minimum": 10},
                                            {"type": "string"}]},
                       "limit": {"oneOf": [{"type": "string", "enum": ["all"]},
                                           {"type": "integer"}]},
                       "maybe": {"type": ["null", "string"]}}},
    "numbers": {
        "type": "object", "required": ["small", "between", "step", "negative", "open"],
        "properties": {"small": {"type": "integer", "minimum": 5, "maximum": 10},
                       "between": {"type": "number", "exclusiveMinimum": 2.5,
                                   "exclusiveMaximum": 3},
                       "step": {"type": "integer", "minimum": 10, "multipleOf": 7},
                       "negative": {"type": "number", "maximum": -3},
                       "open": {"type": "integer", "exclusiveMaximum": 0}}},
    "strings": {
        "type": "object",
        "required": ["when", "day", "mail", "link", "id", "ip", "long", "short"],
        "properties": {"when": {"type": "string", "format": "date-time"},
                       "day": {"type": "string", "format": "date"},
                       "mail": {"type": "string", "format": "email"},
                       "link": {"type": "string", "format": "uri"},
                       "id": {"type": "string", "format": "uuid"},
                       "ip": {"type": "string", "format": "ipv4"},
                       "long": {"type": "string", "minLength": 20},
                       "short": {"type": "string", "maxLength": 3}}},
    "arrays": {
        "type": "object", "required": ["unique", "none", "pair"],
        "properties": {"unique": {"type": "array", "minItems": 3, "uniqueItems": True,
                                  "items": {"type": "string"}},
                       "none": {"type": "array", "maxItems": 0},
                       "pair": {"type": "array", "prefixItems": [{"type": "integer"},
                                                                 {"type": "boolean"}],
                                "items": False}}},
    "refs": {
        "type": "object", "required": ["point", "both"],
        "properties": {"point": {"$ref": "#/$defs/point"},
                       "both": {"allOf": [{"$ref": "#/$defs/point"},
                                          {"required": ["label"],
                                           "properties": {"label": {"type": "string"}}}]}},
        "$defs": {"point": {"type": "object", "required": ["x", "y"],
                            "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}}}},
}


def tool(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


def assert_valid(arguments: str, schema: dict[str, Any]) -> Any:
    """The parsed arguments, after `jsonschema` found them valid for `schema`."""
    value = json.loads(arguments)
    validator = jsonschema.Draft202012Validator(schema,
                                                format_checker=jsonschema.FormatChecker())
    validator.validate(value)
    return value


async def offered_arguments(nursery: trio.Nursery, parameters: dict[str, Any]) -> Any:
    """The arguments a fresh emulated Chutes passes to the one tool offered."""
    provider = chutes()
    body = {"model": provider.model, "messages": [{"role": "user", "content": "Do it."}],
            "tools": [tool("act", parameters)]}
    async with await start(nursery, provider) as client:
        response = (await post(client, body)).json()
    return json.loads(response["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])


# --------------------------------------------------------------------------- arguments


async def test_every_offered_schema_gets_arguments_it_accepts(nursery: trio.Nursery) -> None:
    provider = chutes()
    tools = [tool(name, schema) for name, schema in SCHEMAS.items()]
    async with await start(nursery, provider) as client:
        for name, schema in SCHEMAS.items():
            body = {"model": provider.model, "messages": [{"role": "user", "content": "Do it."}], "tools": tools,
                    "tool_choice": {"type": "function", "function": {"name": name}}}
            [call] = (await post(client, body)).json()["choices"][0]["message"]["tool_calls"]
            assert call["function"]["name"] == name
            assert_valid(call["function"]["arguments"], schema)


@pytest.mark.parametrize(("parallel", "called"), [
    pytest.param(None, ["shell"], id="first-tool"),
    pytest.param(False, ["shell"], id="no-parallel-first-tool"),
    pytest.param(True, ["shell", "types"], id="parallel-first-two"),
])
async def test_which_offered_tools_are_called(nursery: trio.Nursery, parallel: bool | None, called: list[str]) -> None:
    """One tool, the first offered; the first two when parallel calls are allowed, never every
    one (an agent offering a dozen tools would get a dozen calls at once)."""
    provider = chutes()
    body = {"model": provider.model, "messages": [{"role": "user", "content": "Do it all."}],
            "tools": [tool(name, schema) for name, schema in SCHEMAS.items()],
            **({} if parallel is None else {"parallel_tool_calls": parallel})}
    async with await start(nursery, provider) as client:
        calls = (await post(client, body)).json()["choices"][0]["message"]["tool_calls"]
    assert [call["function"]["name"] for call in calls] == called


@pytest.mark.parametrize(("parameters", "expected"), [
    pytest.param(SHELL, {"command": ["emulated"]}, id="array-of-strings-optional-left-out"),
    pytest.param(SCHEMAS["enum_const_default"], {"mode": "read", "version": 2, "depth": 3},
                 id="first-enum-const-default"),
    pytest.param(SCHEMAS["unions"], {"target": 10, "limit": "all", "maybe": "emulated"},
                 id="first-union-branch-non-null-type"),
    pytest.param(SCHEMAS["numbers"],
                 {"small": 5, "between": 2.75, "step": 14, "negative": -3, "open": -1},
                 id="numbers-inside-their-bounds"),
    pytest.param({"type": "object", "required": ["path"],
                  "properties": {"path": {"type": "string"}, "mode": {"type": "string"}}},
                 {"path": "emulated"}, id="only-required-properties"),
    pytest.param({"type": "object", "required": ["files"], "properties": {"files": {
        "type": "array", "items": {"type": "object", "required": ["name"],
                                   "properties": {"name": {"type": "string"}}}}}},
                 {"files": [{"name": "emulated"}]}, id="array-of-nested-objects"),
    pytest.param({"type": "object", "properties": {"path": {"type": "string"}}}, {},
                 id="nothing-required"),
])
async def test_arguments_take_the_first_fitting_value(
        nursery: trio.Nursery, parameters: dict[str, Any], expected: dict[str, Any]) -> None:
    assert await offered_arguments(nursery, parameters) == expected


async def test_arguments_are_the_same_every_time_and_streamed_alike(
        nursery: trio.Nursery) -> None:
    first, second = chutes(), chutes()
    body = {"model": first.model, "messages": [{"role": "user", "content": "Edit it."}],
            "tools": [tool("edit", SCHEMAS["nested"])]}
    async with await start(nursery, first) as one, await start(nursery, second) as other:
        plain = [(await post(client, body)).json()["choices"][0]["message"]["tool_calls"][0]
                 ["function"]["arguments"] for client in (one, one, other)]
        events = await stream_events(one, {**body, "stream": True})
    streamed = "".join(delta["tool_calls"][0]["function"]["arguments"]
                       for delta in (event["choices"][0]["delta"] for event in events[:-1])
                       if "tool_calls" in delta)
    assert plain[0] == plain[1] == plain[2] == streamed
    edit = assert_valid(streamed, SCHEMAS["nested"])["edit"]
    assert len(edit["changes"]) == 2 and edit["changes"][0]["line"] >= 1


# --------------------------------------------------------------------------- the loop ends


CALL = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_1", "type": "function", "function": {"name": "shell", "arguments": "{}"}}]}
RESULT = {"role": "tool", "tool_call_id": "call_1", "content": "file.txt"}
ASK = {"role": "user", "content": "List the files."}


@pytest.mark.parametrize(("messages", "functions", "expected"), [
    pytest.param([ASK], False, "tool_calls", id="question-calls-a-tool"),
    pytest.param([ASK, CALL, RESULT], False, "stop", id="tool-result-gets-text"),
    pytest.param([ASK, CALL, {**RESULT, "tool_call_id": "call_2"}, RESULT], False, "stop",
                 id="several-results-get-text"),
    pytest.param([ASK, CALL, RESULT, {"role": "user", "content": "<note>cwd is /tmp</note>"}],
                 False, "stop", id="result-then-a-client-note-gets-text"),
    pytest.param([ASK, CALL, RESULT, {"role": "assistant", "content": "Done."}, ASK], False,
                 "stop", id="one-tool-step-per-conversation"),
    pytest.param([ASK], True, "function_call", id="legacy-question-calls-the-function"),
    pytest.param([ASK, {"role": "assistant", "content": None,
                        "function_call": {"name": "shell", "arguments": "{}"}},
                  {"role": "function", "name": "shell", "content": "file.txt"}], True, "stop",
                 id="legacy-function-result-gets-text"),
])
async def test_a_tool_loop_ends_with_text_after_the_results(
        nursery: trio.Nursery, messages: list[dict[str, Any]], functions: bool,
        expected: str) -> None:
    provider = chutes()
    offered = ({"functions": [{"name": "shell", "parameters": SHELL}]} if functions
               else {"tools": [tool("shell", SHELL)]})
    async with await start(nursery, provider) as client:
        body = (await post(client, {"model": provider.model, "messages": messages,
                                    **offered})).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == expected
    if expected == "stop":
        assert choice["message"] == {"role": "assistant", "content": completion_text("chutes")}


async def test_an_agent_loop_through_the_proxy_runs_one_tool_step_and_ends(
        proxy: Proxy) -> None:
    """What an agent does: call tools until the model answers in text (bounded here)."""
    client = openai.AsyncOpenAI(base_url=proxy.base_url, api_key="sk-agent", max_retries=0,
                                timeout=10.0)
    tools: list[Any] = [tool("shell", SHELL), tool("edit", SCHEMAS["nested"])]
    messages: list[Any] = [ASK]
    tool_steps = 0
    async with client:
        for _ in range(5):
            completion = await client.chat.completions.create(
                model="qwen-3-coder", messages=messages, tools=tools)
            message = completion.choices[0].message
            if not message.tool_calls:
                break
            tool_steps += 1
            messages.append(message.model_dump(exclude_none=True))
            for call in message.tool_calls:
                command = assert_valid(call.function.arguments, SHELL)["command"]
                messages.append({"role": "tool", "tool_call_id": call.id,
                                 "content": f"ran {command}"})
    assert tool_steps == 1
    assert completion.choices[0].finish_reason == "stop"
    assert message.content == completion_text("cerebras")
