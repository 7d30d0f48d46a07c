"""Work done in rounds in the background (the replicas' exchanges through Redis)."""

from collections.abc import Awaitable, Callable

import trio


async def every(seconds: float, one_round: Callable[[], Awaitable[None]]) -> None:
    """Run `one_round` now and then `seconds` after each round ends, until cancelled (the caller's
    nursery owns the task); an exception from a round ends it."""
    while True:
        await one_round()
        await trio.sleep(seconds)
