"""Continuing a partial answer: a request whose final assistant message the model is to go on from.

vLLM and SGLang continue it with `continue_final_message: true` and `add_generation_prompt:
false`; DeepSeek and Mistral with `"prefix": true` on the message. The emulated model continues
its own deterministic answer, so a continued answer equals the uninterrupted one byte for byte.
"""

from __future__ import annotations

import attrs

from . import errors
from .actions import Json, Reply
from .answers import Answer, answer
from .faults import Faults
from .provider import EmulatedProvider


def prefill_of(body: Json) -> Json | None:
    """The final assistant message, when the request asks for it to be continued."""
    messages = body.get("messages") or []
    last = messages[-1] if messages and isinstance(messages[-1], dict) else None
    if last is None or last.get("role") != "assistant":
        return None
    vllm = body.get("continue_final_message") is True and body.get("add_generation_prompt") is False
    return last if vllm or last.get("prefix") is True else None


def continued_answer(provider: EmulatedProvider, body: Json, prefill: Json, number: int) -> Answer | None:
    """What is left of the answer to the conversation before `prefill` once `prefill` is said;
    None when the prefill does not begin that answer. A continued answer is not capped again."""
    whole = answer(provider, {**body, "messages": body["messages"][:-1]}, None, number)
    text = prefill.get("content") or ""
    said = [call.get("function") or {} for call in prefill.get("tool_calls") or [] if isinstance(call, dict)]
    if not (whole.content or "").startswith(text) or len(said) > len(whole.calls):
        return None
    if any((f.get("name"), f.get("arguments")) != (c.name, c.arguments) for f, c in zip(said, whole.calls)):
        return None
    calls = whole.calls[len(said):]
    first_id = (prefill.get("tool_calls") or [{}])[0].get("id")
    if said and isinstance(first_id, str):  # the calls of one answer share the first one's id stem
        calls = [attrs.evolve(call, id=f"{first_id}_{index}") for index, call in enumerate(calls, len(said))]
    rest = (whole.content or "")[len(text):]
    tokens = len(rest.split()) + sum(len(call.arguments.split()) for call in calls)
    return attrs.evolve(whole, content=rest if whole.content is not None else None, calls=calls,
                        completion_tokens=tokens)


def refused_prefill(provider: EmulatedProvider, body: Json, faults: Faults) -> Reply | None:
    """The 400 a continuation request earns (refused by fault, or not continuing this answer)."""
    prefill = prefill_of(body)
    if prefill is None:
        return None
    if faults.refuse_prefill:
        return errors.error(provider.flavor, 400, "continue_final_message is not supported for this model.",
                            "invalid_request_error", "messages", "wrong_api_format")
    if continued_answer(provider, body, prefill, 0) is None:
        return errors.error(provider.flavor, 400, "The final assistant message does not begin this answer.",
                            "invalid_request_error", "messages", "wrong_api_format")
    return None
