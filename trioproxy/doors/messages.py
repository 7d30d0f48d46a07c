"""The Anthropic Messages door (`POST /v1/messages`, what Claude Code speaks), over the chat pipeline."""

import time
import uuid
from collections.abc import Callable
from typing import Any

from ..errors import ProxyError, error_types, quoted
from ..jsoncodec import dump_json
from ..routing.models import ModelNames, ServedModel
from ..routing.request import ChatRequest
from ..routing.tokens import PromptEstimator
from .body import SSE_CONTENT_TYPE, json_object_body, optional_bool, sse_event, sse_events
from .chunks import first_choice
from .messages_stream import MessageStream, message_usage, stop_reason, tool_input

API = "messages"
# Accepted and left out: Anthropic-only features with no upstream equivalent.
_IGNORED = frozenset({"thinking", "metadata", "service_tier", "container", "context_management", "cache_control",
                      "output_config"})
_KNOWN = frozenset({"model", "messages", "system", "max_tokens", "stop_sequences", "temperature", "top_p", "top_k",
                    "tools", "tool_choice", "stream", *_IGNORED})


def error_body(error: ProxyError) -> dict[str, Any]:
    """Anthropic's error shape; the type follows from the status as Anthropic's API assigns it."""
    return {"type": "error", "error": {"type": error_types(error.status).anthropic, "message": error.message}}


def _bad(message: str) -> ProxyError:
    return ProxyError(400, message)


def parse(raw: bytes, models: ModelNames) -> "MessagesExchange":
    body = json_object_body(raw)
    route = models.resolve(body.get("model"))
    max_tokens = body.get("max_tokens")
    if type(max_tokens) is not int or max_tokens < 1:
        raise _bad("max_tokens: Field required (a positive integer).")
    chat = _chat_body(body)
    chat["max_tokens"] = max_tokens
    stream = optional_bool(body, "stream")
    if stream:
        chat["stream"] = True
    return MessagesExchange(ChatRequest(chat, stream, route), body["model"],
                            tuple(body.get("stop_sequences") or ()))


def count_tokens(raw: bytes, models: ModelNames, estimator: Callable[[str], PromptEstimator]) -> dict[str, int]:
    """`POST /v1/messages/count_tokens`: the estimate of the route's estimator, no provider call."""
    body = json_object_body(raw)
    route = models.resolve(body.get("model"))
    return {"input_tokens": estimator(route).estimate(_chat_body(body))[1]}


def _chat_body(body: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(key for key in body if key not in _KNOWN)
    if unknown:
        raise _bad(f"{unknown[0]}: Extra inputs are not permitted")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages: Field required (a non-empty array).")
    # Claude Code also puts system-role messages among the turns: they join the system prompt,
    # since the models' chat templates take one system message, at the start.
    turns = [message for message in messages if not _is_system(message)]
    system = [_system(body.get("system")), *(_system(m.get("content")) for m in messages if _is_system(m))]
    if not turns:
        raise _bad("messages: Field required (at least one user or assistant message).")
    chat: dict[str, Any] = {"model": body["model"], "messages": [*_joined(system), *_messages(turns)]}
    for key in ("temperature", "top_p", "top_k"):
        if body.get(key) is not None:
            chat[key] = body[key]
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(stop, str) for stop in stops):
            raise _bad("stop_sequences: must be an array of strings.")
        chat["stop"] = stops
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        chat.update(_tool_choice(body["tool_choice"]))
    return chat


def _is_system(message: Any) -> bool:
    return isinstance(message, dict) and message.get("role") == "system"


def _system(system: Any) -> str:
    """The text of a system prompt given as a string or as text blocks."""
    if system is None or isinstance(system, str):
        return system or ""
    if isinstance(system, list) and all(isinstance(b, dict) and b.get("type") == "text" for b in system):
        return "\n\n".join(str(block.get("text", "")) for block in system)
    raise _bad("system: must be a string or an array of text blocks.")


def _joined(parts: list[str]) -> list[dict[str, Any]]:
    text = "\n\n".join(part for part in parts if part)
    return [{"role": "system", "content": text}] if text else []


def _messages(messages: list[Any]) -> list[dict[str, Any]]:
    converted: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise _bad(f"messages.{index}: each message needs a role of user or assistant.")
        content = message.get("content")
        if isinstance(content, str):
            converted.append({"role": message["role"], "content": content})
        elif isinstance(content, list):
            convert = _assistant if message["role"] == "assistant" else _user
            converted.extend(convert(content, index))
        else:
            raise _bad(f"messages.{index}.content: must be a string or an array of content blocks.")
    return converted


def _blocks(content: list[Any], index: int) -> list[dict[str, Any]]:
    if not all(isinstance(block, dict) and isinstance(block.get("type"), str) for block in content):
        raise _bad(f"messages.{index}.content: every block must be an object with a type.")
    return content


def _user(content: list[Any], index: int) -> list[dict[str, Any]]:
    """Tool results become tool messages, which must come first: they answer the previous turn."""
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in _blocks(content, index):
        if block["type"] == "tool_result":
            if not isinstance(block.get("tool_use_id"), str):
                raise _bad(f"messages.{index}: tool_result needs a tool_use_id.")
            text = _result_text(block.get("content"), index)
            results.append({"role": "tool", "tool_call_id": block["tool_use_id"],
                            "content": f"Error: {text}" if block.get("is_error") else text})
        else:
            parts.append(_part(block, index))
    return results + ([{"role": "user", "content": parts}] if parts else [])


