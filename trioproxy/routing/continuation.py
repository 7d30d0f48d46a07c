"""Finishing a streamed answer on another provider: what was said, and how to ask for the rest.

The relay keeps a `SaidSoFar` of what reached the client (text, whole tool calls, about how many
tokens). When the serving provider breaks off, the next provider is asked, in its own way
(`ProviderConfig.continuation`), for the rest of that answer:

- "prefill-vllm": the request plus the partial answer as a final assistant message, with vLLM's
  and SGLang's `continue_final_message: true` and `add_generation_prompt: false`;
- "prefix": the same message with DeepSeek's and Mistral's `"prefix": true`;
- "restart": the request as it was; the relay passes on only what extends the sent answer;
- "off": the provider does not continue other providers' answers.
"""

from typing import Any

from attrs import Factory, define

from ..errors import ProxyError

_BUDGET_FIELDS = ("max_completion_tokens", "max_tokens")


@define
class SaidSoFar:
    """What the client holds of the answer: its text, its whole tool calls, and about how many
    completion tokens they took (one per streamed event that carried them)."""

    # The text's pieces as they went out, joined only when a continuation needs them: `+=` on an
    # attribute copies the whole text at every event, quadratic in a long answer.
    pieces: list[str] = Factory(list)
    calls: list[dict[str, Any]] = Factory(list)  # chat tool calls: id, type, function{name, arguments}
    tokens: int = 0

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def said(self, text: str) -> None:
        """One more piece of text reached the client (one event's worth of tokens)."""
        self.pieces.append(text)
        self.tokens += 1

    def prefill(self) -> dict[str, Any]:
        """The partial answer as a final assistant message."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.calls:
            message["tool_calls"] = [dict(call) for call in self.calls]
        return message


def continuation_body(body: dict[str, Any], mode: str, said: SaidSoFar) -> dict[str, Any] | None:
    """The request that asks a provider of `mode` for the rest of the answer (None for "off")."""
    if mode == "off":
        return None
    if mode == "restart":
        return body
    continued = {**body, "messages": [*body["messages"], said.prefill()]}
    for key in _BUDGET_FIELDS:  # what was said is spent: the rest gets what is left
        if type(body.get(key)) is int:
            continued[key] = max(1, body[key] - said.tokens)
    if mode == "prefill-vllm":
        continued.update(continue_final_message=True, add_generation_prompt=False)
    else:
        continued["messages"][-1]["prefix"] = True
    return continued


def mismatch(provider: str, what: str) -> ProxyError:
    """The error a continuation that does not extend the sent answer ends the stream with."""
    return ProxyError(502, f"{provider} could not continue the answer another provider broke off: {what}.",
                      type="api_error", code="continuation_mismatch")
