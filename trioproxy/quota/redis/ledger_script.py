"""The ledger script (`ledger.lua`) as one call: a batch of operations on one lane's keys in, one
answer per operation out, with what the call also told (the store's time, every account's
figures when an operation asked, the accounts' revisions)."""

import json
from collections.abc import Sequence
from typing import Any, Protocol

import trio
from attrs import frozen
from coredis.exceptions import RedisError

from .clock import StoreClock
from .connection import Connection
from .scripts import script

SCRIPT = script("ledger.lua")

# A lane: one provider's keys, and the arguments every operation on them starts with (its limits).
Lane = tuple[tuple[str, ...], tuple[Any, ...]]


@frozen
class Reply:
    """One operation's answer, and what the call it went in also told."""

    result: list[Any]
    shared: dict[str, Any] | None  # every account's figures, when an operation of the call asked


class Operation(Protocol):
    """One operation of the script: its name, the account it is on (its index among the lane's
    keys from 1; 0: the script picks), and its own arguments."""

    op: str
    index: int
    args: Sequence[Any]


class LedgerScript:
    """Calls of the ledger script over `connection`, in the time of `clock` (which each answer
    sets). A failed call is an outage of the connection, never an exception."""

    def __init__(self, connection: Connection, clock: StoreClock) -> None:
        self._connection = connection
        self._clock = clock

    async def evaluate(self, lane: Lane, batch: Sequence[Operation]) -> tuple[list[Reply | None], list[int] | None]:
        """One call for `batch`: one answer per operation (all None when Redis failed, is down
        or did not answer within the timeout: an outage is noted), and the revisions of the
        lane's accounts the call told (None when it failed). The lists are the caller's."""
        failed: tuple[list[Reply | None], None] = ([None] * len(batch), None)
        if not self._connection.connected:
            return failed
        keys, head = lane
        args: list[Any] = [self._clock.script_arg(), *head]
        for operation in batch:
            args += [operation.op, operation.index, len(operation.args), *operation.args]
        started = trio.current_time()
        with trio.move_on_after(self._connection.timeout):
            try:
                raw = await self._connection.run_script(list(keys), args)
                now, shared, revisions = float(raw[0]), json.loads(raw[1]) if raw[1] else None, list(raw[2])
                results = raw[3:]
                if len(results) != len(batch):
                    raise ValueError(f"{len(results)} answers to {len(batch)} operations")
            except (RedisError, OSError, ValueError, TypeError, IndexError) as error:  # not the script's answer
                self._connection.went_down(str(error))
                return failed
            self._clock.observe(now, started, trio.current_time())
            return [Reply(list(result), shared) for result in results], revisions
        self._connection.went_down(f"no answer within {self._connection.timeout * 1000:.0f} ms")
        return failed


class Revisions:
    """The last revision of each account an answer told, by its lane's keys. A revision moves
    when another process changes the account's limits (or a cooldown, or a provider figure
    that leaves little, marks it)."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, ...], list[int]] = {}

    def note(self, keys: tuple[str, ...], revisions: Sequence[int]) -> bool:
        """Take what an answer told for the lane with `keys`; whether any revision moved."""
        known = self._known.setdefault(keys, [-1] * len(revisions))
        moved = False
        for index, revision in enumerate(revisions):
            if revision >= 0 and revision != known[index]:  # (a Redis that lost its data starts again at 0)
                known[index], moved = int(revision), True
        return moved

    def of(self, lane: Lane, index: int) -> int:
        """The last revision of the lane's account `index` (from 1) an answer told; -1: none yet."""
        known = self._known.get(lane[0])
        return known[index - 1] if known is not None and index <= len(known) else -1
