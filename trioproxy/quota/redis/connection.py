"""The connection to the Redis that holds the shared quota, and its outages: reached once at
start (a refused password stops the start; an absent Redis too, unless the outage policy can
serve without it), an outage noticed once, logged and counted, and ended by pinging with
growing pauses until Redis answers again and has the script it must keep loaded."""

import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio
from coredis.exceptions import AuthenticationError, NoScriptError, RedisError, ResponseError

from .client import Client, QuotaStoreError, RedisAccess, explain, open_redis

log = logging.getLogger("trioproxy.quota")

T = TypeVar("T")

MAX_BACKOFF = 5.0  # seconds between pings at most, while Redis is down


def redacted_url(url: str) -> str:
    """The URL without its password, for logs and status (credentials end at the last "@", as
    `parse_redis_url` reads them: a password may hold "/" or "#" unencoded)."""
    scheme, _, rest = url.partition("://")
    credentials, at, located = rest.rpartition("@")
    username, colon, _ = credentials.partition(":")
    if not colon:
        return url
    return f"{scheme}://{username}:***{at}{located}"


class Connection:
    """One coredis client to the Redis at `url`, which keeps `script` loaded, and whether Redis
    answers now. Nothing here retries a command: a failure is an outage (`went_down`), and
    `keep_up` ends it. `timeout` bounds every call."""

    def __init__(self, url: str, access: RedisAccess, timeout: float, allow_start_without: bool, script: str) -> None:
        self.url = url
        self.access = access
        self.timeout = timeout
        self._allow_start_without = allow_start_without
        self._script = script
        self._sha = hashlib.sha1(script.encode()).hexdigest()
        self._client: Client | None = None
        self.connected = False
        self.outages = 0
        self._down_since = 0.0
        self._lost = trio.Event()

    @asynccontextmanager
    async def open(self) -> AsyncIterator[None]:
        """Open the client for the duration of the block and reach Redis once. Raises
        QuotaStoreError when that stops the start: credentials refused, the script refused, or
        Redis unreachable while the outage policy cannot serve without it (then it starts
        down, and `keep_up` reaches it later)."""
        async with open_redis(self.url, self.access, self.timeout, self._allow_start_without) as client:
            self._client = client
            await self._first_contact()
            yield

    async def _first_contact(self) -> None:
        try:
            with trio.fail_after(self.timeout):
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
            self.went_down()
            return
        self.connected = True
        log.info("quota shared through Redis at %s", redacted_url(self.url))

    def went_down(self, reason: str = "") -> None:
        """Redis failed or did not answer in time: an outage starts, unless one is on already
        (logged with `reason` when there is one, counted once). Never raises."""
        was_connected = self.connected
        self.connected = False
        if was_connected or self.outages == 0:
            self.outages += 1
            self._down_since = trio.current_time()
            if reason:
                log.warning("Redis at %s unreachable (%s); quota is not shared until it is back", redacted_url(self.url), reason)
            self._lost.set()

    async def keep_up(self) -> None:
        """After each outage, ping with growing pauses until Redis answers again; runs until
        cancelled (the store's nursery owns it)."""
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
        await self._client.script_load(self._script)  # type: ignore[union-attr]

    async def _ping(self) -> bool:
        """Whether Redis answers again (and has the script: it may have restarted empty)."""
        with trio.move_on_after(self.timeout):
            try:
                await self._load_script()
                return True
            except (RedisError, OSError):
                return False
        return False

    async def run_script(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Call the script by its digest (loading it again when Redis lost it: a restart, or
        SCRIPT FLUSH) and return its raw answer. Raises what coredis raises (RedisError, OSError);
        the caller bounds it in time and notes the outage."""
        try:
            return await self._client.evalsha(self._sha, keys=keys, args=args)  # type: ignore[union-attr]
        except NoScriptError:
            await self._load_script()
            return await self._client.evalsha(self._sha, keys=keys, args=args)  # type: ignore[union-attr]

    async def commands(self, work: Callable[[Client], Awaitable[T]]) -> T | None:
        """Run plain Redis commands beside the script (`work` gets the client, which stays this
        connection's), under the timeout; None when Redis is down or does not answer in time
        (an outage is noted). Raises whatever else `work` raises."""
        if not self.connected or self._client is None:
            return None
        try:
            with trio.fail_after(self.timeout):
                return await work(self._client)
        except (RedisError, OSError, trio.TooSlowError) as error:
            self.went_down(explain(error))
            return None

    def status(self) -> dict[str, Any]:
        """Where Redis is (its URL without the password) and how it has fared: a new dict."""
        return {
            "url": redacted_url(self.url),
            "connected": self.connected,
            "outages": self.outages,
            "down_seconds": 0 if self.connected else round(trio.current_time() - self._down_since, 1),
        }
