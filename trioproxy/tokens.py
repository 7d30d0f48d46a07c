"""Token estimates made before a request is sent, corrected later from the response's usage."""

import json
from typing import Any

# Code and English run at roughly four characters a token for Qwen's tokenizer; the ledger
# settles to the provider's real count, so this only has to be close and cheap.
CHARS_PER_TOKEN = 4


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """Estimated prompt tokens of a chat body: its messages and tool definitions."""
    size = len(json.dumps(body.get("messages", []), separators=(",", ":"), ensure_ascii=False))
    for key in ("tools", "functions"):
        if body.get(key):
            size += len(json.dumps(body[key], separators=(",", ":"), ensure_ascii=False))
    return max(1, size // CHARS_PER_TOKEN)


def requested_completion_tokens(body: dict[str, Any]) -> int | None:
    """The completion budget the client asked for, if any (`max_completion_tokens` wins)."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None
