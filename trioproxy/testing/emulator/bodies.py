"""A completion in Chat Completions shape: the full body, or the chunks of a stream."""

from __future__ import annotations

from attrs import define

from .actions import Json, Stream
from .answers import Answer
from .errors import stream_error
from .faults import Faults


@define
class Meta:
    """The fields every body or chunk of one completion shares."""

    flavor: str
    id: str
    created: int
    model: str

    def head(self, object_: str) -> Json:
        head: Json = {"id": self.id, "object": object_, "created": self.created,
                      "model": self.model}
        if self.flavor == "cerebras":
            head["system_fingerprint"] = "fp_emulated"
        return head

    def time_info(self) -> Json:
        return {"queue_time": 0.0001, "prompt_time": 0.001, "completion_time": 0.01,
                "total_time": 0.0111, "created": self.created}


def full_body(meta: Meta, answer: Answer, usage: Json) -> Json:
    message: Json = {"role": "assistant", "content": answer.content}
    if answer.calls and answer.legacy_function:
        message["function_call"] = {"name": answer.calls[0].name, "arguments": answer.calls[0].arguments}
    elif answer.calls:
        message["tool_calls"] = [{"id": call.id, "type": "function",
                                  "function": {"name": call.name, "arguments": call.arguments}}
                                 for call in answer.calls]
    body = meta.head("chat.completion")
    body["choices"] = [{"index": 0, "message": message, "finish_reason": answer.finish_reason}]
    body["usage"] = usage
    if meta.flavor == "cerebras":
        body["time_info"] = meta.time_info()
    return body


def stream_action(meta: Meta, answer: Answer, usage: Json, body: Json,
                  faults: Faults, words_per_chunk: int = 1) -> Stream:
    """The SSE events of a streamed completion, cut short or broken by the stream faults."""
    deltas = [{"role": "assistant", "content": ""}, *_deltas(answer, words_per_chunk)]
    events = [_chunk(meta, delta, None) for delta in deltas]
    final = _chunk(meta, {}, answer.finish_reason)
    events.append(final)
    if meta.flavor == "cerebras":
        final["usage"] = usage  # Cerebras: always, on the final chunk
        final["time_info"] = meta.time_info()
    elif (body.get("stream_options") or {}).get("include_usage"):
        events.append({**meta.head("chat.completion.chunk"), "choices": [], "usage": usage})
    error_at = 0 if faults.error_first_event else faults.error_after_events
    if error_at is not None:
        return Stream([*events[:error_at], stream_error(meta.flavor, faults.stream_error)], delay=faults.chunk_delay)
    reset_after = 1 if faults.reset_mid_stream else faults.break_after_events
    if faults.break_after_argument_bytes is not None:
        reset_after = _cut_in_arguments(events, faults.break_after_argument_bytes)
    return Stream(events, delay=faults.chunk_delay, reset_after=reset_after)


def _cut_in_arguments(events: list[Json], limit: int) -> int | None:
    """Cut the tool-call fragment in which the arguments sent reach `limit` bytes; the number of
    events up to it (None when the arguments are shorter)."""
    sent = 0
    for position, event in enumerate(events):
        choices = event.get("choices") or [{}]
        for call in choices[0].get("delta", {}).get("tool_calls") or ():
            fragment = call["function"].get("arguments", "").encode()
            if fragment and sent + len(fragment) >= limit:
                call["function"]["arguments"] = fragment[:limit - sent].decode("utf-8", "ignore")
                return position + 1
            sent += len(fragment)
    return None


def _chunk(meta: Meta, delta: Json, finish_reason: str | None) -> Json:
    chunk = meta.head("chat.completion.chunk")
    chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    return chunk


def _deltas(answer: Answer, words_per_chunk: int = 1) -> list[Json]:
    """The content or call deltas after the role delta (text: `words_per_chunk` words each)."""
    if not answer.calls:
        words = (answer.content or "").split(" ")
        step = max(1, words_per_chunk)
        pieces = [" ".join(words[i:i + step]) for i in range(0, len(words), step)]
        return [{"content": piece if i == 0 else " " + piece} for i, piece in enumerate(pieces)]
    if answer.legacy_function:
        call = answer.calls[0]
        return [{"function_call": {"name": call.name, "arguments": ""}},
                *({"function_call": {"arguments": piece}} for piece in _split(call.arguments))]
    deltas: list[Json] = []
    for index, call in enumerate(answer.calls):  # one call after the other, as OpenAI streams them
        first = {"index": index, "id": call.id, "type": "function",
                 "function": {"name": call.name, "arguments": ""}}
        deltas.append({"tool_calls": [first]})
        deltas += ({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                   for piece in _split(call.arguments))
    return deltas


def _split(text: str) -> list[str]:
    """Split into pieces of at most 8 characters, at least two when the text allows."""
    size = max(1, min(8, len(text) // 2))
    return [text[i:i + size] for i in range(0, len(text), size)]
