"""Clients' own quota: the budgets an operator gives each client, and what each one used.

A budget is the client's own limit, over every provider that serves it: requests and tokens per
minute (sliding windows) and per day (to the next UTC midnight), for all its routes together
(scope `*`) or for one route. A request is admitted while every window that applies has room for
one more request and for its estimated tokens (prompt estimate plus its completion bound); the
estimate is booked at admission, so neither one large request nor a parallel burst goes past a
tokens budget, and settled to the real usage when the request ends (nothing when no provider
answered).

Usage is counted per client, route and provider (the one that served, or `-`), since the
state was first saved: requests, prompt tokens (and the cached part), completion tokens,
failovers (counted against the provider that failed) and requests refused over budget.
"""

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import trio
from attrs import define, field

from ..config.schema import Budget, ClientConfig
from .contract import Refusal
from .windows import MINUTE, DailyWindow, SlidingWindow, Window, WindowBooking, seconds_until_utc_midnight

ALL_ROUTES = "*"
USAGE_FIELDS = ("requests", "prompt_tokens", "cached_tokens", "completion_tokens", "failovers", "over_budget")
_FIELD_INDEX = {name: position for position, name in enumerate(USAGE_FIELDS)}
_REQUEST_WINDOWS = ("rpm", "rpd")
_TOKEN_WINDOWS = ("tpm", "tpd")


def _windows(budget: Budget, day_ends_at: float) -> dict[str, Window]:
    windows: dict[str, Window] = {}
    for name, limit in budget.limits().items():
        windows[name] = SlidingWindow(limit, span=MINUTE) if name in ("rpm", "tpm") else DailyWindow(limit, day_ends_at=day_ends_at)
    return windows


def _scopes(client: ClientConfig) -> dict[str, Budget]:
    scopes = {route: budget for route, budget in client.route_budgets.items() if budget.limits()}
    if client.budget.limits():
        scopes[ALL_ROUTES] = client.budget
    return scopes


@define
class TokenBooking:
    """The estimated tokens one admitted request booked on its client's token windows."""

    _bookings: list[tuple[Window, WindowBooking]] = field(factory=list)

    def settle(self, tokens: int) -> None:
        """Replace the estimate by the tokens the request really used (0 when no provider answered)."""
        for window, booking in self._bookings:
            window.adjust(booking, max(0, tokens))
        self._bookings = []


