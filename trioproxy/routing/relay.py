"""Relaying a provider's stream once it passed the first-chunk gate: chunk documents out, quota settled."""

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import httpx
import trio
from attrs import define

from ..providers.upstream import DONE, Upstream, UpstreamFailure, protocol_failure
from .settlement import Settlement

log = logging.getLogger("trioproxy.router")

DRAIN_SECONDS = 1.0  # how long to read on after a stream's [DONE] for its end


@define
class OpenStream:
    """A provider stream whose status was 2xx and whose first event has arrived."""

    upstream: Upstream
    response: httpx.Response
    batches: AsyncIterator[list[str]]
    opening: list[dict[str, Any]]  # the events up to the first with content
    pending: list[str]  # events that arrived in the same read as the first content


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


class StreamRelay:
    """Chat chunk documents from one open provider stream; the doors encode them for clients."""

    def __init__(self, stream: OpenStream, settlement: Settlement) -> None:
        self._stream = stream
        self._settlement = settlement
        self._events_seen = 0  # a streamed event carries about one completion token
        self._finished = False  # a choice has a finish_reason: the answer is whole

    async def batches(self) -> AsyncIterator[list[dict[str, Any]]]:
        """Chunk documents, those of one upstream read together (one client write per read).

        When the provider fails after the gate, what came before is yielded and then the
        failure is raised as a ProxyError; each door ends its stream with its error event.
        """
        done = False
        first = list(self._stream.opening)
        try:
            async with aclosing(self._reads()) as reads:
                async for batch in reads:
                    documents, first = first, []
                    for document in documents:
                        await self._account(document)
                    done, failure = await self._parse(batch, documents)
                    if documents:
                        yield documents  # what came before a broken event still reaches the client
                    if failure is not None:
                        raise failure
                    if done:
                        break
            if done:
                await self._drain()
            elif not self._finished:
                raise protocol_failure(self._stream.upstream.name, "stream ended before the answer was complete")
        except UpstreamFailure as failure:
            log.warning("%s failed mid-stream: %s", failure.provider, failure.label)
            raise failure.error from None

    async def _reads(self) -> AsyncIterator[list[str]]:
        """The first read's events after the gate, then each further read's."""
        yield self._stream.pending
        async for batch in self._stream.batches:
            yield batch

    async def _parse(self, batch: list[str], documents: list[dict[str, Any]]) -> tuple[bool, UpstreamFailure | None]:
        """Append the documents of `batch`; whether [DONE] came, and the failure that stopped it."""
        for data in batch:
            if data.strip() == DONE:
                return True, None
            try:
                document = self._stream.upstream.event(data)
            except UpstreamFailure as failure:
                return False, failure
            await self._account(document)
            documents.append(document)
        return False, None

    async def _account(self, document: dict[str, Any]) -> None:
        self._events_seen += 1
        choices = document.get("choices")
        if isinstance(choices, list) and any(isinstance(c, dict) and c.get("finish_reason") for c in choices):
            self._finished = True
        await self._settlement.from_usage(document)

    async def _drain(self) -> None:
        """Read the little that follows [DONE], so the connection goes back to the pool; a
        provider that holds the body open after it only costs that connection."""
        with trio.move_on_after(DRAIN_SECONDS):
            try:
                async for _ in self._stream.batches:
                    pass
            except UpstreamFailure:
                pass

    async def aclose(self) -> None:
        """Close the upstream stream; if it ended without usage (client gone, provider failed),
        settle what was spent so far instead of the whole completion budget."""
        await self._stream.batches.aclose()  # type: ignore[attr-defined]
        await self._stream.response.aclose()
        await self._settlement.from_estimate(self._events_seen)
