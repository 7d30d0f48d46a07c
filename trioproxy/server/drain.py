"""Graceful shutdown of streams: let them finish within a grace period, then end them cleanly."""

from collections.abc import Iterator
from contextlib import contextmanager

import trio

from ..errors import ProxyError

# How a stream still running when shutdown's grace period ends is closed, in each door's shape.
SHUTDOWN_ERROR = ProxyError(503, "The proxy is shutting down; the stream was ended early.", type="api_error", code="server_shutdown")


class Drain:
    """Tracks the requests and streams in flight, so shutdown can say what it waits for and
    end the streams still running with an SSE error event, not a cut."""

    def __init__(self) -> None:
        self._scopes: set[trio.CancelScope] = set()
        self._cutting = False
        self.requests = 0  # every HTTP request being served, streams included

    @contextmanager
    def request(self) -> Iterator[None]:
        self.requests += 1
        try:
            yield
        finally:
            self.requests -= 1

    @contextmanager
    def stream(self) -> Iterator[trio.CancelScope]:
        """A scope around relaying one stream; `cut()` cancels it."""
        scope = trio.CancelScope()
        if self._cutting:
            scope.cancel()
        self._scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._scopes.discard(scope)

    def cut(self) -> int:
        """End every stream still relaying; returns how many."""
        self._cutting = True
        for scope in self._scopes:
            scope.cancel()
        return len(self._scopes)

    @property
    def streams(self) -> int:
        return len(self._scopes)
