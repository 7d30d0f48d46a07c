"""What the emulated model says: deterministic text, tool calls or a legacy function call."""

from __future__ import annotations

import json
from typing import Any

from attrs import Factory, define

from .actions import Json
from .arguments import tool_arguments
from .provider import EmulatedProvider


def prompt_tokens(body: Json) -> int:
    """Deterministic prompt size: `max(1, len(J) // 4)` where J is
    `json.dumps(messages, separators=(",", ":"))`, plus the same dump of `tools` when present
    (default `ensure_ascii=True`)."""
    size = len(_compact(body.get("messages", [])))
    if body.get("tools") is not None:
        size += len(_compact(body["tools"]))
    return max(1, size // 4)


def completion_text(flavor: str) -> str:
    """The text every plain completion of `flavor` consists of (one token per word)."""
    return f"Hello from emulated {flavor}. This deterministic reply has several words."


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


@define
class Call:
    name: str
    arguments: str
    id: str | None = None  # a tool call's; a legacy function call has none


@define
class Answer:
    """What the emulated model says: text, tool calls, or one legacy function call."""

    finish_reason: str
    completion_tokens: int
    content: str | None = None
    calls: list[Call] = Factory(list)
    legacy_function: bool = False


def answer(provider: EmulatedProvider, body: Json, cap: int | None, number: int) -> Answer:
    """Pick text, a tool call or a legacy function call, truncated to `cap` words.

    Once the conversation holds a tool result the answer is text, so an agent's tool loop
    comes to an end.
    """
    if _has_tool_results(body["messages"]):
        return _text_answer(provider, body, cap)
    tools = _chosen_tools(provider, body)
    if tools:
        calls, finishes, total = [], set(), 0
        for i, (name, arguments) in enumerate(tools):
            text, finish, tokens = _truncate(arguments, cap, "tool_calls")
            calls.append(Call(name, text, f"call_{number}" + (f"_{i}" if i else "")))
            finishes.add(finish)
            total += tokens
        return Answer("length" if "length" in finishes else "tool_calls", total, calls=calls)
    function = _legacy_function(body)
    if function is not None:
        name, arguments = function
        text, finish, tokens = _truncate(arguments, cap, "function_call")
        return Answer(finish, tokens, calls=[Call(name, text)], legacy_function=True)
    return _text_answer(provider, body, cap)


def _has_tool_results(messages: list[Any]) -> bool:
    """Whether a tool (or legacy function) result is anywhere in the conversation. One tool
    step per conversation: agents that add their own user turns after a step (notes, news of
    a background task finishing) would otherwise be sent into another step forever."""
    return any(isinstance(message, dict) and message.get("role") in ("tool", "function")
               for message in messages)


def _text_answer(provider: EmulatedProvider, body: Json, cap: int | None) -> Answer:
    text, finish, tokens = _truncate(_plain_text(provider, body), cap, "stop")
    return Answer(finish, tokens, content=text)


def _plain_text(provider: EmulatedProvider, body: Json) -> str:
    """`completion_text`, or as many of its words in a cycle as `completion_words` says."""
    wanted = provider.completion_words
    if wanted is None:
        return completion_text(provider.speaks_as or provider.flavor)
    count = max(1, int(wanted(body) if callable(wanted) else wanted))
    words = completion_text(provider.speaks_as or provider.flavor).split()
    return " ".join((words * (count // len(words) + 1))[:count])


def _truncate(text: str, cap: int | None, finish: str) -> tuple[str, str, int]:
    """(text, finish_reason, tokens) with one token per whitespace-separated word."""
    words = text.split()
    if cap is None or len(words) <= cap:
        return text, finish, len(words)
    return " ".join(words[:cap]), "length", cap


PARALLEL_CALLS = 2  # how many tools the emulated model calls at once when it may


def _chosen_tools(provider: EmulatedProvider, body: Json) -> list[tuple[str, str]]:
    """(name, arguments) of each tool to call: none when tools are absent or disabled; the
    first offered tool (or the one forced); the first two when `parallel_tool_calls` is true (or
    absent and the provider's default) and none is forced. Two, not every one: agents offer a
    dozen tools, and a model that calls them all at once (ask the user, spawn sub-agents, close
    the goal) sends an agent astray."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return []
    wanted = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    calls = [(str(function.get("name", "")), tool_arguments(function.get("parameters")))
             for function in (tool.get("function") or {} for tool in tools)
             if wanted is None or function.get("name") == wanted]
    parallel = body.get("parallel_tool_calls", provider.parallel_tool_calls_by_default) is True
    return calls[:PARALLEL_CALLS] if wanted is None and parallel else calls[:1]


def _legacy_function(body: Json) -> tuple[str, str] | None:
    """(name, arguments) for the pre-tools `functions` field, or None."""
    functions = body.get("functions")
    if body.get("tools") or not functions or not isinstance(functions[0], dict):
        return None
    return str(functions[0].get("name", "")), tool_arguments(functions[0].get("parameters"))

