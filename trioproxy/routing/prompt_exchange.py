"""The prompt-prefix memory shared between the processes of one Redis ledger: the policy.

Each process remembers which prompt prefixes each key was sent (`prompt_cache.PromptMemory`),
and admission predicts a key's cached tokens from that memory without asking anyone. When the
quota lives in Redis, several replicas serve one key, and a conversation's next turn often
lands on another replica than the last: each replica then knows only the turns it served.
So every `INTERVAL` each process publishes what it remembered since the last round (one
message a round: digests, token counts and seconds left, no prompt text) and learns what the
others published since its last read (`PromptStream`; in Redis, `quota/redis/prompt_stream.py`).
Requests never wait on Redis for it: a turn that comes before the round that tells of its
previous one is booked as if this process had never seen the conversation, which is safe
(booked as uncached, settled from usage).

A message carries at most `OUTBOX_ENTRIES` entries; one in another shape (another version, a
damaged key) is skipped with a warning.
"""

import logging
import math
from collections.abc import Sequence
from typing import Protocol

import msgspec

from .prompt_cache import PromptMemory, Remembered
from .rounds import every

INTERVAL = 0.25  # seconds between rounds: agents' turns come a second or more apart

log = logging.getLogger("trioproxy.prompt_exchange")

# One entry on the wire: [quota key, key index, digest, prompt tokens, milliseconds left].
_Entry = tuple[str, int, int, int, int]
_entries_decoder = msgspec.json.Decoder(list[_Entry])


class PromptStream(Protocol):
    """Where the processes publish their messages and read the others'
    (`quota.redis.prompt_stream.RedisPromptStream`)."""

    async def exchange(self, outgoing: str | None, keep_seconds: int) -> list[tuple[str, float]] | None:
        """Publish `outgoing` (when there is one; kept at least `keep_seconds`) and return the
        others' messages since the last call, each with its age in seconds (a new list); None
        when the stream is down. Never raises for the stream's failures."""
        ...


class PromptExchange:
    """Publishes what `memories` remembered and teaches them what other processes did, until cancelled.

    `memories` are (quota key, memory) pairs: several routes may serve one provider model,
    each with a memory of its own, and each learns what any process sent that provider model.
    """

    def __init__(self, stream: PromptStream, memories: Sequence[tuple[str, PromptMemory]]) -> None:
        self._stream = stream
        self._memories = list(memories)
        # The stream outlives its last message by the longest cache life: what it tells is stale after that.
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
        published = msgspec.json.encode(outgoing).decode() if outgoing else None
        messages = await self._stream.exchange(published, self._expire_seconds)
        for payload, age in messages or ():
            self._learn(payload, age)

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
