"""What the routing pipeline takes in and what it records: one shape whichever door a request used."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import trio
from attrs import define, field


@define
class ChatRequest:
    """A request in the pipeline's one internal shape: an OpenAI Chat Completions body.

    Every front door translates its protocol into this; providers speak it natively.
    """

    body: dict[str, Any]
    stream: bool


@define
class RequestRecord:
    """What one request did, filled in along the way and logged once when it ends."""

    request_id: str
    api: str = "chat"  # the front door: chat, responses or messages
    stream: bool = False
    provider: str = "-"
    account: str = "-"  # which key's quota paid, e.g. cerebras#2; never the key itself
    reason: str = "-"
    status: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_estimate: int = 0  # the raw estimate, so usage can teach the estimator
    upstream_seconds: float = 0.0  # time spent waiting on providers, to tell the proxy's own overhead
    started: float = field(factory=trio.current_time)
    first_byte_at: float | None = None  # streams: when the client's 200 went out

    def overhead_seconds(self, until: float) -> float:
        """Time up to `until` that the proxy, not a provider, spent on this request."""
        return until - self.started - self.upstream_seconds


@contextmanager
def waiting_on_upstream(record: RequestRecord) -> Iterator[None]:
    """Count the time inside as the provider's, not the proxy's."""
    started = trio.current_time()
    try:
        yield
    finally:
        record.upstream_seconds += trio.current_time() - started
