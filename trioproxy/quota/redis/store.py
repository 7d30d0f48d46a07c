"""The connection to the Redis that holds the shared quota: one Lua script, called by SHA, under
a timeout; outages noticed once, counted, and ended by reconnecting with backoff.

Operations on one provider's accounts share a lane: one call of the script in flight at a
time, and whatever arrives meanwhile (reservations of concurrent requests, settlements, header
figures, probe results) goes together in the next call: queued operations first, so their
refunds count, then every operation someone waits for. Concurrent requests thus cost one round
trip between them, not one each, and a backlog of operations that need no answer never holds
a client's answer beyond that one call. (After a reload that changed a provider's limits, its
old lane lives on until it has been idle for a minute.)
"""

import contextvars
import hashlib
import json
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import trio
from attrs import define, field, frozen
from coredis.exceptions import AuthenticationError, NoScriptError, RedisError, ResponseError

from .client import Client, QuotaStoreError, RedisAccess, explain, open_redis
from .scripts import script

log = logging.getLogger("trioproxy.quota")

T = TypeVar("T")

SCRIPT = script("ledger.lua")
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()
# A simulation on Trio's MockClock sets this for the stores it starts: their time then comes
# from that clock instead of Redis's TIME (buckets refill in simulated time).
STORE_CLOCK: contextvars.ContextVar[Callable[[], float] | None] = contextvars.ContextVar("store_clock", default=None)
QUEUE_SIZE = 10_000  # answers-not-needed operations waiting; past that they are dropped and counted
BATCH_SIZE = 64  # operations in one call at most: a script call holds Redis for its whole run
# How long queued operations may wait for a call someone waits for (a reservation) to ride
# with, instead of costing a round trip of their own that the next reservation would queue behind.
RIDE_SECONDS = 0.01
MAX_BACKOFF = 5.0
FLUSH_SECONDS = 2.0  # at shutdown, how long queued operations may take to reach Redis
# A lane unused this long ends its sender: a reload may have retired its keys or limits.
IDLE_LANE_SECONDS = 60.0

# A lane: one provider's keys, and the arguments every operation on them starts with (its limits).
Lane = tuple[tuple[str, ...], tuple[Any, ...]]


@frozen
class Reply:
    """One operation's answer, and what the call it went in also told."""

    result: list[Any]
    shared: dict[str, Any] | None  # every account's figures, when an operation of the call asked


@define(eq=False)
class _Pending:
    op: str
    index: int
    args: Sequence[Any]
    queued: bool  # nobody waits for the answer
    abandoned: Callable[[Reply], None] | None = None  # for an answer that came after its caller left
    answered: Callable[[Reply | None], None] | None = None  # a queued operation's answer (None: failed)
    left: bool = False  # its caller stopped waiting (timed out or cancelled)
    reply: Reply | None = None
    done: trio.Event = field(factory=trio.Event)


@define(eq=False)
class _LaneState:
    pending: list[_Pending] = field(factory=list)
    wake: trio.Event = field(factory=trio.Event)  # something is pending
    urgent: trio.Event = field(factory=trio.Event)  # someone waits for an answer

    def signal(self) -> None:
        if self.pending:
            self.wake.set()
        if any(not pending.queued for pending in self.pending):
            self.urgent.set()


def redacted_url(url: str) -> str:
    """The URL without its password, for logs and status (credentials end at the last "@", as
    `parse_redis_url` reads them: a password may hold "/" or "#" unencoded)."""
    scheme, _, rest = url.partition("://")
    credentials, at, located = rest.rpartition("@")
    username, colon, _ = credentials.partition(":")
    if not colon:
        return url
    return f"{scheme}://{username}:***{at}{located}"


class StoreListener(Protocol):
    """The ledger that uses a store now (a reload hands the store to the next one): what the
    store tells it."""

    async def refresh(self) -> None:
        """Every second while Redis answers: read the shared figures for the operators' views."""

    def retire(self) -> None:
        """The store closes: queue the last operations (what must reach Redis before it goes)."""

    def revised(self) -> None:
        """An answer showed that an account's revision moved (another process changed its limits)."""


