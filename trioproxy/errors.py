"""The one error type every layer raises: an HTTP status and neutral facts, in no wire shape.

Each front door renders it in its own protocol (OpenAI's `{"error": ...}`, Anthropic's
`{"type": "error", ...}`); nothing below the doors knows those shapes. `type` uses OpenAI's
vocabulary (`invalid_request_error`, `rate_limit_error`, `api_error`, ...) as the neutral one.
"""

from typing import TypeVar

from attrs import frozen

E = TypeVar("E", bound=BaseException)


class ProxyError(Exception):
    """A request the proxy answers with an error status."""

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


MAX_QUOTED = 100  # characters of a client's text (a model name, a tool type) an error may quote


def quoted(text: object) -> str:
    """A client's value as an error message may quote it: at most MAX_QUOTED characters."""
    text = str(text)
    return text if len(text) <= MAX_QUOTED else text[:MAX_QUOTED] + "..."


@frozen
class ErrorTypes:
    """What one status is called in each protocol's error vocabulary."""

    openai: str  # the neutral vocabulary: OpenAI's, which the Chat and Responses doors speak
    anthropic: str
    google: str  # google.rpc.Code's name, as Google's HTTP APIs map statuses to it


_CLIENT = ErrorTypes("invalid_request_error", "invalid_request_error", "INVALID_ARGUMENT")
_SERVER = ErrorTypes("api_error", "api_error", "INTERNAL")
# The one map from a status to its error type, per protocol; other statuses are _CLIENT or _SERVER.
ERROR_TYPES = {
    401: ErrorTypes("authentication_error", "authentication_error", "UNAUTHENTICATED"),
    402: ErrorTypes("invalid_request_error", "billing_error", "INVALID_ARGUMENT"),
    403: ErrorTypes("authentication_error", "permission_error", "PERMISSION_DENIED"),
    404: ErrorTypes("invalid_request_error", "not_found_error", "NOT_FOUND"),
    408: ErrorTypes("invalid_request_error", "timeout_error", "DEADLINE_EXCEEDED"),
    409: ErrorTypes("invalid_request_error", "invalid_request_error", "ABORTED"),
    413: ErrorTypes("invalid_request_error", "request_too_large", "INVALID_ARGUMENT"),
    429: ErrorTypes("rate_limit_error", "rate_limit_error", "RESOURCE_EXHAUSTED"),
    499: ErrorTypes("invalid_request_error", "invalid_request_error", "CANCELLED"),
    501: ErrorTypes("api_error", "api_error", "UNIMPLEMENTED"),
    502: ErrorTypes("api_error", "api_error", "UNAVAILABLE"),
    503: ErrorTypes("api_error", "overloaded_error", "UNAVAILABLE"),
    504: ErrorTypes("api_error", "api_error", "DEADLINE_EXCEEDED"),
    529: ErrorTypes("api_error", "overloaded_error", "INTERNAL"),
}


def error_types(status: int) -> ErrorTypes:
    """The names of `status`'s error type, in each protocol."""
    return ERROR_TYPES.get(status) or (_SERVER if status >= 500 else _CLIENT)


def default_type(status: int) -> str:
    """The error type a status implies when nobody named one (the neutral vocabulary)."""
    return error_types(status).openai


def found_in(error: BaseException, kind: type[E]) -> E | None:
    """An error of `kind`, however deep in (Trio's) exception groups it arrives."""
    if isinstance(error, kind):
        return error
    if isinstance(error, BaseExceptionGroup):
        return next(filter(None, (found_in(inner, kind) for inner in error.exceptions)), None)
    return None
