"""The connection to the Redis that holds the shared quota: one Lua script, called by SHA, under
a timeout; outages noticed once, counted, and ended by reconnecting with backoff.

Operations that need no answer (settling, header figures, probe results) go through a queue
that one task empties, so they never hold up a client's answer.
"""

import contextvars
import json
import logging
import math
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any

import trio
from coredis.exceptions import AuthenticationError, NoScriptError, RedisError, ResponseError

from .redis_client import Client, QuotaStoreError, TlsFiles, explain, open_redis

log = logging.getLogger("trioproxy.quota")

SCRIPT = resources.files(__package__).joinpath("ledger.lua").read_text()
# A simulation on Trio's MockClock sets this for the stores it starts: their time then comes
# from that clock instead of Redis's TIME (buckets refill in simulated time).
STORE_CLOCK: contextvars.ContextVar[Callable[[], float] | None] = contextvars.ContextVar("store_clock", default=None)
QUEUE_SIZE = 10_000  # answers-not-needed operations waiting; past that they are dropped and counted
MAX_BACKOFF = 5.0
FLUSH_SECONDS = 2.0  # at shutdown, how long queued operations may take to reach Redis

Reply = dict[str, Any]
Pending = tuple[str, Sequence[str], Sequence[Any], Callable[[Reply], None]]


def redacted_url(url: str) -> str:
    """The URL without its password, for logs and status."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urllib.parse.urlunsplit(parts._replace(netloc=user + netloc))


class QuotaStore:
    """One coredis client and the ledger script. Run `run` in a nursery; it serves until cancelled."""

    def __init__(
        self,
        url: str,
        timeout: float,
        allow_start_without: bool,
        clock: Callable[[], float] | None = None,
        tls: TlsFiles = TlsFiles(),
    ) -> None:
        self.url = url
        self.tls = tls
        self._timeout = timeout
        self._allow_start_without = allow_start_without
        self._clock = clock if clock is not None else STORE_CLOCK.get()  # None: Redis's TIME
        self._client: Client | None = None
        self._script: Any = None
        self.connected = False
        self.outages = 0
        self.dropped = 0
        self._queued = 0
        self._down_since = 0.0
        self._lost = trio.Event()
        self._send, self._receive = trio.open_memory_channel[Pending](QUEUE_SIZE)
        self._tasks = trio.CancelScope()
        self._closing = trio.Event()
        self.offset = 0.0  # add to a Trio time to get the store's time
        self.refresh: Callable[[], Awaitable[None]] | None = None  # the current ledger's view update

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
                self._tasks.cancel()  # _serve flushes the queue, closes the client and returns

    async def _serve(self, *, task_status: trio.TaskStatus[None]) -> None:
        with trio.CancelScope(shield=True):
            async with open_redis(self.url, self.tls, self._timeout, self._allow_start_without) as client:
                self._client, self._script = client, client.register_script(SCRIPT)
                await self._first_contact()
                with self._tasks:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._empty_queue)
                        nursery.start_soon(self._reconnect)
                        nursery.start_soon(self._refresh_views)
                        task_status.started()
                await self._flush()

    def close(self) -> None:
        self._closing.set()

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

    def _time_arg(self) -> str:
        return "" if self._clock is None else repr(self._clock())

    async def call(self, op: str, keys: Sequence[str], args: Sequence[Any]) -> Reply | None:
        """Run one operation of the script; None when Redis is down or does not answer in time."""
        if not self.connected:
            return None
        started = trio.current_time()
        with trio.move_on_after(self._timeout):
            try:
                try:
                    raw = await self._script(keys=keys, args=[op, self._time_arg(), *args])
                except NoScriptError:  # Redis restarted, or SCRIPT FLUSH: load it again
                    await self._load_script()
                    raw = await self._script(keys=keys, args=[op, self._time_arg(), *args])
                reply: Reply = json.loads(raw)
            except (RedisError, OSError, ValueError) as error:  # ValueError: not the script's answer
                self._went_down(str(error))
                return None
            self.offset = reply["now"] - (started + trio.current_time()) / 2
            return reply
        self._went_down(f"no answer within {self._timeout * 1000:.0f} ms")
        return None

    def submit(self, op: str, keys: Sequence[str], args: Sequence[Any], on_reply: Callable[[Reply], None]) -> None:
        """Queue an operation whose answer nobody waits for."""
        if not self.connected:
            self.dropped += 1
            return
        try:
            self._send.send_nowait((op, keys, args, on_reply))
            self._queued += 1
        except trio.WouldBlock:
            self.dropped += 1

    async def _empty_queue(self) -> None:
        async for op, keys, args, on_reply in self._receive:
            with trio.CancelScope(shield=True):  # taken off the queue: finish it (call() has a timeout)
                reply = await self.call(op, keys, args)
            self._queued -= 1
            if reply is None:
                self.dropped += 1
            else:
                on_reply(reply)

    async def drained(self) -> None:
        """Wait until every queued operation has reached Redis (or been dropped)."""
        while self._queued:
            await trio.sleep(0.001)

    async def _flush(self) -> None:
        """At shutdown, what is queued still reaches Redis (briefly: a dead Redis cannot hold us)."""
        with trio.move_on_after(FLUSH_SECONDS):
            while True:
                try:
                    op, keys, args, on_reply = self._receive.receive_nowait()
                except trio.WouldBlock:
                    return
                reply = await self.call(op, keys, args)
                if reply is not None:
                    on_reply(reply)

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
            if self.connected and self.refresh is not None:
                await self.refresh()

    def status(self) -> dict[str, Any]:
        return {
            "url": redacted_url(self.url),
            "connected": self.connected,
            "outages": self.outages,
            "down_seconds": 0 if self.connected else round(trio.current_time() - self._down_since, 1),
            "dropped_updates": self.dropped,
        }

    def to_trio(self, store_time: float) -> float:
        return store_time - self.offset if store_time not in (math.inf, -math.inf) else store_time
