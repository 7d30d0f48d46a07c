"""The store of the shared quota: the one object a Redis ledger holds, made of the connection
and its outages (`connection.py`), the lanes that batch operations into calls of the ledger
script (`lanes.py`, `ledger_script.py`) and the store's clock (`clock.py`). It tells the ledger
that uses it now (its `StoreListener`) what the ledger must hear; a reload hands the store to
the next ledger, which then listens instead.
"""

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import trio

from .client import Client, RedisAccess
from .clock import StoreClock
from .connection import Connection
from .lanes import Lanes
from .ledger_script import SCRIPT, Lane, LedgerScript, Operation, Reply, Revisions

T = TypeVar("T")

VIEWS_SECONDS = 1.0  # how often the listener reads the shared figures for operators


class StoreListener(Protocol):
    """The ledger that uses a store now: what the store tells it. Each is called from the
    store's own tasks and must not raise."""

    async def refresh(self) -> None:
        """Every second while Redis answers: read the shared figures for the operators' views."""

    def retire(self) -> None:
        """The store closes: queue the last operations (what must reach Redis before it goes)."""

    def revised(self) -> None:
        """An answer showed that an account's revision moved (another process changed its limits)."""


class QuotaStore:
    """One coredis client, the ledger script and its lanes, and the store's clock. Run `run` in
    a nursery; it serves until cancelled or closed."""

    def __init__(
        self,
        url: str,
        timeout: float,
        allow_start_without: bool,
        clock: Callable[[], float] | None = None,
        access: RedisAccess = RedisAccess(),
    ) -> None:
        self._connection = Connection(url, access, timeout, allow_start_without, SCRIPT)
        self.clock = StoreClock(clock)  # `clock`, else the one in STORE_CLOCK, else Redis's TIME
        self._script = LedgerScript(self._connection, self.clock)
        self._revisions = Revisions()
        self._lanes = Lanes(self._connection, self)
        self._tasks = trio.CancelScope()
        self._closing = trio.Event()
        self._listener: StoreListener | None = None

    def listen(self, listener: StoreListener | None) -> None:
        """Tell `listener` from now on what the store has to tell (None: nobody, as for a
        ledger that died); the one before hears nothing more."""
        self._listener = listener

    async def run(self, *, task_status: trio.TaskStatus["QuotaStore"] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled or closed; then what is queued still reaches Redis (briefly).
        Raises QuotaStoreError when Redis cannot be used at start (see `Connection.open`).

        The client lives in a shielded scope: cancelling its owner would otherwise cancel
        coredis's own connection tasks too, and the last settlements would be lost."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self._serve)
            task_status.started(self)
            try:
                await self._closing.wait()
            finally:
                if self._listener is not None:
                    self._listener.retire()
                self._lanes.close()  # from now on operations find Redis gone, not a closed nursery
                self._tasks.cancel()  # _serve flushes the queue, closes the client and returns

    async def _serve(self, *, task_status: trio.TaskStatus[None]) -> None:
        with trio.CancelScope(shield=True):
            async with self._connection.open():
                with self._tasks:
                    async with trio.open_nursery() as nursery:
                        await nursery.start(self._lanes.run)
                        nursery.start_soon(self._connection.keep_up)
                        nursery.start_soon(self._refresh_views)
                        task_status.started()
                await self._lanes.flush()

    def close(self) -> None:
        """End `run`: what is queued still goes to Redis first (briefly). Idempotent."""
        self._closing.set()

    def reaches(self, url: str, access: RedisAccess, timeout: float) -> bool:
        """Whether this store is the one these settings ask for (a reload then keeps it)."""
        connection = self._connection
        return (connection.url, connection.access, connection.timeout) == (url, access, timeout)

    @property
    def connected(self) -> bool:
        """Whether Redis answers now (else an outage is on, and operations find Redis gone)."""
        return self._connection.connected

    @property
    def outages(self) -> int:
        """How many outages this store has seen."""
        return self._connection.outages

    async def send(self, lane: Lane, batch: Sequence[Operation]) -> list[Reply | None]:
        """The lanes' `Sender`: one call of the ledger script for `batch`. The revisions it told
        are noted before anyone has an answer (a share answered in it is judged by them), and
        the listener hears when one moved."""
        replies, revisions = await self._script.evaluate(lane, batch)
        if revisions is not None and self._revisions.note(lane[0], revisions) and self._listener is not None:
            self._listener.revised()
        return replies

    async def call(
        self, lane: Lane, op: str, index: int, args: Sequence[Any], abandoned: Callable[[Reply], None] | None = None
    ) -> Reply | None:
        """See `Lanes.call`: one operation whose answer the caller waits for (None: Redis is down)."""
        return await self._lanes.call(lane, op, index, args, abandoned)

    def submit(
        self, lane: Lane, op: str, index: int, args: Sequence[Any], answered: Callable[[Reply | None], None] | None = None
    ) -> bool:
        """See `Lanes.submit`: queue an operation nobody waits for (False: not even queued)."""
        return self._lanes.submit(lane, op, index, args, answered)

    def can_queue(self) -> bool:
        """Whether an operation submitted now would be queued for Redis."""
        return self._lanes.can_queue()

    async def drained(self) -> None:
        """Wait until every queued operation has reached Redis (or been dropped)."""
        await self._lanes.drained()

    def revision(self, lane: Lane, index: int) -> int:
        """The last revision of the lane's account `index` (from 1) an answer told; -1: none yet."""
        return self._revisions.of(lane, index)

    async def commands(self, work: Callable[[Client], Awaitable[T]]) -> T | None:
        """See `Connection.commands`: plain Redis commands beside the script (None: Redis is down)."""
        return await self._connection.commands(work)

    async def _refresh_views(self) -> None:
        """Every second, the current ledger reads the shared figures for operators."""
        while True:
            await trio.sleep(VIEWS_SECONDS)
            if self.connected and self._listener is not None:
                await self._listener.refresh()

    def status(self) -> dict[str, Any]:
        """Where Redis is (its URL without the password) and how it has fared: a new dict."""
        return {**self._connection.status(), "dropped_updates": self._lanes.dropped}

    def deadline(self) -> str:
        """The store's time after which a call made now surely has nobody waiting for its answer
        ('' while Redis's time is not known yet: no answer has told it). Twice the timeout: the
        store's time is known here only to within half a round trip, and a caller still waiting
        must never be told "late"."""
        return self.clock.after(2 * self._connection.timeout)

    @property
    def lane_senders(self) -> int:
        """How many lanes have a sender running now (each ends after a minute unused)."""
        return self._lanes.senders
