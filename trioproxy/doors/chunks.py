"""Walking chat chunks for the doors that re-frame them: text, tool-call fragments, finish, usage."""

from typing import Any

Event = dict[str, Any]


def first_choice(document: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The first choice of a non-streamed chat answer and its message (empty when missing)."""
    choices = document.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message")
    return choice, message if isinstance(message, dict) else {}


class ChunkWalker:
    """Feeds each text delta and tool-call fragment of chat chunks to `_text` and `_call`, and
    remembers the usage and the choice that finished; subclasses turn those into their events."""

    def __init__(self) -> None:
        self.usage: Any = None
        self.finishing_choice: dict[str, Any] = {}

    def walk(self, chunks: list[dict[str, Any]]) -> list[Event]:
        events: list[Event] = []
        for chunk in chunks:
            if chunk.get("usage") is not None:
                self.usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                if not isinstance(choice, dict):
                    continue
                delta = choice.get("delta") or {}
                if isinstance(delta.get("content"), str) and delta["content"]:
                    events += self._text(delta["content"])
                for call in delta.get("tool_calls") or []:
                    if isinstance(call, dict):
                        events += self._call(call)
                if choice.get("finish_reason"):
                    self.finishing_choice = choice
        return events

    def _text(self, text: str) -> list[Event]:
        raise NotImplementedError

    def _call(self, call: dict[str, Any]) -> list[Event]:
        raise NotImplementedError
