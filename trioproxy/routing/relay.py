"""Relaying a streamed answer once it passed the first-chunk gate, as chat chunk documents.

The relay holds each tool call back until it is whole, so a client never holds half a set of
arguments; it books each provider's quota for its own part; and when the serving provider breaks
off after content went out, it asks the next one for the rest of the same answer (see
`continuation`) and streams that on: same ids, no text twice, one finish, one usage block.
"""

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from attrs import define, frozen

from ..logs import REQUEST_ID
from ..providers.failures import UpstreamFailure, protocol_failure
from ..providers.upstream import OpenAnswer, Upstream
from .continuation import SaidSoFar, mismatch
from .failures import client_error
from .settlement import Reported, Settlement

log = logging.getLogger("trioproxy.router")

_HEAD_FIELDS = ("id", "object", "created", "model")  # every chunk of one answer carries the first's
_NOT_EXTRA = frozenset(("choices", "usage", *_HEAD_FIELDS))  # a chunk's other fields are relayed as they come
_HELD_BACK = frozenset(("role", "content", "tool_calls"))  # delta fields the relay shapes itself


@define
class OpenStream:
    """A provider stream whose status was 2xx and whose first content has arrived."""

    upstream: Upstream
    model: str  # the model asked of it
    answer: OpenAnswer
    opening: list[dict[str, Any]]  # the events up to the first with content
    pending: list[dict[str, Any]]  # events that arrived in the same read as the first content
    settlement: Settlement
    events: int = 0  # a streamed event carries about one completion token

    async def aclose(self) -> tuple[int, int]:
        """Close it; without usage from the provider, settle what was spent so far (not the
        whole completion budget). The (prompt, completion) tokens booked for it."""
        await self.answer.aclose()
        return await self.settlement.from_estimate(self.events)


@frozen
class StreamOutcome:
    """What the relay did for one streamed answer, as far as it went (see `StreamRelay.outcome`)."""

    reported: Reported | None  # the last usage a provider reported, should any have
    # The whole answer's (prompt, completion) tokens, added over the providers that served it,
    # when several did and the answer was whole.
    answer_tokens: tuple[int, int] | None
    continuations: tuple[tuple[str, str], ...]  # (the provider that broke off, why), in order


# Asks the next provider that can serve for the rest of the answer, passing over the named
# providers; None when none can.
Resume = Callable[[SaidSoFar, frozenset[str]], Awaitable["OpenStream | None"]]
# Applies a provider's failure after content (a quota error's cooldown) as before content.
BrokeOff = Callable[[OpenStream, UpstreamFailure], Awaitable[None]]


def carries_content(document: dict[str, Any]) -> bool:
    """Whether a chunk says anything beyond announcing the assistant's role: text, a tool call,
    a finish reason or usage. Before such a chunk a failure can still be hidden."""
    if document.get("usage"):
        return True
    for choice in document.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        if choice.get("finish_reason"):
            return True
        delta = choice.get("delta")
        if isinstance(delta, dict) and any(value for key, value in delta.items() if key != "role"):
            return True
    return False


