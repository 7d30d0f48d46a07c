"""The OpenAI Chat Completions door: the pipeline's own shape, so translation is nearly nothing."""

from typing import Any, ClassVar

from attrs import define

from ..errors import ProxyError
from ..jsoncodec import dump_json
from ..routing.models import ModelNames, ServedModel
from ..routing.request import ChatRequest
from .body import SSE_CONTENT_TYPE, check_function_tools, json_object_body, optional_bool

API = "chat"
DONE_EVENT = b"data: [DONE]\n\n"


def error_body(error: ProxyError) -> dict[str, Any]:
    """OpenAI's error shape; also what the operator endpoints and unknown paths answer."""
    return {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}}


def parse(raw: bytes, models: ModelNames) -> "ChatExchange":
    """Validate the parts of a chat body the proxy relies on; everything else passes through."""
    body = json_object_body(raw)
    route = models.resolve(body.get("model"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ProxyError(400, "`messages` is required and must be a non-empty array.", code="invalid_type", param="messages")
    if not all(isinstance(message, dict) for message in messages):
        raise ProxyError(400, "Every entry of `messages` must be an object.", code="invalid_type", param="messages")
    if body.get("tools") is not None:
        check_function_tools(body["tools"])
    stream = optional_bool(body, "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ProxyError(400, "`stream_options` must be an object.", code="invalid_type", param="stream_options")
    wants_usage = bool(stream and options and options.get("include_usage"))
    return ChatExchange(ChatRequest(body, stream, route), body["model"], wants_usage)


@define
class ChatExchange:
    """One chat request's translation: answers and chunks go out as they came, model renamed."""

    request: ChatRequest
    stream_content_type: ClassVar[bytes] = SSE_CONTENT_TYPE
    client_model: str  # the name the client asked for, put back where the provider wrote its own
    wants_usage: bool

    def answer(self, document: dict[str, Any]) -> dict[str, Any]:
        if "model" in document:
            document["model"] = self.client_model
        return document

    def stream_events(self, documents: list[dict[str, Any]]) -> bytes:
        frames = []
        model, drop_usage = self.client_model, not self.wants_usage
        for document in documents:
            if drop_usage and "usage" in document:
                # The client did not ask for usage: drop it, and drop a chunk that held only usage.
                del document["usage"]
                if not document.get("choices"):
                    continue
            if "model" in document:  # as `answer` does
                document["model"] = model
            frames.append(dump_json(document))
        return b"data: " + b"\n\ndata: ".join(frames) + b"\n\n" if frames else b""

    def stream_end(self, error: ProxyError | None) -> bytes:
        failure = b"data: " + dump_json(error_body(error)) + b"\n\n" if error is not None else b""
        return failure + DONE_EVENT


def models_list(models: ModelNames, created: int) -> dict[str, Any]:
    return {"object": "list", "data": [model_card(model, created) for model in models.models]}


def model_card(model: ServedModel, created: int) -> dict[str, Any]:
    """OpenAI's model object, plus the route's context window and output limit when known
    (OpenAI's own list has no field for them; these are the names Codex's settings use)."""
    limits = {"context_window": model.limits.context_window, "max_output_tokens": model.limits.output_tokens}
    return {"id": model.name, "object": "model", "created": created, "owned_by": "trioproxy",
            **{key: value for key, value in limits.items() if value is not None}}