def _result_text(content: Any, index: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        return "\n".join(_part(block, index).get("text", "[image]") for block in _blocks(content, index))
    raise _bad(f"messages.{index}: tool_result content must be a string or an array of blocks.")


def _part(block: dict[str, Any], index: int) -> dict[str, Any]:
    if block["type"] == "text" and isinstance(block.get("text"), str):
        return {"type": "text", "text": block["text"]}
    if block["type"] == "image" and isinstance(block.get("source"), dict):
        source = block["source"]
        if source.get("type") == "base64" and isinstance(source.get("data"), str):
            return {"type": "image_url", "image_url": {"url": f"data:{source.get('media_type')};base64,{source['data']}"}}
        if source.get("type") == "url" and isinstance(source.get("url"), str):
            return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise ProxyError(400, f"messages.{index}: a `{quoted(block['type'])}` block cannot be forwarded; trioproxy supports "
                     "text, image, tool_use and tool_result blocks.", code="unsupported_feature")


def _assistant(content: list[Any], index: int) -> list[dict[str, Any]]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in _blocks(content, index):
        if block["type"] == "text":
            texts.append(str(block.get("text", "")))
        elif block["type"] == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise _bad(f"messages.{index}: tool_use needs an id and a name.")
            calls.append({"id": block["id"], "type": "function",
                          "function": {"name": block["name"], "arguments": dump_json(block.get("input", {})).decode()}})
        elif block["type"] not in ("thinking", "redacted_thinking"):  # the model's own thoughts stay out
            raise ProxyError(400, f"messages.{index}: an assistant `{quoted(block['type'])}` block cannot be forwarded.",
                             code="unsupported_feature")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return [message]


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("tools: must be an array.")
    converted = []
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type") not in (None, "custom"):
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise ProxyError(400, f"tools: `{quoted(kind)}` is a server tool the provider does not run; trioproxy forwards "
                             "client tools (name, description, input_schema) only.", code="unsupported_feature")
        if not isinstance(tool.get("name"), str) or not isinstance(tool.get("input_schema"), dict):
            raise _bad("tools: every tool needs a name and an input_schema object.")
        function = {"name": tool["name"], "parameters": tool["input_schema"]}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        converted.append({"type": "function", "function": function})
    return converted


def _tool_choice(choice: Any) -> dict[str, Any]:
    kind = choice.get("type") if isinstance(choice, dict) else None
    chosen: dict[str, Any]
    if kind == "auto":
        chosen = {"tool_choice": "auto"}
    elif kind == "any":
        chosen = {"tool_choice": "required"}
    elif kind == "none":
        chosen = {"tool_choice": "none"}
    elif kind == "tool" and isinstance(choice.get("name"), str):
        chosen = {"tool_choice": {"type": "function", "function": {"name": choice["name"]}}}
    else:
        raise _bad("tool_choice: must be auto, any, tool (with a name) or none.")
    if choice.get("disable_parallel_tool_use") is True:
        chosen["parallel_tool_calls"] = False
    return chosen


class MessagesExchange:
    """One Messages request: the chat request it became, and the message it turns into."""

    stream_content_type = SSE_CONTENT_TYPE

    def __init__(self, request: ChatRequest, model: str, stop_sequences: tuple[str, ...]) -> None:
        self.request = request
        self._model = model
        self._stops = stop_sequences
        self._id = f"msg_{uuid.uuid4().hex}"
        self._stream: MessageStream | None = None

    def answer(self, document: dict[str, Any]) -> dict[str, Any]:
        choice, message = first_choice(document)
        content: list[dict[str, Any]] = []
        if isinstance(message.get("content"), str) and message["content"]:
            content.append({"type": "text", "text": message["content"]})
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            content.append({"type": "tool_use", "id": call.get("id") or f"toolu_{uuid.uuid4().hex}",
                            "name": function.get("name") or "", "input": tool_input(function.get("arguments"))})
        reason, sequence = stop_reason(choice, self._stops)
        return {"id": self._id, "type": "message", "role": "assistant", "model": self._model, "content": content,
                "stop_reason": reason, "stop_sequence": sequence, "usage": message_usage(document.get("usage"))}

    def stream_events(self, documents: list[dict[str, Any]]) -> bytes:
        if self._stream is None:
            self._stream = MessageStream(self._id, self._model, self._stops)
        return sse_events(self._stream.feed(documents))

    def stream_end(self, error: ProxyError | None) -> bytes:
        if error is not None:
            return sse_event("error", error_body(error))
        stream = self._stream or MessageStream(self._id, self._model, self._stops)
        return sse_events(stream.end())


def models_list(models: ModelNames, created: int) -> dict[str, Any]:
    """Anthropic's model list (`GET /v1/models` with `anthropic-version`): one page, every route."""
    cards = [model_card(model, created) for model in models.models]
    return {"data": cards, "has_more": False, "first_id": cards[0]["id"], "last_id": cards[-1]["id"]}


def model_card(model: ServedModel, created: int) -> dict[str, Any]:
    """Anthropic's model object, with the route's context window (`max_input_tokens`) and output
    limit (`max_tokens`) when known."""
    limits = {"max_input_tokens": model.limits.context_window, "max_tokens": model.limits.output_tokens}
    created_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
    return {"type": "model", "id": model.name, "display_name": model.name, "created_at": created_at, "lifecycle": "active",
            **{key: value for key, value in limits.items() if value is not None}}
