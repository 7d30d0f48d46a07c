"""The routing policy: which provider serves a request, and when to fail over to the next."""

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import aclosing, asynccontextmanager, contextmanager
from typing import Any, TypeVar

import httpx
import trio
from attrs import define, field

from .adapt import Unsupported, adapt_request
from ..doors.chat import ApiError, ChatRequest, rewrite_model
from ..jsoncodec import dump_json
from ..quota.cooldown import CooldownTimers
from ..providers.health import ProviderHealth
from ..quota.contract import Ledger, Refusal, Reservation
from ..providers.ratelimit import backoff_for, quota_figures
from .tokens import PromptEstimator, requested_completion_tokens
from ..providers.upstream import DONE, Upstream, UpstreamFailure, json_object, protocol_failure

log = logging.getLogger("trioproxy.router")

T = TypeVar("T")

# Client errors that are the provider's peculiarity rather than the client's fault: the next
# provider may well accept the same request.
_FAILOVER_CODES = frozenset({"wrong_api_format", "context_length_exceeded"})
_FAILOVER_STATUSES = frozenset({401, 402, 403, 404, 408, 409, 429})
DRAIN_SECONDS = 1.0  # how long to read on after a stream's [DONE] for its end


@define
class RequestRecord:
    """What one request did, filled in along the way and logged once by the app."""

    request_id: str
    stream: bool = False
    provider: str = "-"
    account: str = "-"  # which key's quota paid, e.g. cerebras#2; never the key itself
    reason: str = "-"
    status: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_estimate: int = 0  # the raw estimate, so usage can teach the estimator
    upstream_seconds: float = 0.0  # time spent waiting on providers, to tell the proxy's own overhead
    started: float = field(factory=trio.current_time)
    first_byte_at: float | None = None  # streams: when the client's 200 went out

    def overhead_seconds(self, until: float) -> float:
        """Time up to `until` that the proxy, not a provider, spent on this request."""
        return until - self.started - self.upstream_seconds


def is_retryable(failure: UpstreamFailure) -> bool:
    """Whether another provider should get the request after this failure."""
    if failure.kind != "status" or failure.status is None:
        return True  # timeouts, resets, garbage: the next provider may well be fine
    return (
        failure.status >= 500
        or failure.status in _FAILOVER_STATUSES
        or (failure.status == 400 and failure.error.code in _FAILOVER_CODES)
    )


def _usage_tokens(document: dict[str, Any]) -> tuple[int, int] | None:
    usage = document.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        return prompt, completion
    return None


@contextmanager
def waiting_on_upstream(record: RequestRecord) -> Iterator[None]:
    """Count the time inside as the provider's, not the proxy's."""
    started = trio.current_time()
    try:
        yield
    finally:
        record.upstream_seconds += trio.current_time() - started


class StreamRelay:
    """An upstream stream that passed the first-chunk gate, relayed as SSE bytes."""

    def __init__(
        self,
        router: "Router",
        upstream: Upstream,
        response: httpx.Response,
        batches: AsyncIterator[list[str]],
        first: dict[str, Any],
        pending: list[str],
        request: ChatRequest,
        reservation: Reservation,
        record: RequestRecord,
    ) -> None:
        self._router = router
        self._upstream = upstream
        self._response = response
        self._batches = batches
        self._first = first
        self._pending = pending  # events that arrived in the same read as the first
        self._request = request
        self._reservation = reservation
        self._record = record
        self._events_seen = 0  # a streamed event carries about one completion token
        self._settled = False
        self._finished = False  # a choice has a finish_reason: the answer is whole

    async def chunks(self) -> AsyncIterator[bytes]:
        """SSE frames for the client, ending with `data: [DONE]` whatever happens upstream.

        Each yield holds every event of one upstream read, so the client gets one write per read.
        """
        done = False
        first_frames = [await self._frame(self._first)]
        try:
            async with aclosing(self._reads()) as reads:
                async for batch in reads:
                    frames, first_frames = first_frames, []
                    done, failure = await self._frames(batch, frames)
                    if joined := b"".join(frames):
                        yield joined  # what came before a broken event still reaches the client
                    if failure is not None:
                        raise failure
                    if done:
                        break
            if done:
                await self._drain()
            elif not self._finished:
                raise protocol_failure(self._upstream.name, "stream ended before the answer was complete")
        except UpstreamFailure as failure:
            log.warning("request %s: %s failed mid-stream: %s", self._record.request_id, failure.provider, failure.label)
            yield b"data: " + failure.error.encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    async def _reads(self) -> AsyncIterator[list[str]]:
        """The first read's events after the gate, then each further read's."""
        yield self._pending
        async for batch in self._batches:
            yield batch

    async def _frames(self, batch: list[str], frames: list[bytes]) -> tuple[bool, UpstreamFailure | None]:
        """Append the client frames of `batch`; whether [DONE] came, and the failure that stopped it."""
        for data in batch:
            if data.strip() == DONE:
                return True, None
            try:
                frames.append(await self._frame(json_object(self._upstream.name, data, "stream event")))
            except UpstreamFailure as failure:
                return False, failure
        return False, None

    async def _drain(self) -> None:
        """Read the little that follows [DONE], so the connection goes back to the pool; a
        provider that holds the body open after it only costs that connection."""
        with trio.move_on_after(DRAIN_SECONDS):
            try:
                async for _ in self._batches:
                    pass
            except UpstreamFailure:
                pass

    async def _frame(self, document: dict[str, Any]) -> bytes:
        """Rewrite one event for the client; settle quota when it carries usage."""
        self._events_seen += 1
        choices = document.get("choices")
        if isinstance(choices, list) and any(isinstance(c, dict) and c.get("finish_reason") for c in choices):
            self._finished = True
        if await self._router.account_usage(document, self._reservation, self._record):
            self._settled = True
            if not self._request.wants_usage:
                # The client did not ask for usage: drop it, and drop a chunk that held only usage.
                del document["usage"]
                if not document.get("choices"):
                    return b""
        rewrite_model(document, self._router.proxy_model)
        return b"data: " + dump_json(document) + b"\n\n"

    async def aclose(self) -> None:
        """Close the upstream stream; if it ended without usage (client gone, provider failed),
        settle what was spent so far instead of the whole completion budget."""
        await self._batches.aclose()  # type: ignore[attr-defined]
        await self._response.aclose()
        if not self._settled:
            prompt = round(self._record.prompt_estimate * self._router.estimator.ratio)
            await self._router.ledger.settle(self._reservation, prompt + self._events_seen)


