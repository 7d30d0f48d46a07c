"""Patience: wait for the preferred provider's quota when that is expected to finish sooner.

A request the preferred provider cannot take now is compared by expected finish time:
the time until the provider has quota for it, plus its time to first token, plus the
expected completion length over its output speed, against the same for the providers it
would otherwise go to. When waiting wins and stays within `max_wait`, the request joins
that provider's queue, unless the quota is contested: when requests were passed over the
provider often enough that one of them would have taken the returning quota at no wait, a
wait only adds time (someone uses the quota either way), so the request goes on at once.
Only the head of a queue asks the ledger for quota, and it wakes the
next one when it leaves, so waiters are served in arrival order as quota returns, not as a
stampede. A new request also queues behind them rather than taking the quota they wait for.
"""

import functools
import math
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import trio
from attrs import define, field

from ..providers.upstream import Upstream
from ..quota.contract import Ledger, Refusal, Reservation
from .fair_share import ShareTicket
from .tokens import requested_completion_tokens

# Weight of the newest observation in the moving averages.
SMOOTHING = 0.2
# Before any answer was seen: a typical coding-agent answer is a few hundred tokens.
STARTING_COMPLETION_TOKENS = 500
# How far back requests passed over a provider count towards its contention.
CONTENTION_WINDOW = 60.0


def _moving(average: float, observed: float) -> float:
    return average + SMOOTHING * (observed - average)


@define
class Pace:
    """How fast one provider answers, learned from its real answers (moving averages)."""

    first_token_seconds: float
    tokens_per_second: float

    def seconds_for(self, completion_tokens: float) -> float:
        """Expected time from sending to the last token of a completion this long."""
        return self.first_token_seconds + completion_tokens / self.tokens_per_second


@define
class AnswerTimer:
    """Times one attempt and teaches its provider's pace (and the completion average)."""

    pace: Pace
    learn_completion: Callable[[int], None]
    sent_at: float = field(factory=trio.current_time)
    first_event_at: float | None = None

    def first_event(self) -> None:
        """A stream's first event arrived: that is the time to first token."""
        self.first_event_at = trio.current_time()
        self.pace.first_token_seconds = _moving(self.pace.first_token_seconds, self.first_event_at - self.sent_at)

    def usage(self, completion_tokens: int) -> None:
        """The answer's usage arrived with its last token: its speed can be told."""
        now = trio.current_time()
        if self.first_event_at is not None:
            generating = now - self.first_event_at
        else:  # a plain answer: everything arrived at once, so take off the expected first token
            generating = now - self.sent_at - self.pace.first_token_seconds
        if completion_tokens > 0 and generating > 0:
            self.pace.tokens_per_second = _moving(self.pace.tokens_per_second, completion_tokens / generating)
        self.learn_completion(completion_tokens)


@define(eq=False)
class _Waiter:
    tokens: int
    uncached: int  # the least it books as uncached on any account
    turn: trio.Event = field(factory=trio.Event)  # set when it reaches the head of its queue


