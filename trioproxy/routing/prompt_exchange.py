"""The prompt-prefix memory shared between the processes of one Redis ledger.

Each process remembers which prompt prefixes each key was sent (`prompt_cache.PromptMemory`),
and admission predicts a key's cached tokens from that memory without asking anyone. When the
quota lives in Redis, several replicas serve one key, and a conversation's next turn often
lands on another replica than the last: each replica then knows only the turns it served.
So every `INTERVAL` each process appends what it remembered since the last round to one Redis
stream (one message a round: digests, token counts and seconds left, no prompt text) and reads
what the others appended since its last read. Requests never wait on Redis for it: a turn that
comes before the round that tells of its previous one is booked as if this process had never
seen the conversation, which is safe (booked as uncached, settled from usage).

Bounds: the stream keeps about `STREAM_MESSAGES` messages (MAXLEN ~) and expires when no
process has written for the caches' life; a round reads at most `READ_MESSAGES` messages (a
backlog is read over the next rounds); a message carries at most `OUTBOX_ENTRIES` entries.
A message in another shape (another version, a damaged key) is skipped with a warning.
The key has the hash tag `{prompts}`, so a Redis Cluster keeps it on one node.
"""

import logging
import math
import secrets
from collections.abc import Sequence

import msgspec
from coredis.tokens import PureToken

from ..quota.redis.client import Client
from ..quota.redis.store import QuotaStore
from .prompt_cache import PromptMemory, Remembered
from .rounds import every

INTERVAL = 0.25  # seconds between rounds: agents' turns come a second or more apart
STREAM_MESSAGES = 2_000
READ_MESSAGES = 500

log = logging.getLogger("trioproxy.prompt_exchange")

# One entry on the wire: [quota key, key index, digest, prompt tokens, milliseconds left].
_Entry = tuple[str, int, int, int, int]
_entries_decoder = msgspec.json.Decoder(list[_Entry])


class PromptExchange:
    """Publishes what `memories` remembered and teaches them what other processes did, until cancelled.

    `memories` are (quota key, memory) pairs: several routes may serve one provider model,
    each with a memory of its own, and each learns what any process sent that provider model.
    """

    def __init__(self, store: QuotaStore, prefix: str, memories: Sequence[tuple[str, PromptMemory]]) -> None:
        self._store = store
        self._stream = f"{prefix}{{prompts}}:sent"
        self._memories = list(memories)
        self._tag = secrets.token_hex(4)  # this process's messages, which it skips when reading
        self._last_id: str | None = None  # None: start from what comes after the first round
        longest = max((memory.ttl for _, memory in self._memories), default=0.0)
        self._expire_seconds = max(1, math.ceil(longest))
        for _, memory in self._memories:
            memory.share()

    async def run(self) -> None:
        """Exchange every INTERVAL seconds until cancelled (the runtime's background scope owns
        it); a round while Redis is down is skipped, and the store reports the outage."""
        await every(INTERVAL, self.exchange)

    async def exchange(self) -> None:
        """One round: append what was remembered here, read what others appended. While Redis
        is down what was remembered is dropped (the others book those turns as uncached)."""
        outgoing = [(quota_key, e.key_index, e.digest, e.tokens, int(e.seconds_left * 1000))
                    for quota_key, memory in self._memories for e in memory.take_remembered()]

        async def talk(client: Client) -> tuple[float, list[tuple[str, dict[str, str]]]]:
            if outgoing:
                await client.xadd(self._stream, {"r": self._tag, "e": msgspec.json.encode(outgoing).decode()},
                                  trim_strategy=PureToken.MAXLEN, threshold=STREAM_MESSAGES,
                                  trim_operator=PureToken.APPROXIMATELY)
                await client.expire(self._stream, self._expire_seconds)
            if self._last_id is None:  # the first round: only what comes from now on
                newest = await client.xrevrange(self._stream, end="+", start="-", count=1)
                self._last_id = newest[0].identifier if newest else "0-0"
                return 0.0, []
            read = [(m.identifier, dict(m.field_values))
                    for m in await client.xrange(self._stream, start=f"({self._last_id}", end="+",
                                                          count=READ_MESSAGES)]
            # A message's id is Redis's time when it was added: with Redis's time now, its age
            # (a backlog read after an outage is old, and what it tells has less time left).
            return ((await client.time()).timestamp() if read else 0.0), read

        answer = await self._store.commands(talk)
        if answer is None or not answer[1]:
            return
        now, messages = answer
        self._last_id = messages[-1][0]
        for identifier, fields in messages:
            if fields.get("r") != self._tag:
                self._learn(fields.get("e", ""), max(0.0, now - int(identifier.split("-")[0]) / 1000))

    def _learn(self, raw: str, age: float) -> None:
        """Teach the memories a message's entries, `age` seconds after it was published."""
        try:
            entries = _entries_decoder.decode(raw)
        except msgspec.DecodeError as error:  # ValidationError is one
            log.warning("a replica's prompt prefixes were left out: %s", error)
            return
        for quota_key, key_index, digest, tokens, left_ms in entries:
            for known_key, memory in self._memories:
                if known_key == quota_key:
                    memory.learn(Remembered(key_index, digest, tokens, left_ms / 1000 - age))
