"""What the emulated server does with one request: answer, stream, reset or stall."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import Factory, define

Json = dict[str, Any]


@define
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@define
class Reply:
    """A complete response with a JSON body."""

    status: int
    body: Json
    headers: list[tuple[str, str]] = Factory(list)
    wait: float = 0.0  # generation time before the answer leaves
    finish: Callable[[], None] | None = None  # runs after `wait`, before the answer is written


@define
class Stream:
    """A 200 SSE response: `events` are the JSON payloads, `[DONE]` is appended."""

    events: list[Json]
    headers: list[tuple[str, str]] = Factory(list)
    delay: float = 0.0
    first_delay: float = 0.0  # before the first event (time to first token)
    reset_after: int | None = None  # reset the connection once this many events went out
    finish: Callable[[], None] | None = None  # runs before the last event (which holds usage)


@define
class Reset:
    """Reset the connection without answering."""


@define
class Stall:
    """Never answer; hold the connection until the client goes away."""


Action = Reply | Stream | Reset | Stall
