"""The routing policy: which provider serves a request, and when to fail over to the next."""

import functools
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import trio
from attrs import define, field

from ..errors import ProxyError
from ..logs import REQUEST_ID
from ..providers.health import ProviderHealth
from ..quota.contract import Ledger, Refusal, Reservation
from ..providers.failures import Kind, UpstreamFailure, protocol_failure
from ..providers.upstream import OpenAnswer, Upstream
from ..quota.cooldown import CooldownTimers
from .adapt import Unsupported, adapt_request
from .failures import HANDLING, RETRY_STATUSES, backoff_for, client_error
from .fair_share import FairShare
from .patience import Pace, Patience, Waiting
from .continuation import SaidSoFar, continuation_body
from .prompt_cache import PromptMemory, PromptPrefix
from .relay import OpenStream, StreamOutcome, StreamRelay, carries_content
from .request import ChatRequest, RouteRecord
from .settlement import Reported, Settlement
from .tokens import PromptEstimator, estimate_answer_tokens, requested_completion_tokens

log = logging.getLogger("trioproxy.router")

T = TypeVar("T")

class Router:
    """Tries providers in order of preference, within quota, failing over on what is retryable."""

    def __init__(
        self,
        upstreams: Sequence[Upstream],
        ledger: Ledger,
        cooldowns: CooldownTimers,
        cooldown_seconds: float,
        capacity_backoff_seconds: float,
        honour_retry_after: bool = True,
        health: dict[str, ProviderHealth] | None = None,
        route: str = "",
        max_wait_seconds: float = 0.0,
        fair_share: FairShare | None = None,
        max_continuations: int = 0,
    ) -> None:
        self.route = route  # the client-visible model this router serves
        self._fair_share = fair_share  # None: first come, first served
        self.upstreams = upstreams
        self.ledger = ledger
        self.health = health if health is not None else {u.name: ProviderHealth() for u in upstreams}
        self.estimator = PromptEstimator()
        self._cooldowns = cooldowns
        self._cooldown_seconds = cooldown_seconds
        self._capacity_backoff_seconds = capacity_backoff_seconds
        self._honour_retry_after = honour_retry_after
        self._max_continuations = max_continuations
        starting = {
            u.quota_key: Pace(u.config.time_to_first_token_ms / 1000, u.config.output_tokens_per_second)
            for u in upstreams
        }
        self.patience = Patience(ledger, starting, max_wait_seconds)
        # Per provider model whose prompt cache admission predicts: what each key sent lately.
        self.prompt_memory = {
            u.quota_key: PromptMemory(
                len(u.config.keys) or 1, u.config.prompt_cache_seconds, u.config.prompt_cache_block_tokens,
                u.config.prompt_cache_entries, ledger.now,
            )
            for u in upstreams
            if u.config.prompt_cache_seconds > 0
        }

    def take(self, request: ChatRequest) -> "Routing":
        """`request`'s way through this router; what routing does for it is the `outcome` of
        the Routing returned, which routing alone writes."""
        return Routing(self, request)

    def expected_tokens(self, body: dict[str, Any]) -> int:
        """The tokens a request is expected to take in all, as its first provider books it: the
        prompt's estimate plus the completion budget it is sent with (the client's, within the
        provider's cap; the cap when the client names none). With neither, the answers' learned
        mean length (the one patience expects), not nothing: the answer counts too."""
        prompt = self.estimator.estimate(body)[1]
        named = requested_completion_tokens(body)
        cap = self.upstreams[0].config.max_completion_tokens_cap if self.upstreams else None
        if named is not None:
            return prompt + (named if cap is None else min(named, cap))
        return prompt + (cap if cap is not None else math.ceil(self.patience.completion_tokens))

    async def _complete(self, request: ChatRequest, record: RouteRecord) -> dict[str, Any]:
        """A non-streamed chat answer from the first provider that delivers; `record` is the
        request's outcome, which this router writes as it goes (see `take`)."""

        async def attempt(upstream: Upstream, body: dict[str, Any], settlement: Settlement) -> dict[str, Any]:
            with upstream.answer_deadlines() as deadlines:
                answer = await self._open(upstream, body, settlement.reservation, record)
                deadlines.started()
                try:
                    with waiting_on_upstream(record):
                        document = await answer.document()
                finally:
                    await answer.aclose()
            if not await settlement.from_usage(document):
                # Without usage, the answer's own text is the best figure (as a stream's events
                # are): the reservation's whole completion budget would stay booked.
                await settlement.from_estimate(estimate_answer_tokens(document))
            return document

        return await self._route(request, record, attempt)

    @asynccontextmanager
    async def _stream(self, request: ChatRequest, record: RouteRecord) -> AsyncIterator[StreamRelay]:
        """A stream whose status is 2xx and whose first content has arrived (the first-chunk gate),
        relayed on by the next providers that can serve should it break off later; `record` is
        the request's outcome, which this router writes, complete when the stream ends (see `take`)."""
        open_stream = functools.partial(self._open_stream, record)

        async def resume(said: SaidSoFar, passed_over: frozenset[str]) -> OpenStream | None:
            def ask(upstream: Upstream, body: dict[str, Any]) -> dict[str, Any] | None:
                if upstream.name in passed_over:
                    return None
                return continuation_body(body, upstream.config.continuation, said)

            reason = record.reason  # the answer's: why its first provider served it
            try:
                following = await self._route(request, record, open_stream, ask)
            except ProxyError:
                following = None  # nobody could: the stream ends with the first failure's error
            record.reason = reason
            return following

        async def broke_off(stream: OpenStream, failure: UpstreamFailure) -> None:
            await self._after_failure(stream.upstream, stream.model, failure, stream.settlement, mid_stream=True)

        first = await self._route(request, record, open_stream)
        relay = StreamRelay(first, resume, broke_off, self._max_continuations, requested_completion_tokens(request.body))
        try:
            yield relay
        finally:
            try:
                with trio.CancelScope(shield=True):
                    await relay.aclose()
            finally:
                _record_stream(record, relay.outcome)

    async def _open_stream(
        self, record: RouteRecord, upstream: Upstream, body: dict[str, Any], settlement: Settlement
    ) -> OpenStream:
        with upstream.first_event_deadline():
            answer = await self._open(upstream, body, settlement.reservation, record)
            try:
                with waiting_on_upstream(record):
                    opening, pending = await self._first_event(upstream, answer)
            except BaseException:
                with trio.CancelScope(shield=True):
                    await answer.aclose()
                raise
        return OpenStream(upstream, body["model"], answer, opening, pending, settlement)

    async def _open(
        self, upstream: Upstream, body: dict[str, Any], reservation: Reservation, record: RouteRecord
    ) -> OpenAnswer:
        """Send with the reserved account's key; the provider's quota headers correct the ledger."""
        try:
            with waiting_on_upstream(record):
                answer = await upstream.open_chat(body, upstream.config.keys[reservation.key_index])
        except UpstreamFailure as failure:
            await self._sync(upstream, reservation, failure.headers)
            raise
        try:
            await self._sync(upstream, reservation, answer.headers)
        except BaseException:  # a cancel can land here, after the provider answered
            with trio.CancelScope(shield=True):
                await answer.aclose()
            raise
        return answer

    async def _sync(self, upstream: Upstream, reservation: Reservation, headers: Mapping[str, str]) -> None:
        if not upstream.config.sync_rate_limit_headers:
            return
        names = upstream.quota_headers
        stated = names.stated_limits(headers)
        if stated:  # before the figures: what remains is measured against the stated limit
            await self.ledger.adopt_limits(reservation, stated)
        figures = names.quota_figures(headers)
        if figures:
            await self.ledger.sync(reservation, figures)

    @staticmethod
    async def _first_event(
        upstream: Upstream, answer: OpenAnswer
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The events up to the first that carries content, and the rest of its read.

        Events before content (a role announcement) are held back with it: an error event
        among them raises, and the next provider serves as after a status.
        """
        opening: list[dict[str, Any]] = []
        async for batch in answer.events():  # an error event raises: the next provider serves
            for position, document in enumerate(batch):
                opening.append(document)
                if carries_content(document):
                    return opening, batch[position + 1 :]
        raise protocol_failure(upstream.name, "stream ended before its first content")

    async def _route(
        self,
        request: ChatRequest,
        record: RouteRecord,
        attempt: Callable[[Upstream, dict[str, Any], Settlement], Awaitable[T]],
        ask: Callable[[Upstream, dict[str, Any]], dict[str, Any] | None] | None = None,
    ) -> T:
        """Run `attempt` on each provider in turn until one delivers; raise ProxyError if none does.

        `ask` turns the body fit for a provider into what to send it (a continuation), or None
        to pass that provider over.
        """
        prefix, messages_json = PromptPrefix.of(request.body) if self.prompt_memory else (None, None)
        raw_estimate, prompt_estimate = self.estimator.estimate(request.body, messages_json)
        order = self._in_order()
        if not order:
            raise self._model_unavailable()
        why_not_previous: str | None = None
        last_failure: UpstreamFailure | None = None
        for position, (upstream, skipped_because) in enumerate(order):
            why_not_previous = skipped_because or why_not_previous
            model = self._health_of(upstream).choose(upstream.config.model)
            if model is None:  # a failure just now said the last candidate does not exist
                continue
            try:
                body = adapt_request(request.body, upstream.config, model, request.stream)
            except Unsupported as unsupported:
                why_not_previous = f"fallback: {unsupported.field}"
                continue
            if ask is not None:
                asked = ask(upstream, body)
                if asked is None:
                    continue
                body = asked
            cost = prompt_estimate + (requested_completion_tokens(body) or 0)
            window = upstream.config.context_window
            if window is not None and cost > window:
                why_not_previous = "fallback: context"
                continue
            later = [other for other, _ in order[position + 1 :]]
            memory = self.prompt_memory.get(upstream.quota_key)
            uncached = None
            if memory is not None and prefix is not None:
                uncached = [prompt_estimate - cached for cached in memory.cached(prefix, prompt_estimate)]
            # The last provider takes whatever is left: a share only decides who goes elsewhere.
            ticket = None
            if self._fair_share is not None and later:
                ticket = self._fair_share.ticket(upstream.quota_key, request.client, request.weight, cost)
            reservation = await self.patience.reserve(
                upstream, cost, body, later, floor=prompt_estimate, uncached=uncached, ticket=ticket
            )
            if isinstance(reservation, Waiting):
                reservation = await _wait(reservation, record)
            if isinstance(reservation, Refusal):
                why_not_previous = f"fallback: {reservation.reason}"
                log.debug("request %s: %s skipped (%s)", REQUEST_ID.get(), upstream.name, reservation.reason)
                continue
            record.provider, record.account = upstream.name, reservation.account
            record.reason = why_not_previous or "preferred"
            succeeded = False
            timer = self.patience.timer(upstream)
            remember = None
            if memory is not None and prefix is not None:
                remember = functools.partial(memory.remember, reservation.key_index, prefix)
            settlement = Settlement(self.ledger, self.estimator, reservation, raw_estimate, timer.usage, remember, ticket)
            try:
                result = await attempt(upstream, body, settlement)
                if request.stream:
                    timer.first_event()
                succeeded = True
                return result
            except UpstreamFailure as failure:
                last_failure = failure
                await self._after_failure(upstream, model, failure, settlement)
                if not HANDLING[failure.kind].failover:
                    raise client_error(failure) from None
                why_not_previous = f"failover: {failure.label}"
                record.failed_over.append(upstream.name)
            except BaseException as error:  # a client gone (Cancelled), or a bug: no answer follows
                with trio.CancelScope(shield=True):
                    await settlement.abandon(cancelled=isinstance(error, trio.Cancelled))
                raise
            finally:
                self.ledger.finish_probe(reservation, succeeded)
                if settlement.reported is not None:  # a plain answer's usage (a stream's comes later)
                    _record_usage(record, settlement.reported)
        raise self._final_error(last_failure)

    def _in_order(self) -> list[tuple[Upstream, str | None]]:
        """Providers to try by preference: those without the route's model not at all, those the
        prober found down last.

        A provider whose own model list lacks the model (or that said the model does not exist)
        would only answer "no such model": a request there is spent for a sure error. A provider
        whose probe failed is another matter: `GET /models` failing does not mean chat fails, so
        it stays a last resort, where an attempt beats a sure error.
        Each comes with the reason the ones before it in preference were passed over, if any.
        """
        offering = [u for u in self.upstreams if self._health_of(u).choose(u.config.model) is not None]
        up = [u for u in offering if self._health_of(u).up]
        if len(up) == len(self.upstreams):  # the usual case: all up and offering, none passed over
            return [(upstream, None) for upstream in up]
        order: list[tuple[Upstream, str | None]] = []
        for upstream in up + [u for u in offering if u not in up]:
            tried = [u for u, _ in order]
            passed_over = [u for u in self.upstreams[: self.upstreams.index(upstream)] if u not in tried]
            # A last resort after failures keeps the failure as its reason.
            why = None
            if passed_over and (not order or upstream in up):
                skipped = passed_over[0]
                why = f"fallback: {self._health_of(skipped).why_not(skipped.config.model)}"
            order.append((upstream, why))
        return order

    def _health_of(self, upstream: Upstream) -> ProviderHealth:
        return self.health[upstream.name]

    def _model_unavailable(self) -> ProxyError:
        """A 503 naming the route and its candidates when no provider offers any of them:
        nothing to try, nothing to spend."""
        error = ProxyError(
            503,
            f"No provider offers a model of `{self.route}` today ("
            + "; ".join(f"{u.name}: {', '.join(u.config.model)}" for u in self.upstreams)
            + "); trioproxy checks their model lists again shortly.",
            type="api_error",
            code="model_unavailable",
        )
        probes = [at for u in self.upstreams if (at := self._health_of(u).next_probe_at) is not None]
        if probes:
            error.headers["retry-after"] = str(max(1, math.ceil(min(probes) - trio.current_time())))
        return error

    async def _after_failure(
        self, upstream: Upstream, model: str, failure: UpstreamFailure, settlement: Settlement,
        mid_stream: bool = False,
    ) -> None:
        """What a provider's failure teaches: a missing model, a refusal's booking, a cooldown.

        `mid_stream`: it broke off after content went out, so the stream's settlement books
        what it spent; the cooldown rules are those of the same failure before content.
        """
        reservation = settlement.reservation
        log.warning(
            "request %s: %s failed%s (%s): %s", REQUEST_ID.get(), upstream.name, " mid-stream" if mid_stream else "",
            failure.label, failure.message,
        )
        if failure.kind is Kind.MODEL_MISSING:
            self._health_of(upstream).mark_missing(upstream.name, model)
        if not mid_stream and HANDLING[failure.kind].ran_nothing:
            # A refused request ran nothing; only the request itself counts, not its tokens
            # (in the ledger and in the client's fair share alike).
            await settlement.abandon(cancelled=False)
        backoff = backoff_for(
            failure, self._cooldown_seconds, self._capacity_backoff_seconds, self._honour_retry_after
        )
        if backoff is not None:
            source = "provider's hint" if backoff.from_provider else "default"
            await self._cooldowns.start(reservation.account, backoff.seconds, f"{failure.status} {backoff.window}, {source}")

    def _final_error(self, last_failure: UpstreamFailure | None) -> ProxyError:
        """The client's error when no provider delivered: the last provider's, or a quota refusal."""
        if last_failure is None:
            error = ProxyError(
                429,
                "Every provider is out of quota or cooling down; try again later.",
                type="rate_limit_error",
                code="rate_limit_exceeded",
            )
        else:
            error = client_error(last_failure)
        if error.status in RETRY_STATUSES:
            error.headers["retry-after"] = str(self._seconds_until_capacity())
        return error

    def _seconds_until_capacity(self) -> int:
        """Whole seconds until the first provider might take a request again (at least 1)."""
        now = self.ledger.now()
        soonest = min(self.ledger.available_at(upstream.quota_key) for upstream in self.upstreams)
        return max(1, math.ceil(soonest - now))


async def _wait(waiting: Waiting, record: RouteRecord) -> Reservation | Refusal:
    """Wait in line as patience decided; the time it took and why go on `record`, however it ends."""
    try:
        return await waiting.turn()
    finally:
        record.waited_seconds += waiting.seconds
        record.waited_why = waiting.why


def _record_usage(record: RouteRecord, reported: Reported) -> None:
    record.prompt_tokens, record.completion_tokens = reported.prompt_tokens, reported.completion_tokens
    record.cached_tokens = reported.cached_tokens


def _record_stream(record: RouteRecord, outcome: StreamOutcome) -> None:
    """A stream's part of `record`, once it ended: its tokens (the whole answer's when several
    providers served it) and the providers that broke off."""
    if outcome.reported is not None:
        _record_usage(record, outcome.reported)
    if outcome.answer_tokens is not None:
        record.prompt_tokens, record.completion_tokens = outcome.answer_tokens
    record.continuations.extend(outcome.continuations)


def waiting_on_upstream(record: RouteRecord) -> "_UpstreamTime":
    """Count the time inside (a `with` block) as the provider's, not the proxy's."""
    return _UpstreamTime(record)


class _UpstreamTime:
    """A class rather than a generator-based context manager: it wraps two phases of every request."""

    __slots__ = ("_record", "_started")

    def __init__(self, record: RouteRecord) -> None:
        self._record = record
        self._started = 0.0

    def __enter__(self) -> None:
        self._started = trio.current_time()

    def __exit__(self, *exc_info: object) -> None:
        self._record.upstream_seconds += trio.current_time() - self._started


@define
class Routing:
    """One request's way through a router. `outcome` is what routing did (providers tried, why,
    tokens, time waited); the router alone writes it, as it goes, from the parts patience,
    settlement and the stream relay return: it is whole once `complete` returns or raises, or
    once the stream ends. A request cancelled half-way keeps what was done; a failure's
    outcome is there too (a ProxyError carries the client's answer, not the outcome)."""

    router: Router
    request: ChatRequest
    outcome: RouteRecord = field(factory=RouteRecord)

    async def complete(self) -> dict[str, Any]:
        """The non-streamed answer; a ProxyError when no provider delivered."""
        return await self.router._complete(self.request, self.outcome)

    def stream(self) -> AbstractAsyncContextManager[StreamRelay]:
        """The stream, open past the first-chunk gate; a ProxyError when no provider delivered."""
        return self.router._stream(self.request, self.outcome)
