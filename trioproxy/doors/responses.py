"""The OpenAI Responses door (`POST /v1/responses`, what Codex CLI speaks), over the chat pipeline.

trioproxy keeps no conversation state, so whatever needs it (`previous_response_id`, stored
responses, `background`) is refused with a 400 that says so, never dropped. Hosted tools
(`web_search`, ...) that no chat provider runs are left out and named in
`ChatRequest.dropped_tools` (the server refuses them instead when told to).
"""

import time
import uuid
from typing import Any

from ..errors import ProxyError, quoted
from ..routing.models import ModelNames
from ..routing.request import ChatRequest
from .body import SSE_CONTENT_TYPE, check_function_tools, json_object_body, optional_bool, sse_events
from .chunks import first_choice
from .responses_input import chat_messages
from .responses_stream import ResponseStream, incomplete_details, response_usage
from .responses_tools import ToolNames, chat_tools, function_name

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
    names = ToolNames()
    tools, dropped = chat_tools(body["tools"], names) if body.get("tools") is not None else ([], [])
    chat: dict[str, Any] = {"model": body["model"], "messages": chat_messages(body, names)}
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
    if body.get("tool_choice") is not None:
        choice = _tool_choice(body["tool_choice"], names)
        if tools:  # a choice among no tools (all were hosted ones, left out) is one a provider refuses
            chat["tool_choice"] = choice
    if tools:
        check_function_tools(tools)
        chat["tools"] = tools
    if (response_format := _response_format(body.get("text"))) is not None:
        chat["response_format"] = response_format
    stream = optional_bool(body, "stream")
    if stream:
        chat["stream"] = True
    return ResponsesExchange(ChatRequest(chat, stream, route, tuple(dropped)), _echo(body), names)


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


def _tool_choice(choice: Any, names: ToolNames) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        namespace = choice.get("namespace") if isinstance(choice.get("namespace"), str) else None
        return {"type": "function", "function": {"name": names.flat(namespace, choice["name"])}}
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

    stream_content_type = SSE_CONTENT_TYPE

    def __init__(self, request: ChatRequest, echo: dict[str, Any], names: ToolNames) -> None:
        self.request = request
        self._names = names
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
                           **function_name(self._names, function.get("name") or ""),
                           "arguments": function.get("arguments") or "", "status": "completed"})
        details = incomplete_details(choice.get("finish_reason"))
        return {**self._shell, "status": "incomplete" if details else "completed", "incomplete_details": details,
                "output": output, "usage": response_usage(document.get("usage"))}

    def stream_events(self, documents: list[dict[str, Any]]) -> bytes:
        if self._stream is None:
            self._stream = ResponseStream(self._shell, self._names)
        return sse_events(self._stream.feed(documents))

    def stream_end(self, error: ProxyError | None) -> bytes:
        stream = self._stream or ResponseStream(self._shell, self._names)
        return sse_events(stream.end(error))