class ClientBudgets:
    """Every client's budget windows, by client and scope, in this process.

    Synchronous methods without checkpoints: admitting checks and books at once (Trio), so two
    requests of a client cannot both take its last request of the minute.
    """

    def __init__(self, clients: Sequence[ClientConfig], clock: Callable[[], float] = trio.current_time,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        self._windows: dict[str, dict[str, dict[str, Window]]] = {}  # client -> scope -> window name -> window
        # What other replicas sharing the quota through Redis last said they counted, by
        # (client, scope, window); they publish it every second.
        self.others: dict[tuple[str, str, str], int] = {}
        self.reconfigure(clients)

    def reconfigure(self, clients: Sequence[ClientConfig]) -> None:
        """Take new budgets (a reload); a window that stays keeps what it counted."""
        now = self._clock()
        day_ends_at = now + seconds_until_utc_midnight(self._wall_clock())
        fresh: dict[str, dict[str, dict[str, Window]]] = {}
        for client in clients:
            for scope, budget in _scopes(client).items():
                kept = self._windows.get(client.name, {}).get(scope, {})
                windows = _windows(budget, day_ends_at)
                for name, window in windows.items():
                    if name in kept:
                        kept[name].set_limit(now, window.limit)
                        windows[name] = kept[name]
                fresh.setdefault(client.name, {})[scope] = windows
        self._windows = fresh

    def _applying(self, client: str, route: str) -> list[tuple[str, str, dict[str, Window]]]:
        scopes = self._windows.get(client)
        if not scopes:
            return []
        return [(client, scope, windows) for scope, windows in scopes.items() if scope in (ALL_ROUTES, route)]

    def admit(self, client: str, route: str, estimate: Callable[[], int] = lambda: 1) -> Refusal | TokenBooking:
        """Book one request of `client` on `route` and its estimated tokens (`estimate`, asked
        only when a tokens budget applies), or say which of its budgets holds it longest and until
        when (nothing booked). The booking is settled to the real usage when the request ends."""
        applying = self._applying(client, route)
        if not applying:
            return TokenBooking()
        now = self._clock()
        tokens = max(1, estimate()) if any(name in windows for _, _, windows in applying for name in _TOKEN_WINDOWS) else 1
        refusals = []
        for client_, scope, windows in applying:
            for name, window in windows.items():
                amount = tokens if name in _TOKEN_WINDOWS else 1
                # What other replicas counted leaves when it leaves there: a second is the least to wait.
                if not window.fits(now, amount + (elsewhere := self.others.get((client_, scope, name), 0))):
                    wait = window.seconds_until_fits(now, amount)
                    refusals.append(Refusal(name, now + (max(1.0, wait) if elsewhere else wait)))
        if refusals:
            return max(refusals, key=lambda refusal: refusal.retry_at)
        bookings = []
        for _, _, windows in applying:
            for name, window in windows.items():
                if name in _TOKEN_WINDOWS:
                    bookings.append((window, window.add(now, tokens)))
                else:
                    window.add(now, 1)
        return TokenBooking(bookings)

    def snapshot(self, client: str) -> dict[str, dict[str, dict[str, int | None]]]:
        """`{scope: {window: {used, limit}}}` of a client's budgets (every replica's use)."""
        now = self._clock()
        return {
            scope: {name: {"used": window.used(now) + self.others.get((client, scope, name), 0), "limit": window.limit}
                    for name, window in windows.items()}
            for scope, windows in self._windows.get(client, {}).items()
        }

    def local(self) -> dict[tuple[str, str, str], int]:
        """What this process counted in each budget window, for the other replicas."""
        now = self._clock()
        return {(client, scope, name): window.used(now)
                for client, scopes in self._windows.items()
                for scope, windows in scopes.items() for name, window in windows.items()}

    def export_state(self, wall_offset: float) -> dict[str, Any]:
        now = self._clock()
        return {
            client: {scope: {name: window.export(now, wall_offset) for name, window in windows.items()}
                     for scope, windows in scopes.items()}
            for client, scopes in self._windows.items()
        }

    def import_state(self, state: Mapping[str, Any], trio_offset: float) -> None:
        """Restore what `export_state` saved, for the budgets that still exist."""
        now = self._clock()
        for client, scopes in state.items():
            for scope, windows in scopes.items():
                for name, saved in windows.items():
                    window = self._windows.get(client, {}).get(scope, {}).get(name)
                    if window is not None:
                        window.restore(now, saved, trio_offset)


Row = tuple[str, str, str]  # client, route, provider


def _add(rows: dict[Row, list[int]], key: Row, amounts: dict[str, int] | Sequence[int]) -> None:
    row = rows.get(key)
    if row is None:
        row = rows[key] = [0] * len(USAGE_FIELDS)
    # dict, not the Mapping ABC: an ABC's isinstance costs several times more, on every request.
    pairs = amounts.items() if isinstance(amounts, dict) else zip(USAGE_FIELDS, amounts)
    for name, amount in pairs:
        row[_FIELD_INDEX[name]] += amount


@define
class ClientUsage:
    """What each client used, by route and provider: counters that only grow.

    Shared through Redis, what this process counted waits in `pending` until it is added to
    the shared counters, and the view is those (`shared`, as last read) plus what is pending."""

    _counts: dict[Row, list[int]] = field(factory=dict)
    pending: dict[Row, list[int]] = field(factory=dict)
    shared: dict[Row, list[int]] | None = None

    def count(self, client: str, route: str, provider: str, **amounts: int) -> None:
        """Add `amounts` (named as USAGE_FIELDS) to the client's row for `route` and `provider`."""
        _add(self._counts, (client, route, provider), amounts)
        if self.shared is not None:
            _add(self.pending, (client, route, provider), amounts)

    def take_pending(self) -> dict[Row, list[int]]:
        """What was counted since the last call, for the shared counters (the caller owns it)."""
        pending, self.pending = self.pending, {}
        return pending

    def return_pending(self, pending: Mapping[Row, Sequence[int]]) -> None:
        """Counts that could not reach the shared counters: they go with the next attempt."""
        for key, row in pending.items():
            _add(self.pending, key, row)

    def view(self) -> dict[str, Any]:
        """`{client: {"total": {...}, "routes": {route: {provider: {...}}}}}`, fields as USAGE_FIELDS."""
        rows = self._counts
        if self.shared is not None:
            rows = {key: list(row) for key, row in self.shared.items()}
            for key, row in self.pending.items():
                _add(rows, key, row)
        clients: dict[str, Any] = {}
        for (client, route, provider), row in sorted(rows.items()):
            entry = clients.setdefault(client, {"total": dict.fromkeys(USAGE_FIELDS, 0), "routes": {}})
            entry["routes"].setdefault(route, {})[provider] = dict(zip(USAGE_FIELDS, row))
            for name, amount in zip(USAGE_FIELDS, row):
                entry["total"][name] += amount
        return clients

    def export_state(self) -> list[list[Any]]:
        return [[client, route, provider, *row] for (client, route, provider), row in self._counts.items()]

    def import_state(self, saved: Iterable[Sequence[Any]]) -> None:
        for client, route, provider, *row in saved:
            self.count(str(client), str(route), str(provider), **dict(zip(USAGE_FIELDS, map(int, row))))


@define
class ClientBook:
    """Budgets and usage of every client: carried over a reload, saved with the ledger's state."""

    budgets: ClientBudgets
    usage: ClientUsage = field(factory=ClientUsage)

    @classmethod
    def for_clients(cls, clients: Sequence[ClientConfig]) -> "ClientBook":
        return cls(ClientBudgets(clients))

    def export_state(self, wall_offset: float) -> dict[str, Any]:
        return {"budgets": self.budgets.export_state(wall_offset), "usage": self.usage.export_state()}

    def import_state(self, state: Mapping[str, Any], trio_offset: float) -> None:
        self.budgets.import_state(state["budgets"], trio_offset)
        self.usage.import_state(state["usage"])


def retry_after_seconds(refusal: Refusal, now: float) -> int:
    """Whole seconds until a refused request may come back (at least 1)."""
    return max(1, math.ceil(refusal.retry_at - now))
