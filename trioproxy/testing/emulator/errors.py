"""Errors in each provider's own shape: Cerebras flat (OpenAI-like fields), Chutes FastAPI."""

from __future__ import annotations

import http
import uuid
from typing import Any, Literal

from .actions import Json, Reply


def error(flavor: str, status: int, message: str, type_: str = "invalid_request_error",
          param: str | None = None, code: str | None = None,
          headers: list[tuple[str, str]] | None = None) -> Reply:
    """An error in the provider's own shape: Cerebras flat, Chutes FastAPI `detail`."""
    if flavor == "chutes":
        body: Json = {"detail": message}
    else:
        body = {"message": message, "type": type_, "param": param, "code": code}
    return Reply(status, body, list(headers or []))


def generic_error(flavor: str, status: int) -> Reply:
    """The error an injected `status` fault answers with."""
    reason = phrase(status)
    type_ = "server_error" if status >= 500 else "invalid_request_error"
    code = reason.lower().replace(" ", "_")
    return error(flavor, status, reason, type_, None, code)


def phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def unknown_path(flavor: str, path: str) -> Reply:
    if flavor == "chutes":
        return error("chutes", 404, "Not Found")
    return error("cerebras", 404, f"Path {path} not found", "not_found_error", None, "not_found")


def unauthorized(flavor: str) -> Reply:
    if flavor == "chutes":
        return error("chutes", 401, "Invalid token.")
    return error("cerebras", 401, "Wrong API Key", "invalid_request_error", "api_key",
                 "wrong_api_key")


def model_not_found(flavor: str, model: Any) -> Reply:
    if flavor == "chutes":
        return error("chutes", 404, f"model not found: {model}")
    return error("cerebras", 404,
                 f"Model {model} does not exist or you do not have access to it.",
                 "not_found_error", "model", "model_not_found")


def model_retired(flavor: str, model: str) -> Reply:
    """Cerebras answered requests for a retired model with 503, not 404 (the body's wording is
    not documented: this one says what happened)."""
    return error(flavor, 503, f"Model {model} has been deprecated and is no longer available.",
                 "server_error", "model", "model_deprecated")


def no_instances(flavor: str, model: str) -> Reply:
    if flavor == "chutes":
        chute_id = uuid.uuid5(uuid.NAMESPACE_URL, model)
        return error("chutes", 503, f"No instances available (yet) for chute_id={chute_id}")
    return error("cerebras", 503, "No instances available for this model right now.",
                 "server_error", None, "service_unavailable")


def queue_exceeded(flavor: str) -> Reply:
    if flavor == "chutes":
        return error("chutes", 429, "Infrastructure is at maximum capacity, try again later")
    return error("cerebras", 429,
                 "We're experiencing high traffic right now! Please try again soon.",
                 "too_many_requests_error", "queue", "queue_exceeded",
                 headers=[("retry-after", "1")])


def quota_429(message: str, type_: str, code: str, retry_after: str) -> Reply:
    """Cerebras's 429 for an exhausted quota limit."""
    return error("cerebras", 429, message, type_, "quota", code,
                 headers=[("retry-after", retry_after)])


StreamErrorKind = Literal["server", "zai-quota", "response-failed"]


def stream_error(flavor: str, kind: StreamErrorKind = "server") -> Json:
    """An error event inside a stream that began with 200: the provider's own failure, Z.AI's
    rate-limit code 1302 as an `error` object, or a Responses-style `response.failed`."""
    if kind == "zai-quota":
        return {"error": {"code": 1302, "message": "High concurrency usage of this API, please reduce concurrency "
                          "or contact customer service to increase limits"}}
    if kind == "response-failed":
        return {"type": "response.failed", "response": {"status": "failed", "error": {
            "code": "server_error", "message": f"Emulated {flavor} failed while generating."}}}
    return {"error": {"message": f"Emulated {flavor} failed while generating.",
                      "type": "server_error", "param": None, "code": "internal_error"}}
