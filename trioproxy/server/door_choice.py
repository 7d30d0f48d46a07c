"""Which front door a path belongs to, and so in which shape its errors are answered: decided
here once, for the application and for the HTTP-edges guard in front of it."""

from collections.abc import Callable
from typing import Any

from attrs import frozen

from ..doors import chat, gemini, messages, responses
from ..doors.exchange import Door
from ..errors import ProxyError

RESPONSES_PATH = "/v1/responses"
MESSAGES_PATH = "/v1/messages"
DOORS = {
    "/v1/chat/completions": Door(chat.API, chat.parse, chat.error_body),
    RESPONSES_PATH: Door(responses.API, responses.parse, chat.error_body),
    MESSAGES_PATH: Door(messages.API, messages.parse, messages.error_body),
}
ErrorBody = Callable[[ProxyError], dict[str, Any]]


@frozen
class ErrorDoor:
    """The door a request's errors speak for: its name in logs ("none" when no door took the
    path) and its error shape."""

    api: str
    body: ErrorBody
    gemini: bool  # the path is Gemini's, served by the Gemini door whatever its method


def error_door(path: str, google_key: bool) -> ErrorDoor:
    """The door whose shape `path`'s errors take: Gemini's paths (see `gemini.owns`; `google_key`
    when a Google key came with the request) in Google's, Anthropic's in Anthropic's, everything
    else in OpenAI's."""
    if gemini.owns(path, google_key):
        return _GEMINI_ERRORS
    known = _DOOR_ERRORS.get(path)  # a door's own path: every request of the hot path asks
    if known is not None:
        return known
    return _error_door(path)


def _error_door(path: str) -> ErrorDoor:
    door = DOORS.get(path)
    api = door.api if door is not None else "none"
    if path.startswith(MESSAGES_PATH):
        return ErrorDoor(api, messages.error_body, False)
    return ErrorDoor(api, chat.error_body, False)


_GEMINI_ERRORS = ErrorDoor(gemini.API, gemini.error_body, True)
_DOOR_ERRORS = {path: _error_door(path) for path in DOORS}
