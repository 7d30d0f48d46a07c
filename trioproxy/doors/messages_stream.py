"""Chat chunks as the Anthropic Messages stream: message_start, content blocks, message_delta, message_stop."""

from typing import Any

from ..jsoncodec import load_json
from .chunks import ChunkWalker, Event

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                 "content_filter": "refusal"}


def stop_reason(choice: dict[str, Any], stop_sequences: tuple[str, ...]) -> tuple[str, str | None]:
    """Anthropic's stop reason, and the stop sequence that matched when the provider says which."""
    finish = choice.get("finish_reason")
    matched = choice.get("stop_reason")  # vLLM names the stop string that ended the answer
    if finish == "stop" and isinstance(matched, str) and matched in stop_sequences:
        return "stop_sequence", matched
    return _STOP_REASONS.get(finish, "end_turn"), None


def message_usage(usage: Any) -> dict[str, int]:
    usage = usage if isinstance(usage, dict) else {}
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return {"input_tokens": usage.get("prompt_tokens") or 0, "output_tokens": usage.get("completion_tokens") or 0,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached}


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's JSON arguments as Anthropic's `input` object."""
    try:
        parsed = load_json(arguments) if isinstance(arguments, str) and arguments.strip() else {}
    except (ValueError, RecursionError):
        parsed = None
    return parsed if isinstance(parsed, dict) else {"arguments": arguments}


class MessageStream(ChunkWalker):
    """The state of one streamed message: the open content block and what the end must report."""

    def __init__(self, message_id: str, model: str, stop_sequences: tuple[str, ...]) -> None:
        super().__init__()
        self._id = message_id
        self._model = model
        self._stops = stop_sequences
        self._blocks = 0  # content blocks started so far; the open one is the last
        self._open: str | None = None  # "text", or the chat index of the tool call being streamed
        self._started = False

    def feed(self, chunks: list[dict[str, Any]]) -> list[Event]:
        events: list[Event] = []
        if not self._started:
            self._started = True
            message = {"id": self._id, "type": "message", "role": "assistant", "model": self._model, "content": [],
                       "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}
            events += [{"type": "message_start", "message": message}, {"type": "ping"}]
        events += self.walk(chunks)
        return events

    def end(self) -> list[Event]:
        events = [] if self._started else self.feed([])
        events += self._close()
        reason, sequence = stop_reason(self.finishing_choice, self._stops)
        usage = message_usage(self.usage)
        return events + [
            {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence},
             "usage": {"input_tokens": usage["input_tokens"], "output_tokens": usage["output_tokens"]}},
            {"type": "message_stop"},
        ]

    def _text(self, text: str) -> list[Event]:
        events: list[Event] = []
        if self._open != "text":
            events += self._close()
            events += self._start({"type": "text", "text": ""}, "text")
        return events + [self._delta({"type": "text_delta", "text": text})]

    def _call(self, call: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        key = f"call {call.get('index', 0)}"
        function = call.get("function") or {}
        if self._open != key:
            events += self._close()
            block = {"type": "tool_use", "id": call.get("id") or f"toolu_{self._id}_{self._blocks}",
                     "name": function.get("name") or "", "input": {}}
            events += self._start(block, key)
        fragment = function.get("arguments")
        if isinstance(fragment, str) and fragment:
            events.append(self._delta({"type": "input_json_delta", "partial_json": fragment}))
        return events

    def _start(self, block: dict[str, Any], key: str) -> list[Event]:
        self._open = key
        self._blocks += 1
        return [{"type": "content_block_start", "index": self._blocks - 1, "content_block": block}]

    def _delta(self, delta: dict[str, Any]) -> Event:
        return {"type": "content_block_delta", "index": self._blocks - 1, "delta": delta}

    def _close(self) -> list[Event]:
        if self._open is None:
            return []
        self._open = None
        return [{"type": "content_block_stop", "index": self._blocks - 1}]
