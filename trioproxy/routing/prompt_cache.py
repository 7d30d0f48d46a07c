"""Predicting a provider's prompt cache: how much of a prompt a key's cache likely holds.

A provider such as Cerebras caches prompt prefixes per organisation (API key) for some minutes
and counts only the uncached part against its uncached-token limit. Coding agents resend the
whole conversation every turn, so most of each prompt is the previous turn's prompt. A prompt
is known here by its message prefix: a chain of digests, one after each leading message (the
tool definitions first), each of the one before and the message, so the digests of every
prefix cost one pass over the prompt. No prompt text is kept, only digests and token counts.
The digests are xxHash's XXH3 (64 bits), each seeded with the one before: every process
computes the same ones, so processes sharing the quota can share the memory too
(`routing/prompt_exchange`), and on an agent's 100 KB prompt they cost about 10 us, a twentieth
of Python's `hash` (SipHash) or a CRC-32.
"""

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from attrs import frozen
from xxhash import xxh3_64_intdigest

from ..jsoncodec import dump_json

# At most this many entries wait for publication (a memory shared between processes); a burst
# beyond is not passed on: the others then book those turns as uncached, which is safe.
OUTBOX_ENTRIES = 10_000


@frozen
class Remembered:
    """One prefix a key was sent, as processes sharing the memory tell each other: the key's
    index, the prefix's digest, its prompt tokens, and how long the cache keeps it."""

    key_index: int
    digest: int
    tokens: int
    seconds_left: float


@frozen
class PromptPrefix:
    """The digests of a prompt's prefixes: `digests[i]` covers the tools and the first `i`
    messages (`digests[0]` the tools alone); `chars[i]` is that prefix's length in JSON."""

    digests: tuple[int, ...]
    chars: tuple[int, ...]

    @classmethod
    def of(cls, body: dict[str, Any]) -> tuple["PromptPrefix", bytes | None]:
        """The body's prefix, and its messages as compact JSON (each message is dumped once
        here; the estimate reads the same bytes), None when `messages` is not a list."""
        tools = body.get("tools") or body.get("functions") or []
        part = dump_json(tools)
        digest = xxh3_64_intdigest(part)
        digests, chars, total = [digest], [len(part)], len(part)
        messages = body.get("messages")
        if not isinstance(messages, list):
            return cls(tuple(digests), tuple(chars)), None
        parts = []
        for message in messages:
            part = dump_json(message)
            parts.append(part)
            digest = xxh3_64_intdigest(part, digest)
            total += len(part)
            digests.append(digest)
            chars.append(total)
        return cls(tuple(digests), tuple(chars)), b"[" + b",".join(parts) + b"]"


class _KeyMemory:
    """One key's prefixes sent lately: digest -> (prompt tokens, when it leaves the cache),
    oldest first; at most `entries` of them."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self.table: OrderedDict[int, tuple[int, float]] = OrderedDict()

    def drop_expired(self, now: float) -> None:
        while self.table:
            digest, (_, until) = next(iter(self.table.items()))
            if until > now:
                return
            del self.table[digest]

    def put(self, digest: int, tokens: int, until: float) -> None:
        self.table[digest] = (tokens, until)
        self.table.move_to_end(digest)
        while len(self.table) > self.entries:
            self.table.popitem(last=False)


class PromptMemory:
    """What each key of one provider model sent within the cache's life (`ttl` seconds).

    A prompt sent refreshes its prefixes, as the provider's cache does; each key's table is bounded
    (`entries`), the least recently used leave first. A prediction misses nothing it should
    not: it is the remembered prefix's tokens less `block` (a cache that works in blocks may
    hold the prefix's last partial block or not), and never more than the prompt.
    """

    def __init__(self, keys: int, ttl: float, block: int, entries: int, clock: Callable[[], float]) -> None:
        self._ttl, self._block, self._clock = ttl, block, clock
        self._keys = [_KeyMemory(entries) for _ in range(keys)]
        # While shared with other processes: what this one remembered since it last published,
        # as (key index, digest, tokens, deadline on this process's clock).
        self._outbox: list[tuple[int, int, int, float]] | None = None

    @property
    def ttl(self) -> float:
        return self._ttl

    def share(self) -> None:
        """From now on keep what is remembered here for `take_remembered` (a shared memory)."""
        if self._outbox is None:
            self._outbox = []

    def take_remembered(self) -> list[Remembered]:
        """What this process remembered since the last call, each with the seconds it has left."""
        if not self._outbox:
            return []
        taken, self._outbox = self._outbox, []
        now = self._clock()
        return [Remembered(key_index, digest, tokens, until - now) for key_index, digest, tokens, until in taken
                if until > now]

    def learn(self, entry: Remembered) -> None:
        """Another process sent key `entry.key_index` a prompt with this prefix: remember it
        here too, for the seconds it has left (at most the cache's life), without passing it on."""
        if not 0 <= entry.key_index < len(self._keys) or entry.tokens <= 0 or entry.seconds_left <= 0:
            return
        now = self._clock()
        memory = self._keys[entry.key_index]
        until = now + min(entry.seconds_left, self._ttl)
        known = memory.table.get(entry.digest)
        if known is None or known[1] < until:
            memory.put(entry.digest, entry.tokens, until)

    def cached(self, prefix: PromptPrefix, prompt_tokens: int) -> list[int]:
        """Per key (in key order), the prompt tokens its cache likely holds of this prompt."""
        now = self._clock()
        found = []
        for memory in self._keys:
            memory.drop_expired(now)
            tokens = 0
            for digest in reversed(prefix.digests):
                hit = memory.table.get(digest)
                if hit is not None and hit[1] > now:  # a learned entry may expire before older ones
                    tokens = hit[0]
                    break
            found.append(max(0, min(prompt_tokens, tokens - self._block)))
        return found

    def remember(self, key_index: int, prefix: PromptPrefix, prompt_tokens: int) -> None:
        """Key `key_index` was sent this prompt of `prompt_tokens` (the provider's count): its
        whole prefix is cached now, and so is the tools-and-first-message part other
        conversations of the same agent share (its tokens estimated in proportion)."""
        if not 0 <= key_index < len(self._keys) or prompt_tokens <= 0:
            return
        memory, now = self._keys[key_index], self._clock()
        until = now + self._ttl
        memory.drop_expired(now)
        if len(prefix.digests) > 2:
            shared = math.floor(prompt_tokens * prefix.chars[1] / max(1, prefix.chars[-1]))
            self._put(key_index, prefix.digests[1], shared, until)
        self._put(key_index, prefix.digests[-1], prompt_tokens, until)

    def _put(self, key_index: int, digest: int, tokens: int, until: float) -> None:
        self._keys[key_index].put(digest, tokens, until)
        if self._outbox is not None and len(self._outbox) < OUTBOX_ENTRIES:
            self._outbox.append((key_index, digest, tokens, until))

    def size(self) -> int:
        """Entries held over all keys (for tests and operators)."""
        return sum(len(memory.table) for memory in self._keys)

    def carry_over(self, previous: "PromptMemory") -> None:
        """Keep what a previous configuration remembered (a reload), for keys at the same place."""
        for mine, theirs in zip(self._keys, previous._keys):
            for digest, (tokens, until) in theirs.table.items():
                mine.put(digest, tokens, until)

