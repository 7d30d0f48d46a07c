"""Chat answers and chunks as Google's GenerateContentResponse: candidates, parts, usageMetadata."""

from typing import Any

from ..errors import ProxyError, error_types
from ..jsoncodec import dump_json
from .body import SSE_CONTENT_TYPE
from .chunks import ChunkWalker, Event
from .messages_stream import tool_input

# Google reports a function call as STOP: the call itself is the sign of what the model wants.
_FINISH_REASONS = {"stop": "STOP", "tool_calls": "STOP", "function_call": "STOP", "length": "MAX_TOKENS",
                   "content_filter": "SAFETY"}
ARRAY_CONTENT_TYPE = b"application/json; charset=utf-8"


def error_body(error: ProxyError) -> dict[str, Any]:
    """Google's error shape; a known retry time goes in a RetryInfo detail, where Google's
    clients (Gemini CLI among them) read how long to wait."""
    body: dict[str, Any] = {"code": error.status, "message": error.message, "status": error_types(error.status).google}
    retry_after = error.headers.get("retry-after")
    if retry_after is not None and retry_after.isdigit():
        body["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after}s"}]
    return {"error": body}


def finish_reason(chat_reason: Any) -> str:
    return _FINISH_REASONS.get(chat_reason, "OTHER") if chat_reason else "STOP"


def usage_metadata(usage: Any) -> dict[str, int]:
    """Chat usage as Google counts it; the cached part only when the provider reported one."""
    usage = usage if isinstance(usage, dict) else {}
    prompt, completion = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
    counted = {"promptTokenCount": prompt, "candidatesTokenCount": completion,
               "totalTokenCount": usage.get("total_tokens") or prompt + completion}
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    if cached:
        counted["cachedContentTokenCount"] = cached
    return counted


def function_call(call_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
    """A chat tool call as a functionCall part; its id goes along, so the client's functionResponse
    names it and the provider sees the same id on the next turn."""
    call: dict[str, Any] = {"name": name or "", "args": tool_input(arguments)}
    if isinstance(call_id, str) and call_id:
        call["id"] = call_id
    return {"functionCall": call}


class GeminiResponses:
    """GenerateContentResponse documents of one request: the non-streamed answer, or the stream's."""

    def __init__(self, model: str, response_id: str) -> None:
        self._model = model
        self._id = response_id

    def document(self, parts: list[dict[str, Any]], finish: str | None = None,
                 usage: dict[str, int] | None = None) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        if finish is not None:
            candidate["finishReason"] = finish
        document: dict[str, Any] = {"candidates": [candidate]}
        if usage is not None:
            document["usageMetadata"] = usage
        document.update(modelVersion=self._model, responseId=self._id)
        return document

    def answer(self, choice: dict[str, Any], message: dict[str, Any], usage: Any) -> dict[str, Any]:
        parts: list[dict[str, Any]] = []
        if isinstance(message.get("content"), str) and message["content"]:
            parts.append({"text": message["content"]})
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            parts.append(function_call(call.get("id"), function.get("name"), function.get("arguments")))
        # Google never answers with no part at all; an empty text is what it sends instead.
        return self.document(parts or [{"text": ""}], finish_reason(choice.get("finish_reason")), usage_metadata(usage))


class GeminiStream(ChunkWalker):
    """One streamed answer: text goes out with each read; a function call goes out whole (Google
    never streams a call's arguments), with the finish reason and usage in the last document."""

    def __init__(self, responses: GeminiResponses) -> None:
        super().__init__()
        self._responses = responses
        self._calls: dict[int, dict[str, Any]] = {}  # chat tool-call index -> id, name, arguments so far

    def feed(self, chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """At most one document for one upstream read: its text, all of it in one part."""
        texts = self.walk(chunks)
        if not texts:
            return []
        return [self._responses.document([{"text": "".join(event["text"] for event in texts)}])]

    def end(self) -> dict[str, Any]:
        """The last document: the calls, why the answer stopped, and what it cost."""
        parts = [function_call(call["id"], call["name"], call["arguments"]) for call in self._calls.values()]
        return self._responses.document(parts or [{"text": ""}], finish_reason(self.finishing_choice.get("finish_reason")),
                                        usage_metadata(self.usage))

    def _text(self, text: str) -> list[Event]:
        return [{"text": text}]

    def _call(self, call: dict[str, Any]) -> list[Event]:
        function = call.get("function") or {}
        held = self._calls.setdefault(call.get("index", 0), {"id": None, "name": "", "arguments": ""})
        held["id"] = held["id"] or call.get("id")
        held["name"] = held["name"] or function.get("name") or ""
        if isinstance(function.get("arguments"), str):
            held["arguments"] += function["arguments"]
        return []


class StreamFraming:
    """How documents travel: server-sent events (`alt=sse`), or one JSON array written piece by
    piece, as Google streams without `alt=sse`. An error ends either, as its last element."""

    def __init__(self, sse: bool) -> None:
        self.sse = sse
        self.content_type = SSE_CONTENT_TYPE if sse else ARRAY_CONTENT_TYPE
        self._opened = False

    def frames(self, documents: list[dict[str, Any]]) -> bytes:
        if self.sse:
            return b"".join(b"data: " + dump_json(document) + b"\r\n\r\n" for document in documents)
        out = []
        for document in documents:
            out.append((b",\r\n" if self._opened else b"[") + dump_json(document) + b"\n")
            self._opened = True
        return b"".join(out)

    def close(self) -> bytes:
        if self.sse:
            return b""
        return b"]" if self._opened else b"[]"
