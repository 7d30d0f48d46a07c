"""What the server needs of a front door, whichever protocol it speaks."""

from collections.abc import Callable
from typing import Any, Protocol

from attrs import frozen

from ..errors import ProxyError
from ..routing.models import ModelNames
from ..routing.request import ChatRequest


class Exchange(Protocol):
    """One request's translation: the pipeline request in, the client's protocol out."""

    request: ChatRequest
    stream_content_type: bytes  # of the streamed body: server-sent events, or Gemini's JSON array

    def answer(self, document: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed chat completion as this protocol's answer."""

    def stream_events(self, documents: list[dict[str, Any]]) -> bytes:
        """Chat chunks (one upstream read's) as this protocol's SSE events."""

    def stream_end(self, error: ProxyError | None) -> bytes:
        """The events that close the stream: normally, or with this protocol's error event."""


@frozen
class Door:
    api: str  # its name in logs and metrics: chat, responses, messages
    parse: Callable[[bytes, ModelNames], Exchange]
    error_body: Callable[[ProxyError], dict[str, Any]]