@define
class _HeldCall:
    """A tool call whose argument fragments are still arriving."""

    id: str = ""
    name: str = ""
    arguments: str = ""
    fragments: int = 0

    def whole(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@define
class _Replay:
    """A restarted answer must first say again what the client has: this much of it so far."""

    text: str
    calls: list[dict[str, Any]]
    text_matched: int = 0
    calls_matched: int = 0

    def done(self) -> bool:
        return self.text_matched == len(self.text) and self.calls_matched == len(self.calls)


class StreamRelay:
    """Chat chunk documents of one streamed answer, from one provider or, after breaks, several."""

    def __init__(self, stream: OpenStream, resume: Resume, broke_off: BrokeOff,
                 max_continuations: int, budget: int | None) -> None:
        self._stream = stream
        self._served = [stream]  # every provider stream of the answer, in order
        self._resume = resume
        self._broke_off = broke_off
        self._continuations_left = max_continuations
        self._budget = budget  # the client's completion budget, None for none
        self._said = SaidSoFar()
        self._held: dict[int, _HeldCall] = {}  # tool calls still arriving, by the provider's index
        self._replay: _Replay | None = None
        self._head: dict[str, Any] = {}
        self._role_sent = False
        self._continuable = True  # False once the answer has a shape we do not continue (n > 1, legacy calls)
        self._finished = False  # a finish_reason arrived: the answer is whole
        self._usage: list[dict[str, Any]] = []  # what each provider reported, or what was booked for it
        self._failed: set[str] = set()
        self._continuations: list[tuple[str, str]] = []
        self._answer_tokens: tuple[int, int] | None = None

    @property
    def outcome(self) -> StreamOutcome:
        """What the relay did so far: whole once `batches` ended or the relay was closed."""
        reports = (stream.settlement.reported for stream in reversed(self._served))
        reported = next((report for report in reports if report is not None), None)
        return StreamOutcome(reported, self._answer_tokens, tuple(self._continuations))

    async def batches(self) -> AsyncIterator[list[dict[str, Any]]]:
        """Chunk documents, those of one upstream read together (one client write per read).

        When a provider fails after the gate and no other can finish the answer, what came
        before is yielded and the failure raised as a ProxyError; each door ends its stream
        with its error event.
        """
        while True:
            try:
                async with aclosing(self._relay(self._stream)) as documents:
                    async for batch in documents:
                        yield batch
                break
            except UpstreamFailure as failure:
                await self._broke_off(self._stream, failure)
                await self._continue_after(failure)
        if self._usage:
            usage = _summed(self._usage)
            if len(self._usage) > 1:  # the log line tells the whole answer's tokens
                self._answer_tokens = usage["prompt_tokens"], usage["completion_tokens"]
            yield [{**self._head, "choices": [], "usage": usage}]

    async def _relay(self, stream: OpenStream) -> AsyncIterator[list[dict[str, Any]]]:
        """One provider's part: its chunks shaped as the answer's; raises UpstreamFailure if it breaks off."""
        opening = list(stream.opening)
        async with aclosing(self._reads(stream)) as reads:
            async for batch in reads:
                documents: list[dict[str, Any]] = []
                for document in opening:
                    documents += await self._take(stream, document)
                opening = []
                for document in batch:
                    documents += await self._take(stream, document)
                if documents:
                    yield documents
        if not stream.answer.done and not self._finished:
            raise protocol_failure(stream.upstream.name, "stream ended before the answer was complete")
        if self._held:
            yield self._complete_calls()
        if stream.settlement.usage is not None:
            self._usage.append(stream.settlement.usage)

    @staticmethod
    async def _reads(stream: OpenStream) -> AsyncIterator[list[dict[str, Any]]]:
        """The first read's events after the gate, then each further read's."""
        yield stream.pending
        async for batch in stream.answer.events():
            yield batch

    async def _take(self, stream: OpenStream, document: dict[str, Any]) -> list[dict[str, Any]]:
        """Account for one provider chunk; the chunks the client gets for it (maybe none yet)."""
        stream.events += 1
        if document.get("usage"):  # most chunks carry none: no settlement to await
            await stream.settlement.from_usage(document)
        if not self._head:
            self._head = {key: document[key] for key in _HEAD_FIELDS if key in document}
        shaped: list[dict[str, Any]] = []
        # What each chunk made of this one carries besides its choice: its other fields, then the answer's head.
        common = {key: value for key, value in document.items() if key not in _NOT_EXTRA}
        common.update(self._head)
        for choice in document.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            if choice.get("index", 0) != 0:  # several choices: relayed as they come, not continued
                self._continuable = False
                shaped.append({**common, "choices": [choice]})
            else:
                shaped += [{**common, "choices": [c]} for c in self._choice(stream.upstream, choice)]
        return shaped

    def _choice(self, upstream: Upstream, choice: dict[str, Any]) -> list[dict[str, Any]]:
        """The client's choices for one provider choice: text and other fields as they come,
        tool calls once whole, the finish after everything."""
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            delta = {}
        out: list[dict[str, Any]] = []
        passed = {key: value for key, value in delta.items() if key not in _HELD_BACK}
        if "function_call" in passed:
            self._continuable = False  # a legacy function call is relayed as it comes
        if delta.get("role") and not self._role_sent:
            passed = {"role": delta["role"], **passed}
            self._role_sent = True
        text = delta.get("content")
        if isinstance(text, str) and text:
            if self._held:
                out += self._complete_calls()
            if self._replay is not None:
                text = self._replayed(upstream, text)
            if text:
                self._said.said(text)
                passed["content"] = text
        if passed:
            out.append(_delta_choice(passed))
        for fragment in delta.get("tool_calls") or ():
            if isinstance(fragment, dict):
                out += self._hold(fragment)
        if choice.get("finish_reason"):
            if self._held:
                out += self._complete_calls()
            if self._replay is not None and not self._replay.done():
                raise mismatch(upstream.name, "its answer ended before it had said again what was sent")
            self._finished = True
            out.append({**{k: v for k, v in choice.items() if k != "delta"}, "index": 0, "delta": {}})
        return out

    def _replayed(self, upstream: Upstream, text: str) -> str:
        """What of a restarted answer's `text` is new; what it says again must match the sent text."""
        replay = self._replay
        if replay is None:
            return text
        overlap = min(len(text), len(replay.text) - replay.text_matched)
        if text[:overlap] != replay.text[replay.text_matched:replay.text_matched + overlap]:
            raise mismatch(upstream.name, "its new answer does not begin with the text already sent")
        replay.text_matched += overlap
        rest = text[overlap:]
        if rest and replay.calls_matched < len(replay.calls):
            raise mismatch(upstream.name, "its new answer says other text where a tool call was sent")
        if replay.done():
            self._replay = None
        return rest

    def _hold(self, fragment: dict[str, Any]) -> list[dict[str, Any]]:
        """Keep a tool-call fragment until its call is whole; a call whose successor starts is."""
        index = fragment.get("index", 0)
        out = [] if index in self._held else self._complete_calls()
        call = self._held.setdefault(index, _HeldCall())
        function = fragment.get("function") if isinstance(fragment.get("function"), dict) else {}
        call.id = call.id or fragment.get("id") or ""
        call.name += function.get("name") or ""
        call.arguments += function.get("arguments") or ""
        call.fragments += 1
        return out

    def _complete_calls(self) -> list[dict[str, Any]]:
        """Every held call, whole, each as one chunk choice numbered in the client's answer."""
        out = []
        for call in self._held.values():
            whole = call.whole()
            if self._replay is not None:
                self._match_replayed(whole)
                continue
            if any(sent["id"] == whole["id"] for sent in self._said.calls if whole["id"]):
                raise mismatch(self._stream.upstream.name, f"it answered with tool call id {whole['id']} again")
            self._said.calls.append(whole)
            self._said.tokens += call.fragments
            out.append(_delta_choice({"tool_calls": [{"index": len(self._said.calls) - 1, **whole}]}))
        self._held.clear()
        return out

    def _match_replayed(self, call: dict[str, Any]) -> None:
        """A restarted answer's call must be the sent one at its place: the same function and
        the same arguments. Its id may differ, since every provider mints its own: the client
        keeps the one it was sent (nothing of the new call reaches it)."""
        replay = self._replay
        assert replay is not None
        if replay.text_matched < len(replay.text) or replay.calls_matched >= len(replay.calls):
            raise mismatch(self._stream.upstream.name, "its new answer calls a tool where other content was sent")
        if replay.calls[replay.calls_matched]["function"] != call["function"]:
            raise mismatch(self._stream.upstream.name, "its new answer has another tool call than the one sent")
        replay.calls_matched += 1
        if replay.done():
            self._replay = None

    async def _continue_after(self, failure: UpstreamFailure) -> None:
        """Switch to the next provider that can finish the answer; raise the failure's error if none."""
        stream = self._stream
        if not self._may_continue(stream.upstream, failure):
            raise client_error(failure) from None
        booked = await stream.aclose()
        self._usage.append(stream.settlement.usage or _usage_block(booked))
        self._held.clear()  # a call cut off is asked for again, whole
        self._failed.add(stream.upstream.name)
        self._continuations_left -= 1
        following = await self._resume(self._said, frozenset(self._failed))
        if following is None:
            log.warning("request %s: no provider could continue what %s broke off", REQUEST_ID.get(), stream.upstream.name)
            raise client_error(failure) from None
        self._continuations.append((stream.upstream.name, failure.label))
        self._stream = following
        self._served.append(following)
        if following.upstream.config.continuation == "restart" and (self._said.pieces or self._said.calls):
            self._replay = _Replay(self._said.text, list(self._said.calls))
        log.warning("request %s: %s continues the answer %s broke off (%s)", REQUEST_ID.get(),
                 following.upstream.name, stream.upstream.name, failure.label)

    def _may_continue(self, upstream: Upstream, failure: UpstreamFailure) -> bool:
        why_not = None
        if not self._continuable:
            why_not = "the answer has several choices or a legacy function call"
        elif self._continuations_left <= 0:
            why_not = "max_continuations reached"
        elif self._budget is not None and self._budget - self._said.tokens <= 0:
            why_not = "the answer's token budget is spent"
        if why_not is not None:
            log.info("request %s: %s broke off (%s); no continuation: %s", REQUEST_ID.get(), upstream.name,
                     failure.label, why_not)
        return why_not is None

    async def aclose(self) -> None:
        """Close the provider stream in use; one that ended without usage (client gone, provider
        failed) is settled for what was spent so far instead of the whole completion budget."""
        await self._stream.aclose()


def _delta_choice(delta: dict[str, Any]) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "finish_reason": None}


def _usage_block(tokens: tuple[int, int]) -> dict[str, Any]:
    prompt, completion = tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _summed(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One usage block for the answer: each provider's figures added up (one provider's as it was)."""
    if len(reports) == 1:
        return reports[0]
    total = _usage_block((sum(r.get("prompt_tokens") or 0 for r in reports),
                          sum(r.get("completion_tokens") or 0 for r in reports)))
    cached = sum((r.get("prompt_tokens_details") or {}).get("cached_tokens") or 0 for r in reports)
    if cached:
        total["prompt_tokens_details"] = {"cached_tokens": cached}
    return total
