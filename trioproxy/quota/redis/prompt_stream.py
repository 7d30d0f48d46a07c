"""The stream in Redis through which the processes of one Redis ledger tell each other which
prompt prefixes they sent: each appends its messages and reads the others' since its last read.
What a message says is the writer's business; here it is text.

Bounds: the stream keeps about `STREAM_MESSAGES` messages (MAXLEN ~) and expires when no
process has written for as long as its writers ask; a read takes at most `READ_MESSAGES`
messages (a backlog is read over the next reads). The key has the hash tag `{prompts}`, so a
Redis Cluster keeps it on one node.
"""

import secrets

from coredis.tokens import PureToken

from .client import Client
from .scripts import script
from .store import QuotaStore

STREAM_MESSAGES = 2_000
READ_MESSAGES = 500
READ = script("prompt_read.lua")


class RedisPromptStream:
    """This process's end of the prompt stream in the Redis of `store` under `prefix`."""

    def __init__(self, store: QuotaStore, prefix: str) -> None:
        self._store = store
        self._stream = f"{prefix}{{prompts}}:sent"
        self._tag = secrets.token_hex(4)  # this process's messages, which it skips when reading
        self._last_id: str | None = None  # None: start from what comes after the first round

    async def exchange(self, outgoing: str | None, keep_seconds: int) -> list[tuple[str, float]] | None:
        """Append `outgoing` when there is one (the stream then lives `keep_seconds` more), and
        read what the other processes appended since the last read: each message's text with
        its age in seconds by Redis's clock (a backlog read after an outage is old), as a new
        list the caller owns. The first call reads nothing: what comes after it is read. None
        when Redis is down or does not answer in time (the store reports the outage)."""

        async def talk(client: Client) -> tuple[float, list[tuple[str, dict[str, str]]]]:
            if outgoing is not None:
                await client.xadd(self._stream, {"r": self._tag, "e": outgoing},
                                  trim_strategy=PureToken.MAXLEN, threshold=STREAM_MESSAGES,
                                  trim_operator=PureToken.APPROXIMATELY)
                await client.expire(self._stream, keep_seconds)
            if self._last_id is None:  # the first round: only what comes from now on
                newest = await client.xrevrange(self._stream, end="+", start="-", count=1)
                self._last_id = newest[0].identifier if newest else "0-0"
                return 0.0, []
            now, read = await client.register_script(READ)(
                keys=[self._stream], args=["", f"({self._last_id}", READ_MESSAGES])  # type: ignore[misc]
            return float(now), [(identifier, dict(zip(flat[::2], flat[1::2]))) for identifier, flat in read]

        answer = await self._store.commands(talk)
        if answer is None:
            return None
        now, messages = answer
        if messages:
            self._last_id = messages[-1][0]
        return [(fields.get("e", ""), max(0.0, now - int(identifier.split("-")[0]) / 1000))
                for identifier, fields in messages if fields.get("r") != self._tag]
