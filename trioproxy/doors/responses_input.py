"""The Responses door's `instructions` and `input` items as chat messages.

Tool outputs are paired with the calls they answer by `call_id`. Codex CLI also sends outputs
that name a tool instead (`{"type": "function_call_output", "name": "goal_objective",
"namespace": "agent", "output": ...}`, with no call before them): such an output answers the
earliest unanswered call of that tool, or, when there is none, a call made up for it with an id
derived from the item, so the provider sees a well-formed conversation and the same ids on
every turn (its prompt cache keeps matching).
"""

import hashlib
from typing import Any

from ..errors import ProxyError, quoted
from ..jsoncodec import dump_json
from .responses_tools import ToolNames

_OUTPUTS = ("function_call_output", "custom_tool_call_output")
_CALLS = ("function_call", "custom_tool_call")


def _bad(message: str) -> ProxyError:
    return ProxyError(400, message, code="invalid_request", param="input")


def chat_messages(body: dict[str, Any], names: ToolNames) -> list[dict[str, Any]]:
    """`instructions` and `input` as chat messages. Raises ProxyError (400) naming the bad item."""
    history = _History(names)
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise ProxyError(400, "`instructions` must be a string.", code="invalid_request", param="instructions")
        history.messages.append({"role": "system", "content": instructions})
    items = body.get("input")
    if isinstance(items, str):
        return [*history.messages, {"role": "user", "content": items}]
    if not isinstance(items, list):
        raise _bad("`input` is required: a string or an array of items.")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise _bad(f"`input[{index}]` must be an object.")
        history.add(item, index)
    return history.messages


class _History:
    """Chat messages being built from items, and the tool calls not yet answered."""

    def __init__(self, names: ToolNames) -> None:
        self.messages: list[dict[str, Any]] = []
        self._names = names
        self._unanswered: list[tuple[str, str]] = []  # (call id, flat tool name), oldest first
        self._calls_message: dict[str, Any] | None = None  # the assistant message whose calls are being answered

    def add(self, item: dict[str, Any], index: int) -> None:
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise _bad(f"`input[{index}].role` must be user, assistant, system or developer.")
            self._calls_message = None
            self.messages.append({"role": "system" if role == "developer" else role,
                                  "content": _content(item.get("content"), index)})
        elif kind in _CALLS:
            self._call(item, index, kind)
        elif kind in _OUTPUTS:
            self._output(item, index)
        elif kind == "reasoning":
            return  # the provider's own thinking, sent back by some clients: not for the next turn
        elif kind == "item_reference":
            raise ProxyError(400, "trioproxy keeps no conversation state: `item_reference` items cannot be resolved; send the items themselves.",
                             code="unsupported_feature", param="input")
        else:
            raise ProxyError(400, f"`input[{index}]` is a `{quoted(kind)}` item, which trioproxy cannot forward: it supports messages, function calls and their outputs.",
                             code="unsupported_feature", param="input")

    def _call(self, item: dict[str, Any], index: int, kind: str) -> None:
        name = self._names.flat(_namespace(item, index), _string(item, "name", index))
        if kind == "function_call":
            arguments = _string(item, "arguments", index)
        else:  # a freeform tool's input is text; chat arguments are a JSON object
            arguments = dump_json({"input": _string(item, "input", index)}).decode()
        call_id = _string(item, "call_id", index)
        self._append_call({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})

    def _append_call(self, call: dict[str, Any]) -> None:
        last = self.messages[-1] if self.messages else None
        if last is not None and last["role"] == "assistant":  # parallel calls, or text then a call
            last.setdefault("tool_calls", []).append(call)
        else:
            last = {"role": "assistant", "content": None, "tool_calls": [call]}
            self.messages.append(last)
        self._calls_message = last
        self._unanswered.append((call["id"], call["function"]["name"]))

    def _output(self, item: dict[str, Any], index: int) -> None:
        output = item.get("output")
        text = output if isinstance(output, str) else _text_of(_content(output, index))
        call_id = item.get("call_id")
        if call_id is not None and not isinstance(call_id, str):
            raise _bad(f"`input[{index}].call_id` must be a string.")
        if call_id is None:
            call_id = self._answered_call(item, index)
        self._unanswered = [pending for pending in self._unanswered if pending[0] != call_id]
        self.messages.append({"role": "tool", "tool_call_id": call_id, "content": text})

    def _answered_call(self, item: dict[str, Any], index: int) -> str:
        """The id of the call an output without `call_id` answers, found by tool name or made up."""
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise _bad(f"`input[{index}]` ({item.get('type')}) needs a `call_id`, or the `name` of the tool whose output it is.")
        flat = self._names.flat(_namespace(item, index), name)
        for call_id, called in self._unanswered:
            if called == flat:
                return call_id
        seed = item.get("id") if isinstance(item.get("id"), str) else f"{index}:{item.get('namespace')}:{name}"
        call = {"id": "call_" + hashlib.sha256(seed.encode()).hexdigest()[:24], "type": "function",
                "function": {"name": flat, "arguments": "{}"}}
        # After other tool outputs, the made-up call joins the calls they answer (a tool message
        # must follow the assistant message that made its call); anywhere else it gets its own.
        if self._calls_message is not None and self.messages[-1]["role"] == "tool":
            self._calls_message["tool_calls"].append(call)
            self._unanswered.append((call["id"], flat))
        else:
            self._append_call(call)
        return call["id"]


def _namespace(item: dict[str, Any], index: int) -> str | None:
    namespace = item.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise _bad(f"`input[{index}].namespace` must be a string.")
    return namespace or None


def _string(item: dict[str, Any], key: str, index: int) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise _bad(f"`input[{index}].{key}` must be a string.")
    return value


def _content(content: Any, index: int) -> str | list[dict[str, Any]]:
    """Responses content (a string or parts) as chat content."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad(f"`input[{index}].content` must be a string or an array of parts.")
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text", "summary_text") and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            parts.append({"type": "text", "text": part["refusal"]})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            image = {"url": part["image_url"], **({"detail": part["detail"]} if part.get("detail") else {})}
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise ProxyError(400, f"`input[{index}]` has a content part trioproxy cannot forward ({quoted(repr(kind))}); "
                             "it supports input_text, output_text and input_image with an image_url.",
                             code="unsupported_feature", param="input")
    return parts


def _text_of(content: str | list[dict[str, Any]]) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)
