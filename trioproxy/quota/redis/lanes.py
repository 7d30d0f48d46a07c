"""The lanes of the shared quota: operations on one provider's accounts share a lane, one call
of the ledger script in flight at a time, and whatever arrives meanwhile (reservations of
concurrent requests, settlements, header figures, probe results) goes together in the next
call: queued operations first, so their refunds count, then every operation someone waits
for. Concurrent requests thus cost one round trip between them, not one each, and a backlog
of operations that need no answer never holds a client's answer beyond that one call. (After
a reload that changed a provider's limits, its old lane lives on until it has been idle for a
minute.)
"""

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import trio
from attrs import define, field

from .connection import Connection
from .ledger_script import Lane, Operation, Reply

QUEUE_SIZE = 10_000  # answers-not-needed operations waiting; past that they are dropped and counted
BATCH_SIZE = 64  # operations in one call at most: a script call holds Redis for its whole run
# How long queued operations may wait for a call someone waits for (a reservation) to ride
# with, instead of costing a round trip of their own that the next reservation would queue behind.
RIDE_SECONDS = 0.01
FLUSH_SECONDS = 2.0  # at shutdown, how long queued operations may take to reach Redis
# A lane unused this long ends its sender: a reload may have retired its keys or limits.
IDLE_LANE_SECONDS = 60.0


class Sender(Protocol):
    """What sends a lane's batch to Redis (the store, through the ledger script)."""

    async def send(self, lane: Lane, batch: Sequence[Operation]) -> list[Reply | None]:
        """One call for `batch`: one answer per operation, in order, each None when the call
        failed. Never raises for Redis's failures (they are outages)."""
        ...


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


class Lanes:
    """Every lane's pending operations and its sender task (started by the first operation,
    ended after IDLE_LANE_SECONDS unused). Operations find Redis gone while `connection` is
    down; `sender` sends each batch. The senders run under `run`."""

    def __init__(self, connection: Connection, sender: Sender) -> None:
        self._connection = connection
        self._sender = sender
        self._lanes: dict[Lane, _LaneState] = {}
        self._nursery: trio.Nursery | None = None  # where each lane's sender runs
        self.dropped = 0  # queued operations that never reached Redis
        self._queued = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the lanes' senders until cancelled (what they hold then stays for `flush`)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def close(self) -> None:
        """From now on no lane starts a sender: operations for a lane without one find Redis
        gone, and those of the lanes that exist wait for `flush`."""
        self._nursery = None

    @property
    def senders(self) -> int:
        """How many lanes have a sender running now (none before `run` or after `close`)."""
        return len(self._nursery.child_tasks) if self._nursery is not None else 0

    async def call(
        self, lane: Lane, op: str, index: int, args: Sequence[Any], abandoned: Callable[[Reply], None] | None = None
    ) -> Reply | None:
        """Run one operation of the script (with whatever else is bound for its lane); None when
        Redis is down or does not answer within the connection's timeout (an outage is noted).
        `abandoned` gets an answer that came too late for its caller (timed out or cancelled),
        to undo what it booked. The reply is the caller's."""
        pending = self._enqueue(lane, _Pending(op, index, args, queued=False, abandoned=abandoned))
        if pending is None:
            return None
        try:
            with trio.move_on_after(self._connection.timeout) as waiting:
                await pending.done.wait()
        finally:
            pending.left = not pending.done.is_set()
        if waiting.cancelled_caught:  # this request waited as long as it may: Redis is too slow
            self._connection.went_down(f"no answer within {self._connection.timeout * 1000:.0f} ms")
        return pending.reply

    def submit(
        self, lane: Lane, op: str, index: int, args: Sequence[Any], answered: Callable[[Reply | None], None] | None = None
    ) -> bool:
        """Queue an operation whose answer nobody waits for (`answered` gets it, or None if the
        call failed, in the lane's sender task: it must not block or raise); False when it
        cannot even be queued (Redis is down, or the queue is full)."""
        pending = _Pending(op, index, args, queued=True, answered=answered)
        if self._queued >= QUEUE_SIZE or self._enqueue(lane, pending) is None:
            self.dropped += 1
            return False
        self._queued += 1
        return True

    def can_queue(self) -> bool:
        """Whether an operation submitted now would be queued for Redis."""
        return self._connection.connected and self._queued < QUEUE_SIZE

    def _enqueue(self, lane: Lane, pending: _Pending) -> _Pending | None:
        if not self._connection.connected:
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
            with trio.CancelScope(shield=True):  # taken off the lane: finish it (the call has a timeout)
                await self._run(lane, state)
            state.signal()  # what is left beyond one batch

    async def _run(self, lane: Lane, state: _LaneState) -> None:
        """Send the next batch of the lane in one call and hand each operation its answer."""
        batch = self._next_batch(state)
        if not batch:
            return
        replies = await self._sender.send(lane, batch)
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

    async def drained(self) -> None:
        """Wait until every queued operation has reached Redis (or been dropped)."""
        while self._queued:
            await trio.sleep(0.001)

    async def flush(self) -> None:
        """At shutdown, after `run`: what is queued still reaches Redis (briefly, FLUSH_SECONDS
        at most: a dead Redis cannot hold the shutdown)."""
        with trio.move_on_after(FLUSH_SECONDS):
            for lane, state in self._lanes.items():
                while state.pending and self._connection.connected:
                    await self._run(lane, state)
