"""The one error type every layer raises: an HTTP status and neutral facts, in no wire shape.

Each front door renders it in its own protocol (OpenAI's `{"error": ...}`, Anthropic's
`{"type": "error", ...}`); nothing below the doors knows those shapes. `type` uses OpenAI's
vocabulary (`invalid_request_error`, `rate_limit_error`, `api_error`, ...) as the neutral one.
"""

from typing import TypeVar

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


def default_type(status: int) -> str:
    """The error type a status implies when nobody named one."""
    if status == 429:
        return "rate_limit_error"
    if status in (401, 403):
        return "authentication_error"
    if status >= 500:
        return "api_error"
    return "invalid_request_error"


def found_in(error: BaseException, kind: type[E]) -> E | None:
    """An error of `kind`, however deep in (Trio's) exception groups it arrives."""
    if isinstance(error, kind):
        return error
    if isinstance(error, BaseExceptionGroup):
        return next(filter(None, (found_in(inner, kind) for inner in error.exceptions)), None)
    return None
