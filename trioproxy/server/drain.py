"""Graceful shutdown of streams: let them finish within a grace period, then end them cleanly."""

from types import TracebackType

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
        self._in_flight = _Counted()

    @property
    def requests(self) -> int:
        """Every HTTP request being served, streams included."""
        return self._in_flight.count

    def request(self) -> "_Counted":
        """A block counted as one request in flight."""
        return self._in_flight

    def stream(self) -> "_Relaying":
        """A block relaying one stream, in a cancel scope (what the block is given) that `cut()` cancels."""
        return _Relaying(self._scopes, self._cutting)

    def cut(self) -> int:
        """End every stream still relaying; returns how many."""
        self._cutting = True
        for scope in self._scopes:
            scope.cancel()
        return len(self._scopes)

    @property
    def streams(self) -> int:
        return len(self._scopes)


class _Relaying:
    """One stream's scope, known to its Drain while entered (a class, not a generator: it wraps every stream)."""

    __slots__ = ("_scopes", "_scope")

    def __init__(self, scopes: set[trio.CancelScope], cut: bool) -> None:
        self._scopes = scopes
        self._scope = trio.CancelScope()
        if cut:
            self._scope.cancel()

    def __enter__(self) -> trio.CancelScope:
        entered = self._scope.__enter__()
        self._scopes.add(self._scope)
        return entered

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> bool:
        try:
            return self._scope.__exit__(kind, error, traceback)
        finally:
            self._scopes.discard(self._scope)


class _Counted:
    """Counts the blocks it is entered in (a class, not a generator: it wraps every request)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def __enter__(self) -> None:
        self.count += 1

    def __exit__(self, *exc_info: object) -> None:
        self.count -= 1
