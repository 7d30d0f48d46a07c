"""The request pipeline: route, record, authorize, faults, validate, admit, complete."""

from __future__ import annotations

import json

from . import errors
from .actions import Action, Json, Reply, Request
from .answers import prompt_tokens
from .completion import completion
from .faults import Faults, fault_action, take_faults
from .limits import admit, with_limit_headers
from .prefill import refused_prefill
from .provider import EmulatedProvider
from .validation import completion_cap, validate


async def dispatch(provider: EmulatedProvider, request: Request) -> Action:
    """Decide the answer to one request (may sleep for an injected latency)."""
    if request.path == "/v1/chat/completions" and request.method == "POST":
        return await _chat(provider, request)
    if request.path == "/v1/models" and request.method == "GET":
        return _authorized(provider, request) or Reply(200, _models(provider))
    return errors.unknown_path(provider.flavor, request.path)


def _authorized(provider: EmulatedProvider, request: Request) -> Reply | None:
    """None when the bearer key matches exactly, else the provider's 401."""
    presented = request.headers.get("authorization", "")
    if presented == f"Bearer {provider.api_key}":
        return None
    if provider.echo_key_in_401:
        return errors.error(provider.flavor, 401, f"Incorrect API key provided: {presented.removeprefix('Bearer ')}.",
                            "invalid_request_error", None, "invalid_api_key")
    return errors.unauthorized(provider.flavor)


def _models(provider: EmulatedProvider) -> Json:
    entries = []
    for model in provider.models():
        entry: Json = {"id": model, "object": "model", "created": 1735689600,
                       "owned_by": "Cerebras" if provider.flavor == "cerebras" else "vllm"}
        if provider.flavor == "chutes":
            entry["supported_features"] = ["json_mode", "tools", "structured_outputs"]
        entries.append(entry)
    return {"object": "list", "data": entries}


async def _chat(provider: EmulatedProvider, request: Request) -> Action:
    """The chat pipeline: record, auth, faults, parse, validate, limits, completion."""
    body = _parse(request.body)
    provider.received.append(body if isinstance(body, dict) else {"_unparsed": _text(request)})
    provider.received_headers.append(dict(request.headers))
    denied = _authorized(provider, request)
    if denied:
        return with_limit_headers(provider, denied)
    faults = take_faults(provider)
    action = await fault_action(provider, faults)
    if action is not None:
        return with_limit_headers(provider, action)
    return _checked_completion(provider, body, faults)


def _text(request: Request) -> str:
    return request.body.decode("utf-8", "replace")


def _parse(raw: bytes) -> Json | None:
    """The request body as a JSON object, or None when it is not one."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _checked_completion(provider: EmulatedProvider, body: Json | None,
                        faults: Faults) -> Action:
    """Validate, apply the limits, then answer with a completion (limit headers included)."""
    if body is None:
        rejected: Reply | None = errors.error(provider.flavor, 400,
                                              "Request body is not a JSON object.",
                                              "invalid_request_error", None, "wrong_api_format")
    else:
        rejected = validate(provider, body) or refused_prefill(provider, body, faults)
    if rejected is None:
        assert body is not None
        cap, prompt = completion_cap(body), prompt_tokens(body)
        cached, blocks = 0, []
        if provider.flavor == "cerebras":
            cached, blocks = provider.prompt_cache.lookup(body, prompt, provider.clock())
        rejected = admit(provider, prompt, cap, cached)
        if rejected is None:
            provider.prompt_cache.store(blocks, provider.clock())
            return completion(provider, body, faults, prompt, cap, cached)
    return with_limit_headers(provider, rejected)
