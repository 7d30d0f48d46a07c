"""Per-provider request adaptation: the provider's model name and the fields it refuses."""

from typing import Any

from ..config.schema import ProviderConfig


class Unsupported(Exception):
    """The provider cannot serve this request without changing what the client asked for."""

    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field


def adapt_request(body: dict[str, Any], provider: ProviderConfig, model: str, stream: bool) -> dict[str, Any]:
    """A copy of the client's body fit for `provider`, asking for `model` (the candidate the
    provider offers); the client's body is never mutated."""
    rules = provider.adaptation
    adapted = {key: value for key, value in body.items() if key not in rules.drop_fields}
    adapted["model"] = model
    if rules.allowed_tool_choice is not None and "tool_choice" in adapted:
        choice = adapted["tool_choice"]
        if not (isinstance(choice, str) and choice in rules.allowed_tool_choice):
            raise Unsupported("tool_choice")
    if rules.drop_false_parallel_tool_calls and adapted.get("parallel_tool_calls") is False:
        del adapted["parallel_tool_calls"]
    if rules.strip_tool_strict and isinstance(adapted.get("tools"), list):
        adapted["tools"] = [_without_strict(tool) for tool in adapted["tools"]]
    if provider.max_completion_tokens_cap is not None:
        _cap_completion_tokens(adapted, provider.max_completion_tokens_cap)
    if stream and provider.request_stream_usage:
        options = adapted.get("stream_options")
        adapted["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return adapted


def _without_strict(tool: Any) -> Any:
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(function, dict) or "strict" not in function:
        return tool
    return {**tool, "function": {key: value for key, value in function.items() if key != "strict"}}


def _cap_completion_tokens(body: dict[str, Any], cap: int) -> None:
    """Lower the completion budget to `cap`, and send the cap when the client named none."""
    named = [key for key in ("max_completion_tokens", "max_tokens") if type(body.get(key)) is int]
    for key in named:
        body[key] = min(body[key], cap)
    if not named:
        body["max_completion_tokens"] = cap