class QuotaStore:
    """One coredis client and the ledger script. Run `run` in a nursery; it serves until cancelled."""

    def __init__(
        self,
        url: str,
        timeout: float,
        allow_start_without: bool,
        clock: Callable[[], float] | None = None,
        access: RedisAccess = RedisAccess(),
    ) -> None:
        self.url = url
        self.access = access
        self._timeout = timeout
        self._allow_start_without = allow_start_without
        self._clock = clock if clock is not None else STORE_CLOCK.get()  # None: Redis's TIME
        self._client: Client | None = None
        self._lanes: dict[Lane, _LaneState] = {}
        self._revisions: dict[tuple[str, ...], list[int]] = {}  # by a lane's keys: each account's revision
        self._nursery: trio.Nursery | None = None  # where each lane's sender runs
        self.connected = False
        self.outages = 0
        self.dropped = 0
        self._queued = 0
        self._down_since = 0.0
        self._lost = trio.Event()
        self._tasks = trio.CancelScope()
        self._closing = trio.Event()
        self.offset = 0.0  # add to a Trio time to get the store's time
        self._offset_known = False
        self.listener: StoreListener | None = None  # the ledger that uses this store now

    async def run(self, *, task_status: trio.TaskStatus["QuotaStore"] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled or closed; then what is queued still reaches Redis (briefly).

        The client lives in a shielded scope: cancelling its owner would otherwise cancel
        coredis's own connection tasks too, and the last settlements would be lost."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self._serve)
            task_status.started(self)
            try:
                await self._closing.wait()
            finally:
                if self.listener is not None:
                    self.listener.retire()
                self._nursery = None  # from now on operations find Redis gone, not a closed nursery
                self._tasks.cancel()  # _serve flushes the queue, closes the client and returns

    async def _serve(self, *, task_status: trio.TaskStatus[None]) -> None:
        with trio.CancelScope(shield=True):
            async with open_redis(self.url, self.access, self._timeout, self._allow_start_without) as client:
                self._client = client
                await self._first_contact()
                with self._tasks:
                    async with trio.open_nursery() as nursery:
                        self._nursery = nursery
                        nursery.start_soon(self._reconnect)
                        nursery.start_soon(self._refresh_views)
                        task_status.started()
                await self._flush()

    def close(self) -> None:
        """End `run`: what is queued still goes to Redis first (briefly). Idempotent."""
        self._closing.set()

    def reaches(self, url: str, access: RedisAccess, timeout: float) -> bool:
        """Whether this store is the one these settings ask for (a reload then keeps it)."""
        return (self.url, self.access, self._timeout) == (url, access, timeout)

    async def _first_contact(self) -> None:
        """Reach Redis once: a refused password stops the start; an absent Redis too, unless
        the outage policy can serve without it."""
        try:
            with trio.fail_after(self._timeout):
                await self._load_script()
        except AuthenticationError as error:
            raise QuotaStoreError(f"redis_url: Redis refused the credentials ({error})") from None
        except ResponseError as error:  # Redis answered, but not as a ledger needs (too old?)
            raise QuotaStoreError(f"redis_url: Redis refused the ledger script ({error})") from None
        except (RedisError, OSError, trio.TooSlowError) as error:
            reason = explain(error)
            if not self._allow_start_without:
                raise QuotaStoreError(f"redis_url: cannot reach Redis at {redacted_url(self.url)} ({reason})") from None
            log.warning(
                "QUOTA IS NOT SHARED: cannot reach Redis at %s (%s); serving on local buckets until it is back",
                redacted_url(self.url), reason,
            )
            self._went_down()
            return
        self.connected = True
        log.info("quota shared through Redis at %s", redacted_url(self.url))

    def time_arg(self) -> str:
        """The time a script is told ('' = Redis's own TIME; a simulation's clock otherwise)."""
        return "" if self._clock is None else repr(self._clock())

    async def call(
        self, lane: Lane, op: str, index: int, args: Sequence[Any], abandoned: Callable[[Reply], None] | None = None
    ) -> Reply | None:
        """Run one operation of the script (with whatever else is bound for its lane); None when
        Redis is down or does not answer in time. `abandoned` gets an answer that came too late
        for its caller (timed out or cancelled), to undo what it booked."""
        pending = self._enqueue(lane, _Pending(op, index, args, queued=False, abandoned=abandoned))
        if pending is None:
            return None
        try:
            with trio.move_on_after(self._timeout) as waiting:
                await pending.done.wait()
        finally:
            pending.left = not pending.done.is_set()
        if waiting.cancelled_caught:  # this request waited as long as it may: Redis is too slow
            self._went_down(f"no answer within {self._timeout * 1000:.0f} ms")
        return pending.reply

    def submit(
        self, lane: Lane, op: str, index: int, args: Sequence[Any], answered: Callable[[Reply | None], None] | None = None
    ) -> bool:
        """Queue an operation whose answer nobody waits for (`answered` gets it, or None if the
        call failed); False when it cannot even be queued (Redis is down, or the queue is full)."""
        pending = _Pending(op, index, args, queued=True, answered=answered)
        if self._queued >= QUEUE_SIZE or self._enqueue(lane, pending) is None:
            self.dropped += 1
            return False
        self._queued += 1
        return True

    def can_queue(self) -> bool:
        """Whether an operation submitted now would be queued for Redis."""
        return self.connected and self._queued < QUEUE_SIZE

    def _enqueue(self, lane: Lane, pending: _Pending) -> _Pending | None:
        if not self.connected:
            return None
        state = self._lanes.get(lane)
        if state is None:  # (at shutdown, after the senders, only lanes that exist still flush)
            if self._nursery is None:
                return None
            state = self._lanes[lane] = _LaneState()
            self._nursery.start_soon(self._send_lane, lane, state)
        state.pending.append(pending)
        state.wake.set()
        if not pending.queued:
            state.urgent.set()
        return pending

    async def _send_lane(self, lane: Lane, state: _LaneState) -> None:
        """One call of the script at a time for the lane, taking whatever waits when it starts;
        queued operations alone wait a little for a reservation to ride with."""
        while True:
            if not state.wake.is_set():  # (a set Event's wait() would still cost a scheduler pass)
                with trio.move_on_after(IDLE_LANE_SECONDS):
                    await state.wake.wait()
                if not state.wake.is_set():  # idle; no checkpoint until it is gone, so nothing joins it
                    del self._lanes[lane]
                    return
            if not state.urgent.is_set():
                with trio.move_on_after(RIDE_SECONDS):
                    await state.urgent.wait()
            state.wake, state.urgent = trio.Event(), trio.Event()
            with trio.CancelScope(shield=True):  # taken off the lane: finish it (_evaluate has a timeout)
                await self._run(lane, state)
            state.signal()  # what is left beyond one batch

    async def _run(self, lane: Lane, state: _LaneState) -> None:
        """Send the next batch of the lane in one call and hand each operation its answer."""
        batch = self._next_batch(state)
        if not batch:
            return
        keys, head = lane
        args: list[Any] = [self.time_arg(), *head]
        for pending in batch:
            args += [pending.op, pending.index, len(pending.args), *pending.args]
        replies, revisions = await self._evaluate(list(keys), args, len(batch))
        if revisions is not None:  # first: a share answered in this batch is judged by them
            self._note_revisions(keys, revisions)
        for pending, reply in zip(batch, replies):
            pending.reply = reply
            pending.done.set()
            if pending.queued:
                self._queued -= 1
                self.dropped += reply is None
                if pending.answered is not None:
                    pending.answered(reply)
            elif pending.left and reply is not None and pending.abandoned is not None:
                pending.abandoned(reply)

    @staticmethod
    def _next_batch(state: _LaneState) -> list[_Pending]:
        """Every operation someone waits for (a batch at most), after as many queued ones as
        fit: settlements go first, so their refunds count, yet a backlog of them never holds up
        a reservation. An operation whose caller left before it was sent is not sent at all."""
        state.pending = [p for p in state.pending if p.queued or not p.left]
        waited = [p for p in state.pending if not p.queued][:BATCH_SIZE]
        batch = [p for p in state.pending if p.queued][: BATCH_SIZE - len(waited)] + waited
        chosen = set(batch)
        state.pending = [p for p in state.pending if p not in chosen]
        return batch

    async def _evaluate(
        self, keys: list[str], args: list[Any], count: int
    ) -> tuple[list[Reply | None], list[int] | None]:
        """One call of the script: `count` answers (or as many Nones when Redis failed or is
        down) and the accounts' revisions it told."""
        failed: tuple[list[Reply | None], None] = ([None] * count, None)
        if not self.connected:
            return failed
        started = trio.current_time()
        with trio.move_on_after(self._timeout):
            try:
                try:
                    raw = await self._client.evalsha(SCRIPT_SHA, keys=keys, args=args)  # type: ignore[union-attr]
                except NoScriptError:  # Redis restarted, or SCRIPT FLUSH: load it again
                    await self._load_script()
                    raw = await self._client.evalsha(SCRIPT_SHA, keys=keys, args=args)  # type: ignore[union-attr]
                now, shared, revisions = float(raw[0]), json.loads(raw[1]) if raw[1] else None, list(raw[2])
                results = raw[3:]
                if len(results) != count:
                    raise ValueError(f"{len(results)} answers to {count} operations")
            except (RedisError, OSError, ValueError, TypeError, IndexError) as error:  # not the script's answer
                self._went_down(str(error))
                return failed
            self.offset, self._offset_known = now - (started + trio.current_time()) / 2, True
            return [Reply(list(result), shared) for result in results], revisions
        self._went_down(f"no answer within {self._timeout * 1000:.0f} ms")
        return failed

    def _note_revisions(self, keys: tuple[str, ...], revisions: Sequence[int]) -> None:
        known = self._revisions.setdefault(keys, [-1] * len(revisions))
        moved = False
        for index, revision in enumerate(revisions):
            if revision >= 0 and revision != known[index]:  # (a Redis that lost its data starts again at 0)
                known[index], moved = int(revision), True
        if moved and self.listener is not None:
            self.listener.revised()

    def revision(self, lane: Lane, index: int) -> int:
        """The last revision of the lane's account `index` (from 1) an answer told; -1: none yet."""
        known = self._revisions.get(lane[0])
        return known[index - 1] if known is not None and index <= len(known) else -1

    async def drained(self) -> None:
        """Wait until every queued operation has reached Redis (or been dropped)."""
        while self._queued:
            await trio.sleep(0.001)

    async def _flush(self) -> None:
        """At shutdown, what is queued still reaches Redis (briefly: a dead Redis cannot hold us)."""
        with trio.move_on_after(FLUSH_SECONDS):
            for lane, state in self._lanes.items():
                while state.pending and self.connected:
                    await self._run(lane, state)

    def _went_down(self, reason: str = "") -> None:
        was_connected = self.connected
        self.connected = False
        if was_connected or self.outages == 0:
            self.outages += 1
            self._down_since = trio.current_time()
            if reason:
                log.warning("Redis at %s unreachable (%s); quota is not shared until it is back", redacted_url(self.url), reason)
            self._lost.set()

    async def _reconnect(self) -> None:
        """After each outage: ping with growing pauses until Redis answers again."""
        while True:
            await self._lost.wait()
            backoff = 0.1
            while not await self._ping():
                await trio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            self._lost = trio.Event()
            self.connected = True
            log.warning(
                "Redis at %s is back after %.1f s; quota is shared again",
                redacted_url(self.url), trio.current_time() - self._down_since,
            )

    async def _load_script(self) -> None:
        await self._client.script_load(SCRIPT)  # type: ignore[union-attr]

    async def _ping(self) -> bool:
        """Whether Redis answers again (and has the script: it may have restarted empty)."""
        with trio.move_on_after(self._timeout):
            try:
                await self._load_script()
                return True
            except (RedisError, OSError):
                return False
        return False

    async def _refresh_views(self) -> None:
        """Every second, the current ledger reads the shared figures for operators."""
        while True:
            await trio.sleep(1.0)
            if self.connected and self.listener is not None:
                await self.listener.refresh()

    async def commands(self, work: Callable[[Client], Awaitable[T]]) -> T | None:
        """Run plain Redis commands beside the script (`work` gets the client), under the
        timeout; None when Redis is down or does not answer in time (an outage is noted)."""
        if not self.connected or self._client is None:
            return None
        try:
            with trio.fail_after(self._timeout):
                return await work(self._client)
        except (RedisError, OSError, trio.TooSlowError) as error:
            self._went_down(explain(error))
            return None

    def status(self) -> dict[str, Any]:
        """Where Redis is (its URL without the password) and how it has fared: a new dict."""
        return {
            "url": redacted_url(self.url),
            "connected": self.connected,
            "outages": self.outages,
            "down_seconds": 0 if self.connected else round(trio.current_time() - self._down_since, 1),
            "dropped_updates": self.dropped,
        }

    def deadline(self) -> str:
        """The store's time after which a call made now surely has nobody waiting for its answer
        ('' while Redis's time is not known yet: no answer has told it). Twice the timeout: the
        store's time is known here only to within half a round trip, and a caller still waiting
        must never be told "late"."""
        if self._clock is not None:
            return repr(self._clock() + 2 * self._timeout)
        return repr(trio.current_time() + self.offset + 2 * self._timeout) if self._offset_known else ""

    def to_trio(self, store_time: float) -> float:
        """A time of the store's clock (Redis's TIME, or the injected one) on this process's Trio clock."""
        return store_time - self.offset if store_time not in (math.inf, -math.inf) else store_time
