"""The store's clock: the time the Redis scripts count in, and its place on this process's Trio
clock. It is Redis's own TIME, learned from the script's answers, unless a clock is injected
(a simulation on Trio's MockClock, or a test moving the time by hand)."""

import contextvars
import math
from collections.abc import Callable

import trio

# A simulation on Trio's MockClock sets this for the stores it starts: their time then comes
# from that clock instead of Redis's TIME (buckets refill in simulated time).
STORE_CLOCK: contextvars.ContextVar[Callable[[], float] | None] = contextvars.ContextVar("store_clock", default=None)


class StoreClock:
    """The store's time: `injected` when given (else the one in STORE_CLOCK when this is built),
    otherwise Redis's TIME, known to within half a round trip once an answer has told it."""

    def __init__(self, injected: Callable[[], float] | None = None) -> None:
        self._injected = injected if injected is not None else STORE_CLOCK.get()  # None: Redis's TIME
        self._offset = 0.0  # add to a Trio time to get the store's time
        self._offset_known = False

    def script_arg(self) -> str:
        """The time a script is told ('' = Redis's own TIME; the injected clock's otherwise)."""
        return "" if self._injected is None else repr(self._injected())

    def observe(self, store_now: float, sent: float, answered: float) -> None:
        """An answer sent at Trio time `sent` and answered at `answered` told the store's time
        `store_now`: taken as the store's time halfway between."""
        self._offset, self._offset_known = store_now - (sent + answered) / 2, True

    def after(self, seconds: float) -> str:
        """The store's time `seconds` from now, as a script argument ('' while Redis's time is
        not known yet: no answer has told it)."""
        if self._injected is not None:
            return repr(self._injected() + seconds)
        return repr(trio.current_time() + self._offset + seconds) if self._offset_known else ""

    def to_trio(self, store_time: float) -> float:
        """A time of the store's clock on this process's Trio clock (infinities stay as they are)."""
        return store_time - self._offset if store_time not in (math.inf, -math.inf) else store_time
