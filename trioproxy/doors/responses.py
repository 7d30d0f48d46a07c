"""The OpenAI Responses door (`POST /v1/responses`, what Codex CLI speaks), over the chat pipeline.

trioproxy keeps no conversation state, so whatever needs it (`previous_response_id`, stored
responses, `background`, hosted tools) is refused with a 400 that says so, never dropped.
"""

import time
import uuid
from typing import Any

from ..errors import ProxyError, quoted
from ..routing.models import ModelNames
from ..routing.request import ChatRequest
from .body import check_function_tools, json_object_body, optional_bool, sse_events
from .chunks import first_choice
from .responses_stream import ResponseStream, incomplete_details, response_usage

API = "responses"
_SAMPLING = ("temperature", "top_p", "parallel_tool_calls", "user")
# Every field the door accepts: those it translates, and those that only steer OpenAI's own
# service (caching, tiers, telemetry, reasoning settings), which have nothing to forward.
_ACCEPTED = frozenset({"include", "reasoning", "metadata", "client_metadata", "prompt_cache_key", "prompt_cache_retention",
                      "safety_identifier", "service_tier", "stream_options", "truncation", "top_logprobs",
                      "max_tool_calls", "store", "instructions", "input", "model", "stream", "tools",
                      "tool_choice", "text", "max_output_tokens", *_SAMPLING})
_STATEFUL = {
    "previous_response_id": "trioproxy keeps no conversation state: send the whole conversation in `input` instead of `previous_response_id`.",
    "conversation": "trioproxy keeps no conversation state: send the whole conversation in `input` instead of `conversation`.",
    "background": "trioproxy does not run responses in the background: leave `background` unset or false.",
    "prompt": "trioproxy has no stored prompt templates: send the prompt in `instructions` and `input`.",
}


def no_stored_responses() -> ProxyError:
    return ProxyError(400, "trioproxy keeps no conversation state, so there are no stored responses to read, cancel or delete.",
                      code="unsupported_feature")


def _bad(message: str, param: str | None = None) -> ProxyError:
    return ProxyError(400, message, code="invalid_request", param=param)


def parse(raw: bytes, models: ModelNames) -> "ResponsesExchange":
    body = json_object_body(raw)
    route = models.resolve(body.get("model"))
    for key, why in _STATEFUL.items():
        if body.get(key) not in (None, False):
            raise ProxyError(400, why, code="unsupported_feature", param=key)
    if body.get("store") is True:
        raise ProxyError(400, "trioproxy keeps no conversation state: send `store: false` (or leave it out).",
                         code="unsupported_feature", param="store")
    unknown = sorted(key for key in body if key not in _ACCEPTED)
    if unknown:
        raise _bad(f"Unsupported parameter: `{quoted(unknown[0])}`.", quoted(unknown[0]))
    chat: dict[str, Any] = {"model": body["model"], "messages": _messages(body)}
    if not chat["messages"]:
        raise _bad("`input` must hold at least one message.", "input")
    for key in _SAMPLING:
        if body.get(key) is not None:
            chat[key] = body[key]
    if body.get("max_output_tokens") is not None:
        budget = body["max_output_tokens"]
        if type(budget) is not int or budget < 1:
            raise _bad("`max_output_tokens` must be a positive integer.", "max_output_tokens")
        chat["max_completion_tokens"] = budget
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
        check_function_tools(chat["tools"])
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    if (response_format := _response_format(body.get("text"))) is not None:
        chat["response_format"] = response_format
    stream = optional_bool(body, "stream")
    if stream:
        chat["stream"] = True
    return ResponsesExchange(ChatRequest(chat, stream, route), _echo(body))


def _echo(body: dict[str, Any]) -> dict[str, Any]:
    """The request's settings as the response object repeats them."""
    return {
        "model": body["model"],
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "text": body.get("text") or {"format": {"type": "text"}},
        "metadata": body.get("metadata") or {},
        "store": False,
        "truncation": "disabled",
    }


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _bad("`instructions` must be a string.", "instructions")
        messages.append({"role": "system", "content": instructions})
    items = body.get("input")
    if isinstance(items, str):
        return [*messages, {"role": "user", "content": items}]
    if not isinstance(items, list):
        raise _bad("`input` is required: a string or an array of items.", "input")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise _bad(f"`input[{index}]` must be an object.", "input")
        _append_item(messages, item, index)
    return messages