class Router:
    """Tries providers in order of preference, within quota, failing over on what is retryable."""

    def __init__(
        self,
        proxy_model: str,
        upstreams: Sequence[Upstream],
        ledger: Ledger,
        cooldowns: CooldownTimers,
        cooldown_seconds: float,
        capacity_backoff_seconds: float,
        honour_retry_after: bool = True,
        health: dict[str, ProviderHealth] | None = None,
    ) -> None:
        self.proxy_model = proxy_model
        self.upstreams = upstreams
        self.ledger = ledger
        self.health = health if health is not None else {u.name: ProviderHealth() for u in upstreams}
        self.estimator = PromptEstimator()
        self._cooldowns = cooldowns
        self._cooldown_seconds = cooldown_seconds
        self._capacity_backoff_seconds = capacity_backoff_seconds
        self._honour_retry_after = honour_retry_after

    async def complete(self, request: ChatRequest, record: RequestRecord) -> dict[str, Any]:
        """A non-streamed answer, model name rewritten, from the first provider that delivers."""

        async def attempt(upstream: Upstream, body: dict[str, Any], reservation: Reservation) -> dict[str, Any]:
            response = await self._open(upstream, body, reservation, record)
            try:
                with waiting_on_upstream(record):
                    document = await upstream.read_json(response)
            finally:
                await response.aclose()
            await self.account_usage(document, reservation, record)
            return rewrite_model(document, self.proxy_model)

        return await self._route(request, record, attempt)

    @asynccontextmanager
    async def stream(self, request: ChatRequest, record: RequestRecord) -> AsyncIterator[StreamRelay]:
        """A stream whose status is 2xx and whose first event has arrived (the first-chunk gate)."""

        async def attempt(upstream: Upstream, body: dict[str, Any], reservation: Reservation) -> StreamRelay:
            response = await self._open(upstream, body, reservation, record)
            batches = upstream.event_batches(response)
            try:
                with waiting_on_upstream(record):
                    first, pending = await self._first_event(upstream, batches)
            except BaseException:
                with trio.CancelScope(shield=True):
                    await batches.aclose()  # type: ignore[attr-defined]
                    await response.aclose()
                raise
            return StreamRelay(self, upstream, response, batches, first, pending, request, reservation, record)

        relay = await self._route(request, record, attempt)
        try:
            yield relay
        finally:
            with trio.CancelScope(shield=True):
                await relay.aclose()

    async def account_usage(self, document: dict[str, Any], reservation: Reservation, record: RequestRecord) -> bool:
        """Settle the reservation and teach the estimator if `document` carries usage."""
        usage = _usage_tokens(document)
        if usage is None:
            return False
        record.prompt_tokens, record.completion_tokens = usage
        await self.ledger.settle(reservation, sum(usage))
        self.estimator.learn(record.prompt_estimate, usage[0])
        return True

    async def _open(
        self, upstream: Upstream, body: dict[str, Any], reservation: Reservation, record: RequestRecord
    ) -> httpx.Response:
        """Send with the reserved account's key; the provider's quota headers correct the ledger."""
        try:
            with waiting_on_upstream(record):
                response = await upstream.open_chat(body, upstream.config.keys[reservation.key_index])
        except UpstreamFailure as failure:
            await self._sync(upstream, reservation, failure.headers)
            raise
        await self._sync(upstream, reservation, response.headers)
        return response

    async def _sync(self, upstream: Upstream, reservation: Reservation, headers: httpx.Headers) -> None:
        if not upstream.config.sync_rate_limit_headers:
            return
        figures = quota_figures(headers, upstream.config.rate_limit_headers.pairs())
        if figures:
            await self.ledger.sync(reservation, figures)

    @staticmethod
    async def _first_event(
        upstream: Upstream, batches: AsyncIterator[list[str]]
    ) -> tuple[dict[str, Any], list[str]]:
        """The first event (an error there fails over) and the rest of its read."""
        async for batch in batches:
            data, rest = batch[0], batch[1:]
            if data.strip() == DONE:
                break
            document = json_object(upstream.name, data, "stream event")
            if isinstance(document.get("error"), dict) or "detail" in document:
                failure = protocol_failure(upstream.name, "stream began with an error")
                failure.error.message = str(document.get("error", {}).get("message") or document.get("detail"))
                raise failure
            return document, rest
        raise protocol_failure(upstream.name, "stream ended before its first event")

    async def _route(
        self,
        request: ChatRequest,
        record: RequestRecord,
        attempt: Callable[[Upstream, dict[str, Any], Reservation], Awaitable[T]],
    ) -> T:
        """Run `attempt` on each provider in turn until one delivers; raise ApiError if none does."""
        record.stream = request.stream
        record.prompt_estimate, prompt_estimate = self.estimator.estimate(request.body)
        why_not_previous: str | None = None
        last_failure: UpstreamFailure | None = None
        for upstream, skipped_because in self._in_order():
            why_not_previous = skipped_because or why_not_previous
            try:
                body = adapt_request(request.body, upstream.config, request.stream)
            except Unsupported as unsupported:
                why_not_previous = f"fallback: {unsupported.field}"
                continue
            cost = prompt_estimate + (requested_completion_tokens(body) or 0)
            window = upstream.config.context_window
            if window is not None and cost > window:
                why_not_previous = "fallback: context"
                continue
            reservation = await self.ledger.reserve(upstream.name, cost, floor=prompt_estimate)
            if isinstance(reservation, Refusal):
                why_not_previous = f"fallback: {reservation.reason}"
                log.debug("request %s: %s skipped (%s)", record.request_id, upstream.name, reservation.reason)
                continue
            record.provider, record.account = upstream.name, reservation.account
            record.reason = why_not_previous or "preferred"
            succeeded = False
            try:
                result = await attempt(upstream, body, reservation)
                succeeded = True
                return result
            except UpstreamFailure as failure:
                last_failure = failure
                await self._after_failure(upstream, failure, reservation, record)
                if not is_retryable(failure):
                    raise failure.error from None
                why_not_previous = f"failover: {failure.label}"
            finally:
                self.ledger.finish_probe(reservation, succeeded)
        raise self._final_error(last_failure)

    def _in_order(self) -> list[tuple[Upstream, str | None]]:
        """Providers by preference, those the prober found down or without the model last.

        They stay as a last resort: a prober can be wrong, and an attempt beats a sure error.
        Each comes with the reason the ones before it were passed over, if any.
        """
        usable = [u for u in self.upstreams if self.health[u.name].usable]
        deferred = [u for u in self.upstreams if not self.health[u.name].usable]
        order: list[tuple[Upstream, str | None]] = []
        for upstream in usable:
            passed_over = [u for u in deferred if self.upstreams.index(u) < self.upstreams.index(upstream)]
            order.append((upstream, f"fallback: {self.health[passed_over[0].name].why_not}" if passed_over else None))
        return order + [(upstream, None) for upstream in deferred]

    async def _after_failure(
        self, upstream: Upstream, failure: UpstreamFailure, reservation: Reservation, record: RequestRecord
    ) -> None:
        log.warning(
            "request %s: %s failed (%s): %s", record.request_id, upstream.name, failure.label, failure.error.message
        )
        if failure.status is not None and failure.status < 500:
            # A refused request ran nothing; only the request itself counts, not its tokens.
            await self.ledger.settle(reservation, 0)
        backoff = backoff_for(
            failure, self._cooldown_seconds, self._capacity_backoff_seconds, self._honour_retry_after
        )
        if backoff is not None:
            source = "provider's hint" if backoff.from_provider else "default"
            await self._cooldowns.start(reservation.account, backoff.seconds, f"{failure.status} {backoff.kind}, {source}")

    def _final_error(self, last_failure: UpstreamFailure | None) -> ApiError:
        """The client's error when no provider delivered: the last provider's, or a quota refusal."""
        if last_failure is None:
            error = ApiError(
                429,
                "Every provider is out of quota or cooling down; try again later.",
                type="rate_limit_error",
                code="rate_limit_exceeded",
            )
        else:
            error = last_failure.error
            if error.status >= 500 and error.status not in (502, 503, 504):
                error.status = 502
        if error.status in (429, 503):
            error.headers["retry-after"] = str(self._seconds_until_capacity())
        return error

    def _seconds_until_capacity(self) -> int:
        """Whole seconds until the first provider might take a request again (at least 1)."""
        now = self.ledger.now()
        soonest = min(self.ledger.available_at(upstream.name) for upstream in self.upstreams)
        return max(1, math.ceil(soonest - now))
