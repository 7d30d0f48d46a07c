"""The 4xx a well-formed JSON request can still earn before it touches any quota."""

from __future__ import annotations

import json

from .actions import Json, Reply
from .answers import prompt_tokens
from .errors import error, model_not_found, model_retired
from .provider import EmulatedProvider


def validate(provider: EmulatedProvider, body: Json) -> Reply | None:
    """The 4xx (503 for a retired model) a valid-JSON request earns before touching any quota, or None."""
    if body.get("model") in provider.retired_models and body.get("model") not in provider.models():
        return model_retired(provider.flavor, body["model"])
    if body.get("model") not in provider.models():
        return model_not_found(provider.flavor, body.get("model"))
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return error(provider.flavor, 400, "'messages' must be a non-empty array.",
                     "invalid_request_error", "messages", "wrong_api_format")
    for name in ("max_completion_tokens", "max_tokens"):
        cap = body.get(name)
        if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
            return error(provider.flavor, 400, f"{name} must be a positive integer.",
                         "invalid_request_error", name, "wrong_api_format")
    if provider.flavor != "cerebras":
        return None
    return _cerebras_strict(body) or _context_check(provider, body)


def _cerebras_strict(body: Json) -> Reply | None:
    """Cerebras's 400 wrong_api_format for fields it does not support, or None."""
    problem = _unsupported_field(body)
    if problem is None:
        return None
    param, message = problem
    return error("cerebras", 400, message, "invalid_request_error", param, "wrong_api_format")


def _unsupported_field(body: Json) -> tuple[str, str] | None:
    """(param, message) for the first field Cerebras rejects, or None."""
    for name in ("store", "top_k", "min_p"):
        if name in body:
            return name, f"Unsupported parameter: '{name}' is not supported by this model."
    if body.get("parallel_tool_calls") is False:
        return ("parallel_tool_calls",
                "Unsupported value: 'parallel_tool_calls=false' is not supported by this model.")
    for tool in body.get("tools") or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and function.get("strict") is True:
            return ("tools", "Unsupported value: 'strict: true' in tools[].function is not "
                             "supported by this model.")
    if "tool_choice" in body and body["tool_choice"] not in ("auto", "none", None):
        return ("tool_choice", "Unsupported value: 'tool_choice' must be 'auto' or 'none' "
                               "for this model.")
    if _has_lone_surrogate(body):
        return "messages", "Request contains invalid Unicode (lone surrogate)."
    return None


def _has_lone_surrogate(body: Json) -> bool:
    # A JSON "\ud800" escape decodes to a str that UTF-8 cannot encode.
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _context_check(provider: EmulatedProvider, body: Json) -> Reply | None:
    """Cerebras's 400 context_length_exceeded when prompt + cap exceed the window."""
    if provider.context_window is None:
        return None
    length = prompt_tokens(body) + (completion_cap(body) or 0)
    if length <= provider.context_window:
        return None
    return error("cerebras", 400,
                 "Please reduce the length of the messages or completion. Current length is "
                 f"{length} while limit is {provider.context_window}",
                 "invalid_request_error", "messages", "context_length_exceeded")


def completion_cap(body: Json) -> int | None:
    """The completion cap the client asked for (max_completion_tokens wins), or None."""
    cap = body.get("max_completion_tokens") or body.get("max_tokens")
    return cap if isinstance(cap, int) else None
