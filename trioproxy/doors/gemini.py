"""Google's Gemini API door (`/v1beta/models/{model}:generateContent` and friends, what Gemini CLI
and the google-genai SDKs speak), over the chat pipeline.

The model and the kind of call come from the path, the key from `x-goog-api-key` or `?key=`;
`alt=sse` picks server-sent events for streams, otherwise a stream is one JSON array written
piece by piece, as Google does.
"""

import re
import uuid
from collections.abc import Callable
from typing import Any

from attrs import frozen

from ..errors import ProxyError
from ..routing.limits import RouteLimits
from ..routing.models import ModelNames
from ..routing.request import ChatRequest
from ..routing.tokens import PromptEstimator
from .body import json_object_body
from .chunks import first_choice
from .gemini_request import bad, chat_body, fields
from .gemini_stream import GeminiResponses, GeminiStream, StreamFraming, error_body

API = "gemini"
VERSIONS = ("/v1beta/", "/v1/")
GENERATE, STREAM, COUNT = "generateContent", "streamGenerateContent", "countTokens"
_METHODS = (GENERATE, STREAM, COUNT)
# Google's model ids are letters, digits, dots, dashes and underscores; anything else in the
# path is a client's mistake (or a probe), answered before any lookup.
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

__all__ = ["API", "GeminiCall", "count_tokens", "error_body", "gemini_call", "model_card", "models_list", "owns", "parse"]


@frozen
class GeminiCall:
    """What a Gemini path asks for: the model list (no model), a model (no method), or a call."""

    model: str | None
    method: str | None

    @property
    def http_method(self) -> str:
        return "POST" if self.method else "GET"


def owns(path: str, google_key: bool) -> bool:
    """Whether a path is Gemini's. Everything under `/v1beta/` is. Under `/v1/`, model paths with
    a `:method` are; the model list and model paths are shared with OpenAI's, so they are Gemini's
    when a Google key (`x-goog-api-key` or `?key=`) came with them, as it does from Google's SDKs."""
    if path.startswith("/v1beta/"):
        return True
    if not path.startswith("/v1/models"):
        return False
    rest = path[len("/v1/models"):]
    if rest.startswith("/") and ":" in rest:
        return True
    return google_key and (rest == "" or rest.startswith("/"))


def gemini_call(path: str) -> GeminiCall:
    """The call a path of Gemini's (see `owns`) makes; a 404 or 400 when it names none."""
    version = next(prefix for prefix in VERSIONS if path.startswith(prefix))
    rest = path[len(version):]
    if rest == "models":
        return GeminiCall(None, None)
    if not rest.startswith("models/"):
        raise ProxyError(404, f"Unknown path {path}: trioproxy serves Gemini's models, models/{{model}} and "
                         f"models/{{model}}:{{{'|'.join(_METHODS)}}}.", code="not_found")
    model, colon, method = rest[len("models/"):].rpartition(":")
    model = model if colon else method
    method = method if colon else ""
    if not _MODEL_ID.fullmatch(model):
        raise bad(f"The model name in the path is not a model id (letters, digits, '.', '-', '_'): {model[:80]!r}.")
    if method and method not in _METHODS:
        raise ProxyError(404, f"`{method}` is not a method trioproxy serves; it serves {', '.join(_METHODS)}.",
                         code="not_found")
    return GeminiCall(model, method or None)


def parse(raw: bytes, models: ModelNames, call: GeminiCall, sse: bool) -> "GeminiExchange":
    """A generateContent or streamGenerateContent request as the pipeline's chat request."""
    route = models.resolve(call.model)
    chat = chat_body(json_object_body(raw), str(call.model))
    stream = call.method == STREAM
    if stream:
        chat["stream"] = True
    return GeminiExchange(ChatRequest(chat, stream, route), str(call.model), sse)


def count_tokens(raw: bytes, models: ModelNames, call: GeminiCall,
                 estimator: Callable[[str], PromptEstimator]) -> dict[str, int]:
    """`:countTokens` of `contents` or of a whole `generateContentRequest`: the route's estimate."""
    route = models.resolve(call.model)
    body = fields(json_object_body(raw), "request", frozenset({"contents", "generateContentRequest"}))
    if body.get("generateContentRequest") is not None:
        request = body["generateContentRequest"]
    elif body.get("contents") is not None:
        request = {"contents": body["contents"]}
    else:
        raise bad("countTokens needs `contents` or a `generateContentRequest`.")
    return {"totalTokens": estimator(route).estimate(chat_body(request, str(call.model)))[1]}


def models_list(models: ModelNames, limits: Callable[[str], RouteLimits]) -> dict[str, Any]:
    return {"models": [model_card(name, limits(name)) for name in models.names]}


def model_card(name: str, limits: RouteLimits) -> dict[str, Any]:
    """A route as Google's Model resource; limits only where a provider of the route states them."""
    card: dict[str, Any] = {"name": f"models/{name}", "baseModelId": name, "version": "trioproxy", "displayName": name,
                            "description": f"{name}, served by trioproxy", "supportedGenerationMethods": list(_METHODS)}
    if limits.context_window is not None:
        card["inputTokenLimit"] = limits.context_window
    if limits.output_tokens is not None:
        card["outputTokenLimit"] = limits.output_tokens
    return card


class GeminiExchange:
    """One generateContent request: the chat request it became, and the responses it turns into."""

    def __init__(self, request: ChatRequest, model: str, sse: bool) -> None:
        self.request = request
        self._responses = GeminiResponses(model, uuid.uuid4().hex)
        self._stream = GeminiStream(self._responses)
        self._framing = StreamFraming(sse)
        self.stream_content_type = self._framing.content_type

    def answer(self, document: dict[str, Any]) -> dict[str, Any]:
        choice, message = first_choice(document)
        return self._responses.answer(choice, message, document.get("usage"))

    def stream_events(self, documents: list[dict[str, Any]]) -> bytes:
        return self._framing.frames(self._stream.feed(documents))

    def stream_end(self, error: ProxyError | None) -> bytes:
        last = error_body(error) if error is not None else self._stream.end()
        return self._framing.frames([last]) + self._framing.close()