def _append_item(messages: list[dict[str, Any]], item: dict[str, Any], index: int) -> None:
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise _bad(f"`input[{index}].role` must be user, assistant, system or developer.", "input")
        messages.append({"role": "system" if role == "developer" else role,
                         "content": _content(item.get("content"), index)})
    elif kind == "function_call":
        call = {"id": _string(item, "call_id", index), "type": "function",
                "function": {"name": _string(item, "name", index), "arguments": _string(item, "arguments", index)}}
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant":  # parallel calls, or text then a call
            last.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item.get("output")
        text = output if isinstance(output, str) else _text_of(_content(output, index))
        messages.append({"role": "tool", "tool_call_id": _string(item, "call_id", index), "content": text})
    elif kind == "reasoning":
        return  # the provider's own thinking, sent back by some clients: not for the next turn
    elif kind == "item_reference":
        raise ProxyError(400, "trioproxy keeps no conversation state: `item_reference` items cannot be resolved; send the items themselves.",
                         code="unsupported_feature", param="input")
    else:
        raise ProxyError(400, f"`input[{index}]` is a `{quoted(kind)}` item, which trioproxy cannot forward: it supports messages, function calls and their outputs.",
                         code="unsupported_feature", param="input")


def _string(item: dict[str, Any], key: str, index: int) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise _bad(f"`input[{index}].{key}` must be a string.", "input")
    return value


def _content(content: Any, index: int) -> str | list[dict[str, Any]]:
    """Responses content (a string or parts) as chat content."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad(f"`input[{index}].content` must be a string or an array of parts.", "input")
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


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("`tools` must be an array.", "tools")
    converted = []
    for tool in tools:
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "namespace":  # a named group of function tools (Codex CLI sends these)
            converted += _tools(tool.get("tools") or [])
            continue
        if kind != "function":
            raise ProxyError(400, f"trioproxy forwards function tools only; `{quoted(kind)}` is a hosted tool the provider does not run.",
                             code="unsupported_feature", param="tools")
        if not isinstance(tool.get("name"), str):
            raise _bad("Every function tool needs a `name`.", "tools")
        function = {key: tool[key] for key in ("name", "description", "parameters", "strict") if tool.get(key) is not None}
        converted.append({"type": "function", "function": function})
    return converted


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise _bad("`tool_choice` must be auto, none, required or a function by name.", "tool_choice")


def _response_format(text: Any) -> dict[str, Any] | None:
    if text is None:
        return None
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None or (isinstance(fmt, dict) and fmt.get("type") == "text"):
        return None
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        schema = {key: fmt[key] for key in ("name", "schema", "strict", "description") if key in fmt}
        return {"type": "json_schema", "json_schema": schema}
    raise _bad("`text.format` must be text, json_object or json_schema with a schema.", "text")


class ResponsesExchange:
    """One Responses request: the chat request it became, and the response object it turns into."""

    def __init__(self, request: ChatRequest, echo: dict[str, Any]) -> None:
        self.request = request
        self._shell = {"id": f"resp_{uuid.uuid4().hex}", "object": "response", "created_at": int(time.time()),
                       "error": None, "incomplete_details": None, **echo}
        self._stream: ResponseStream | None = None

    def answer(self, document: dict[str, Any]) -> dict[str, Any]:
        choice, message = first_choice(document)
        output: list[dict[str, Any]] = []
        text = message.get("content")
        if isinstance(text, str) and text:
            output.append({"type": "message", "id": f"msg_{uuid.uuid4().hex}", "status": "completed", "role": "assistant",
                           "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]})
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            output.append({"type": "function_call", "id": f"fc_{uuid.uuid4().hex}", "call_id": call.get("id") or "",
                           "name": function.get("name") or "", "arguments": function.get("arguments") or "",
                           "status": "completed"})
        details = incomplete_details(choice.get("finish_reason"))
        return {**self._shell, "status": "incomplete" if details else "completed", "incomplete_details": details,
                "output": output, "usage": response_usage(document.get("usage"))}

    def stream_events(self, documents: list[dict[str, Any]]) -> bytes:
        if self._stream is None:
            self._stream = ResponseStream(self._shell)
        return sse_events(self._stream.feed(documents))

    def stream_end(self, error: ProxyError | None) -> bytes:
        stream = self._stream or ResponseStream(self._shell)
        return sse_events(stream.end(error))

