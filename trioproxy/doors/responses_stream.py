"""Chat chunks as the Responses API's stream: numbered events around output items and parts."""

import uuid
from typing import Any

from ..errors import ProxyError
from .chunks import ChunkWalker, Event
from .responses_tools import ToolNames, function_name


def incomplete_details(finish_reason: Any) -> dict[str, str] | None:
    """Why an answer stopped short, in the Responses API's words; None when it is whole."""
    if finish_reason == "length":
        return {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return {"reason": "content_filter"}
    return None


def response_usage(usage: Any) -> dict[str, Any] | None:
    """Chat usage as the Responses API counts it."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.get("total_tokens") or prompt + completion}


class ResponseStream(ChunkWalker):
    """The state of one streamed response: which items are open, and the numbering of events."""

    def __init__(self, shell: dict[str, Any], names: ToolNames) -> None:
        super().__init__()
        self._shell = shell
        self._names = names
        self._sequence = 0
        self._output: list[dict[str, Any]] = []  # items in output order, filled as deltas arrive
        self._text_item: dict[str, Any] | None = None  # the message item still receiving text
        self._calls: dict[int, dict[str, Any]] = {}  # chat tool-call index -> function_call item
        self._open: list[dict[str, Any]] = []  # items not yet announced as done
        self._started = False

    def feed(self, chunks: list[dict[str, Any]]) -> list[Event]:
        events: list[Event] = []
        if not self._started:
            self._started = True
            events += [self._event("response.created", response=self._response("in_progress")),
                       self._event("response.in_progress", response=self._response("in_progress"))]
        events += self.walk(chunks)
        return events

    def end(self, error: ProxyError | None) -> list[Event]:
        events = [] if self._started else self.feed([])
        if error is not None:
            failed = {**self._response("failed"), "error": {"code": error.code or error.type, "message": error.message}}
            return events + [self._event("response.failed", response=failed)]
        for item in list(self._open):
            events += self._close(item)
        details = incomplete_details(self.finishing_choice.get("finish_reason"))
        final = {**self._response("incomplete" if details else "completed"), "incomplete_details": details,
                 "usage": response_usage(self.usage)}
        return events + [self._event("response.incomplete" if details else "response.completed", response=final)]

    def _text(self, text: str) -> list[Event]:
        events: list[Event] = []
        item = self._text_item
        if item is None:
            item = {"type": "message", "id": f"msg_{uuid.uuid4().hex}", "status": "in_progress",
                    "role": "assistant", "content": []}
            self._text_item = item
            events += self._add(item)
            events.append(self._event("response.content_part.added", item_id=item["id"], output_index=self._index(item),
                                      content_index=0, part={"type": "output_text", "text": "", "annotations": []}))
            item["content"].append({"type": "output_text", "text": "", "annotations": [], "logprobs": []})
        item["content"][0]["text"] += text
        events.append(self._event("response.output_text.delta", item_id=item["id"], output_index=self._index(item),
                                  content_index=0, delta=text, logprobs=[]))
        return events

    def _call(self, call: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        index = call.get("index", 0)
        function = call.get("function") or {}
        item = self._calls.get(index)
        if item is None:
            if self._text_item is not None:  # output items are sequential: the text before a call is done
                events += self._close(self._text_item)
            item = {"type": "function_call", "id": f"fc_{uuid.uuid4().hex}", "call_id": call.get("id") or "",
                    **function_name(self._names, function.get("name") or ""), "arguments": "", "status": "in_progress"}
            self._calls[index] = item
            events += self._add(item)
        fragment = function.get("arguments")
        if isinstance(fragment, str) and fragment:
            item["arguments"] += fragment
            events.append(self._event("response.function_call_arguments.delta", item_id=item["id"],
                                      output_index=self._index(item), delta=fragment))
        return events

    def _add(self, item: dict[str, Any]) -> list[Event]:
        self._output.append(item)
        self._open.append(item)
        return [self._event("response.output_item.added", output_index=self._index(item), item=dict(item, content=[])
                            if item["type"] == "message" else dict(item))]

    def _close(self, item: dict[str, Any]) -> list[Event]:
        self._open.remove(item)
        item["status"] = "completed"
        index = self._index(item)
        events: list[Event] = []
        if item["type"] == "message":
            self._text_item = None
            part = item["content"][0]
            events += [self._event("response.output_text.done", item_id=item["id"], output_index=index,
                                   content_index=0, text=part["text"], logprobs=[]),
                       self._event("response.content_part.done", item_id=item["id"], output_index=index,
                                   content_index=0, part=part)]
        else:
            events.append(self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                                      name=item["name"], arguments=item["arguments"]))
        return events + [self._event("response.output_item.done", output_index=index, item=item)]

    def _index(self, item: dict[str, Any]) -> int:
        return next(i for i, candidate in enumerate(self._output) if candidate is item)

    def _response(self, status: str) -> dict[str, Any]:
        return {**self._shell, "status": status, "output": list(self._output), "usage": None}

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event
