"""The emulated prompt cache: prefix blocks a key sent lately, as Cerebras caches them.

The prompt is the text `prompt_tokens` counts (the tools, then the messages, as compact JSON),
cut into blocks of `block_tokens` tokens (4 characters a token). A block is cached when the
same text up to its end was sent within `ttl` seconds (each use refreshes it); a prompt's
cached part is its leading run of cached blocks, whole blocks only, from the first token.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from attrs import Factory, define

from .actions import Json

CHARS_PER_TOKEN = 4


def prompt_text(body: Json) -> bytes:
    """What the cache matches: the tools, then the messages (their lengths make `prompt_tokens`)."""
    text = _compact(body["tools"]) if body.get("tools") is not None else ""
    return (text + _compact(body.get("messages", []))).encode()


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


@define
class PromptCache:
    """One key's cache: block digest (chained from the first block) -> when it expires."""

    ttl: float = 300.0
    block_tokens: int = 128
    max_blocks: int = 100_000  # beyond this the oldest blocks leave first
    blocks: dict[bytes, float] = Factory(dict)

    def lookup(self, body: Json, prompt_tokens: int, now: float) -> tuple[int, list[bytes]]:
        """The prompt tokens this prompt finds cached, and its blocks' digests (to `store` once
        the prompt is admitted: a refused prompt is not processed, so not cached)."""
        if self.ttl <= 0 or self.block_tokens <= 0:
            return 0, []
        text, size = prompt_text(body), self.block_tokens * CHARS_PER_TOKEN
        digest, digests, hits = b"", [], 0
        for start in range(0, len(text) - size + 1, size):
            digest = hashlib.blake2b(text[start:start + size], digest_size=16, key=digest).digest()
            digests.append(digest)
            if hits == len(digests) - 1 and self.blocks.get(digest, -1.0) > now:
                hits += 1
        return min(prompt_tokens, hits * self.block_tokens), digests

    def store(self, digests: list[bytes], now: float) -> None:
        """Cache (or refresh) these blocks until `ttl` from now; the oldest leave beyond `max_blocks`."""
        for digest in digests:
            self.blocks.pop(digest, None)  # re-inserted last: the oldest stay first
            self.blocks[digest] = now + self.ttl
        while len(self.blocks) > self.max_blocks:
            del self.blocks[next(iter(self.blocks))]
