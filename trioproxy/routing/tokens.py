"""Token estimates made before a request is sent, corrected later from the response's usage."""

from typing import Any

from ..jsoncodec import dump_json

# Code and English run at roughly four characters a token for Qwen's tokenizer, while CJK
# and other non-ASCII text is closer to a token a character; the ledger settles to the
# provider's real count, so this only has to be close and cheap.
ASCII_CHARS_PER_TOKEN = 4


def _text_tokens(text: str) -> int:
    ascii_chars = len(text.encode("ascii", "ignore"))  # counted in C, not a Python loop
    return ascii_chars // ASCII_CHARS_PER_TOKEN + (len(text) - ascii_chars)


def estimate_prompt_tokens(body: dict[str, Any], messages_json: bytes | None = None) -> int:
    """Estimated prompt tokens of a chat body: its messages and tool definitions.
    `messages_json`: the messages already dumped (compact), if a caller has them."""
    if messages_json is None:
        messages_json = dump_json(body.get("messages", []))
    tokens = _text_tokens(messages_json.decode())
    for key in ("tools", "functions"):
        if body.get(key):
            tokens += _text_tokens(dump_json(body[key]).decode())
    return max(1, tokens)


def estimate_answer_tokens(document: dict[str, Any]) -> int:
    """Estimated completion tokens of a non-streamed chat answer: its choices' messages (text
    and tool calls), for an answer that came without usage."""
    choices = document.get("choices")
    if not isinstance(choices, list):
        return 0
    messages = [choice.get("message") for choice in choices if isinstance(choice, dict)]
    return _text_tokens(dump_json(messages).decode())


def requested_completion_tokens(body: dict[str, Any]) -> int | None:
    """The completion budget the client asked for, if any (`max_completion_tokens` wins)."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


class PromptEstimator:
    """Estimates prompt tokens, learning the ratio of real to estimated counts as usage arrives."""

    SMOOTHING = 0.2  # weight of the newest observation
    BOUNDS = (0.25, 4.0)  # a ratio outside these is a broken figure, not a tokenizer

    def __init__(self) -> None:
        self.ratio = 1.0

    def estimate(self, body: dict[str, Any], messages_json: bytes | None = None) -> tuple[int, int]:
        """(raw estimate, corrected estimate) of a body's prompt tokens (see `estimate_prompt_tokens`)."""
        raw = estimate_prompt_tokens(body, messages_json)
        return raw, max(1, round(raw * self.ratio))

    def learn(self, raw_estimate: int, actual: int) -> None:
        """Move the ratio a step towards `actual / raw_estimate` (within BOUNDS); a figure of 0
        or less on either side teaches nothing."""
        if raw_estimate <= 0 or actual <= 0:
            return
        low, high = self.BOUNDS
        observed = min(high, max(low, actual / raw_estimate))
        self.ratio += self.SMOOTHING * (observed - self.ratio)