class Patience:
    """Decides, per request, whether to wait for a provider's quota, and keeps the queues."""

    def __init__(self, ledger: Ledger, starting: Mapping[str, Pace], max_wait_seconds: float) -> None:
        self._ledger = ledger
        self.paces = dict(starting)
        self.max_wait = max_wait_seconds
        self.completion_tokens = float(STARTING_COMPLETION_TOKENS)
        self._queues: dict[str, deque[_Waiter]] = {name: deque() for name in starting}
        self._passed_over: dict[str, deque[float]] = {name: deque() for name in starting}

    def carry_over(self, previous: "Patience") -> None:
        """Keep what a previous configuration learned (a reload) for providers still here."""
        self.completion_tokens = previous.completion_tokens
        for name, pace in previous.paces.items():
            if name in self.paces:
                self.paces[name] = Pace(pace.first_token_seconds, pace.tokens_per_second)

    def timer(self, upstream: Upstream) -> AnswerTimer:
        """A new timer for one answer of `upstream`, the caller's: what it measures teaches this
        provider's pace and the completions' typical length."""
        return AnswerTimer(self.paces[upstream.quota_key], self._learn_completion)

    def _learn_completion(self, tokens: int) -> None:
        self.completion_tokens = _moving(self.completion_tokens, tokens)

    async def reserve(
        self, upstream: Upstream, tokens: int, body: dict[str, Any], later: Sequence[Upstream],
        floor: int = 0, uncached: Sequence[int] | None = None, ticket: ShareTicket | None = None,
    ) -> "Reservation | Refusal | Waiting":
        """The ledger's reservation or refusal now, or, when waiting in line for this provider's
        quota finishes sooner than going elsewhere, a place in line: the caller's `Waiting`,
        whose `turn()` gives the reservation or refusal after the wait (call it at once: the
        decision holds for now). `floor` and `uncached` go to the ledger's `reserve`. A request
        beyond its client's fair share (`ticket`) is refused as over quota ("share").

        Providers are known by their quota key (provider account and model), as the ledger knows them."""
        name = upstream.quota_key
        queue = self._queues[name]
        alone = not queue  # whether the refusal below is about this request alone
        booking = _Booking(tokens, floor, uncached, ticket)
        if alone or self.max_wait <= 0:
            got = await booking.reserve(self._ledger, name)
            if isinstance(got, Reservation) or self.max_wait <= 0:
                return got
            refusal = got  # names the limit that holds it longest (the ledger contract)
        else:  # others wait already: this one's turn comes after theirs
            ahead, ahead_uncached = (sum(waiter.tokens for waiter in queue), sum(waiter.uncached for waiter in queue))
            refusal = await self._ledger.refusal(
                name, ahead + tokens, len(queue) + 1, ahead_uncached + booking.least_uncached
            ) or Refusal("queue", self._ledger.now())
        wait = max(0.0, refusal.retry_at - self._ledger.now())
        if refusal.foreseen and await self._worth_waiting(upstream, wait, tokens, body, later):
            return Waiting(functools.partial(self._wait_in_line, name, queue, booking, refusal, alone))
        elif (
            queue
            and queue[0].tokens > tokens
            and await self._ledger.refusal(name, queue[0].tokens, 1, queue[0].uncached) is not None
        ):
            # It will not wait, and what is free now is too little for the head of the line:
            # taking it costs the waiters nothing they could use now, and leaves none unused.
            # (What is too little for the head is too little for a request as large: no need to ask.)
            got = await booking.reserve(self._ledger, name)
        else:
            got = refusal
        return self._counted(name, got)

    def _counted(self, name: str, got: Reservation | Refusal) -> Reservation | Refusal:
        """`got`; a refusal counts as a request passed over the provider (its contention)."""
        if isinstance(got, Refusal):
            self._passed_over[name].append(self._ledger.now())
        return got

    def _contention(self, provider: str) -> float:
        """Requests per second passed over `provider` for quota lately."""
        passed_over, horizon = self._passed_over[provider], self._ledger.now() - CONTENTION_WINDOW
        while passed_over and passed_over[0] <= horizon:
            passed_over.popleft()
        return len(passed_over) / CONTENTION_WINDOW

    async def _worth_waiting(
        self, upstream: Upstream, wait: float, tokens: int, body: dict[str, Any], later: Sequence[Upstream]
    ) -> bool:
        if wait > self.max_wait:
            return False
        if not later:
            return True  # the last provider: a wait beats the client's 429
        if self._contention(upstream.quota_key) * wait >= 1:
            return False  # told before asking the ledger about the others
        completion = min(requested_completion_tokens(body) or math.inf, self.completion_tokens)
        elsewhere = min([await self._finish_on(other, tokens, completion) for other in later])
        return wait + self.paces[upstream.quota_key].seconds_for(completion) < elsewhere

    async def _finish_on(self, upstream: Upstream, tokens: int, completion: float) -> float:
        refusal = await self._ledger.refusal(upstream.quota_key, tokens)
        wait = 0.0 if refusal is None else max(0.0, refusal.retry_at - self._ledger.now())
        return wait + self.paces[upstream.quota_key].seconds_for(completion)

    async def _wait_in_line(
        self, name: str, queue: deque[_Waiter], booking: "_Booking", refusal: Refusal, alone: bool, waiting: "Waiting"
    ) -> Reservation | Refusal:
        """Queue up; at the head, take quota as it returns. Leaves the queue however it ends,
        a client's disconnect (cancellation) included, hands the turn to the next, and tells
        `waiting` how long it waited and why.

        `alone`: `refusal` was about this request alone. If it is also first in line, it asks
        the ledger again only when that refusal said, as it does after each refusal of its own."""
        started = self._ledger.now()
        deadline = started + self.max_wait
        waiter = _Waiter(booking.tokens, booking.least_uncached)
        queue.append(waiter)
        told = alone and len(queue) == 1
        if len(queue) == 1:
            waiter.turn.set()
        reason = refusal.reason
        try:
            with trio.move_on_at(deadline):
                await waiter.turn.wait()
                while True:
                    if told:  # at least a millisecond: a bucket a rounding error short must not spin
                        await trio.sleep_until(max(refusal.retry_at, self._ledger.now() + 0.001))
                    got = await booking.reserve(self._ledger, name)
                    if isinstance(got, Reservation):
                        return got
                    refusal, reason, told = got, got.reason, True
                    if got.retry_at > deadline or not got.foreseen:
                        return self._counted(name, got)  # quota returns too late, or Redis is gone: go elsewhere now
            return self._counted(name, refusal)
        finally:
            waiting.seconds = self._ledger.now() - started
            waiting.why = f"patience: {reason} {waiting.seconds:.1f} s"
            queue.remove(waiter)
            if queue:
                queue[0].turn.set()


@define(eq=False)
class Waiting:
    """A request's place in line for a provider's quota, as patience decided. Once `turn()`
    ends, however it ends (a client's disconnect included), `seconds` and `why` tell how long
    the request waited and for which limit."""

    _wait: Callable[["Waiting"], Awaitable[Reservation | Refusal]]
    seconds: float = 0.0
    why: str = ""  # e.g. "patience: rpm 1.8 s"

    async def turn(self) -> Reservation | Refusal:
        """Wait in line; the reservation at the head of it, or the refusal that sends the
        request elsewhere (quota returns too late)."""
        return await self._wait(self)


@define
class _Booking:
    """What one request asks of the ledger (see `Ledger.reserve`)."""

    tokens: int
    floor: int
    uncached: Sequence[int] | None
    ticket: ShareTicket | None = None  # the client's fair share of the provider, asked first

    @property
    def least_uncached(self) -> int:
        """The uncached tokens it books on the account where that is least."""
        return min(self.uncached) if self.uncached else self.floor

    async def reserve(self, ledger: Ledger, name: str) -> Reservation | Refusal:
        if self.ticket is None:
            return await ledger.reserve(name, self.tokens, floor=self.floor, uncached=self.uncached)
        if (beyond := self.ticket.refusal()) is not None:
            return beyond
        # Counted before the ledger's answer (a round trip to a shared ledger): the client's
        # next request, checked meanwhile, sees this one; given back if the ledger refuses.
        self.ticket.took()
        try:
            got = await ledger.reserve(name, self.tokens, floor=self.floor, uncached=self.uncached)
        except BaseException:  # cancelled (the client left) or the ledger failed: nothing was taken
            self.ticket.give_back()
            raise
        if not isinstance(got, Reservation):
            self.ticket.give_back()
        return got
