"""OpenAI's shapes: request validation, error bodies, and the model-name rewrite."""

from typing import Any

from attrs import define, field

from ..jsoncodec import dump_json, load_json


class ApiError(Exception):
    """An error the client receives as `{"error": {...}}` with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def encode(self) -> bytes:
        return dump_json(self.body())


@define
class ChatRequest:
    """A validated chat request: the client's body as sent, plus what routing needs."""

    body: dict[str, Any]
    stream: bool
    wants_usage: bool = field(default=False)


def parse_chat_request(raw: bytes, proxy_model: str) -> ChatRequest:
    """Validate the parts of a chat body the proxy relies on; everything else passes through."""
    try:
        body = load_json(raw)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise ApiError(400, f"Request body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise ApiError(400, "Request body is nested too deeply.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "Request body must be a JSON object.", code="invalid_request_body")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "`model` is required and must be a string.", code="invalid_type", param="model")
    if model != proxy_model:
        raise ApiError(
            404,
            f"The model `{model}` does not exist. This proxy serves `{proxy_model}`.",
            code="model_not_found",
            param="model",
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "`messages` is required and must be a non-empty array.", code="invalid_type", param="messages")
    if not all(isinstance(message, dict) for message in messages):
        raise ApiError(400, "Every entry of `messages` must be an object.", code="invalid_type", param="messages")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise ApiError(400, "`stream` must be a boolean.", code="invalid_type", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ApiError(400, "`stream_options` must be an object.", code="invalid_type", param="stream_options")
    wants_usage = bool(stream and options and options.get("include_usage"))
    return ChatRequest(body=body, stream=stream, wants_usage=wants_usage)


def error_from_upstream(status: int, raw: bytes, provider: str) -> ApiError:
    """Map any upstream error body (flat, FastAPI `detail`, wrapped, or none) to OpenAI's shape."""
    try:
        parsed = load_json(raw) if raw else None
    except (ValueError, RecursionError):
        parsed = None
    message, type_, code, param = None, None, None, None
    if isinstance(parsed, dict):
        inner = parsed.get("error") if isinstance(parsed.get("error"), dict) else parsed
        message = inner.get("message") or inner.get("detail") or inner.get("error")
        type_, code, param = inner.get("type"), inner.get("code"), inner.get("param")
    if not isinstance(message, str):
        message = raw[:500].decode("utf-8", "replace").strip() or f"{provider} answered HTTP {status}"
    return ApiError(
        status,
        message,
        type=type_ if isinstance(type_, str) else _default_type(status),
        code=code if isinstance(code, str) else None,
        param=param if isinstance(param, str) else None,
    )


def _default_type(status: int) -> str:
    if status == 429:
        return "rate_limit_error"
    if status in (401, 403):
        return "authentication_error"
    if status >= 500:
        return "api_error"
    return "invalid_request_error"


def rewrite_model(document: dict[str, Any], proxy_model: str) -> dict[str, Any]:
    """Put the proxy's model name back where the provider wrote its own."""
    if "model" in document:
        document["model"] = proxy_model
    return document


def models_list(proxy_model: str, created: int) -> dict[str, Any]:
    return {"object": "list", "data": [model_card(proxy_model, created)]}


def model_card(proxy_model: str, created: int) -> dict[str, Any]:
    return {"id": proxy_model, "object": "model", "created": created, "owned_by": "trioproxy"}
