"""The ledger contract: what the router, cooldown timers and operator views ask of a quota ledger.

Two implementations: `ledger.QuotaLedger` keeps the quota in this process (the default);
`redis.ledger.RedisLedger` keeps it in Redis, shared by every worker and replica.
All times given and returned are Trio clock times of the calling process.
"""

import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from attrs import define, frozen

# utpm: prompt tokens the provider's cache did not hold (Cerebras's uncached bucket); tpm and
# tpd count every token (its total bucket).
WINDOW_NAMES = ("rpm", "tpm", "utpm", "rpd", "tpd")
_DECLARED = re.compile(r"(requests|tokens|uncached_tokens)_\d+[smhd](_\w+)?")
_KINDS = {"rpm": "requests", "rpd": "requests", "tpm": "tokens", "tpd": "tokens", "utpm": "uncached_tokens"}


def window_kind(name: str) -> str:
    """What a window counts: "requests", "tokens" or "uncached_tokens", for the five named
    windows and for declared ones (`QuotaWindow.name`: its kind, its length, its metering)."""
    return _KINDS.get(name) or _DECLARED.match(name)[1]  # type: ignore[index]


def snapshot_windows(state: Mapping[str, Any]) -> list[str]:
    """Every window an account's snapshot holds: the five named ones, then declared ones."""
    return [*WINDOW_NAMES, *state.get("other_windows", ())]


@frozen
class Refusal:
    """Why a provider cannot take a request now, and when it might again (clock time)."""

    reason: str  # a window name, "cooldown", "probe" or "redis" (the shared ledger is unreachable)
    retry_at: float

    @property
    def foreseen(self) -> bool:
        """Whether `retry_at` is known from the quota, not a guess (when Redis will be back is not)."""
        return self.reason != "redis"


@define
class Reservation:
    """One request's booking on one provider account, handed back to settle and sync it."""

    account: str  # "cerebras", or "cerebras#2" for its second key; never the key itself
    provider: str
    key_index: int
    tokens: int
    seq: int
    probe: bool = False  # the single request let through after a cooldown (half-open)
    uncached: int = 0  # of `tokens`, the prompt tokens booked as not in the provider's cache


class Ledger(Protocol):
    """Quota of every provider account a runtime routes to, as the router and views use it.

    A provider or account name the ledger was not built with raises KeyError (a caller's
    mistake: routers ask only for their own). Redis being unreachable never raises out of a
    call: the shared ledger answers from its local stand-in or refuses with reason "redis", as
    `redis_outage` says. Whatever a call returns is new and the caller's: a Reservation is
    settled by the caller (at most once) and closed with `finish_probe`; snapshots, lists and
    summaries are copies the ledger no longer touches.
    """

    def now(self) -> float:
        """The clock every deadline given to or returned by the ledger is on."""
        ...

    def accounts(self) -> list[str]:
        """Every account name (`cerebras`, `cerebras#2`, `cerebras:gpt-oss-120b`), never a key."""
        ...

    async def reserve(
        self, provider: str, tokens: int, *, floor: int = 0, uncached: Sequence[int] | None = None
    ) -> Reservation | Refusal:
        """Check and book one request of `tokens` on the provider's account with most headroom,
        atomically over all its windows. Refused, it says what `refusal(provider, tokens)` would
        at that moment (the soonest account, the limit that holds it longest), so a caller need
        not ask again. `floor` is what the request costs even if it is cut short (its prompt):
        a shared ledger's lease that is never settled gives back the rest.

        `uncached`: per account (key order), the prompt tokens the provider's cache likely
        lacks there (None: all of `floor`, on every account). An account that can take the
        request with fewer uncached tokens than another wins over headroom: a conversation
        returns to the key whose cache holds it (cache affinity)."""
        ...

    async def refusal(self, provider: str, tokens: int, requests: int = 1, uncached: int = 0) -> Refusal | None:
        """Without booking: when `requests` requests of `tokens` in all (`uncached` of them
        uncached) could go to `provider` (its soonest account, once every limit has room) and
        the limit that holds them longest; None if they could now."""
        ...

    async def settle(self, reservation: Reservation, actual_tokens: int, uncached_tokens: int | None = None) -> None:
        """Replace the reservation's estimate by what the provider really counted: `actual_tokens`
        in all, `uncached_tokens` of the prompt not from its cache (None: what was booked,
        at most `actual_tokens`)."""
        ...

    async def sync(self, reservation: Reservation, figures: Mapping[str, tuple[float, float]]) -> None:
        """Take the provider's figures `{window: (remaining, seconds_to_reset)}` as of this
        reservation: they may lower what we believe is left, never raise it."""
        ...

    async def adopt_limits(self, reservation: Reservation, stated: Mapping[str, int]) -> None:
        """The provider's stated limits `{window: figure}`, as of this reservation's answer,
        become the sizes of its account's windows (per key and model); a configured figure
        stays a ceiling: never book above it. Figures may raise a limit as well as lower it."""
        ...

    async def start_cooldown(self, account: str, until: float, reason: str) -> bool:
        """Skip `account` until `until`; False when an existing cooldown lasts longer."""
        ...

    async def end_cooldown(self, account: str, until: float) -> bool:
        """End the cooldown set to `until` (it becomes half-open); False if it was replaced."""
        ...

    def finish_probe(self, reservation: Reservation, succeeded: bool) -> None:
        """Close a half-open probe. Synchronous: it runs in `finally` blocks, also when cancelled."""
        ...

    def available_at(self, provider: str) -> float:
        """The earliest moment any account of `provider` might take a small request again."""
        ...

    def in_cooldown(self, provider: str) -> bool:
        """True when every account of `provider` is cooling down."""
        ...

    def snapshot(self, account: str) -> dict[str, Any]:
        """Used and limit of each window, the provider's own figures, the cooldown, and in
        `limit_sources` where each limit in force comes from (`LimitState.view`)."""
        ...

    def provider_snapshot(self, provider: str) -> dict[str, dict[str, Any]]:
        """`{account: snapshot}` of each account of `provider`, in key order."""
        ...

    def summary(self, provider: str) -> str:
        """The provider's accounts in short for logs, e.g. `cerebras[rpm 3/12 tpm 4100/132000]`."""
        ...

    def account_summary(self, account: str) -> str:
        """One account in short for logs (`summary_line`); empty when no window has a limit."""
        ...

    def store_status(self) -> dict[str, Any]:
        """Where the quota lives and whether it is reachable, for /healthz, /v1/status, /metrics."""
        ...


def summary_line(account: str, state: Mapping[str, Any]) -> str:
    """A snapshot in short for logs, e.g. `cerebras[rpm 3/12 tpm 4100/132000]`."""
    parts = [
        f"{name} {state[name]['used']}/{state[name]['limit']}"
        for name in snapshot_windows(state)
        if name in state and state[name]["limit"] is not None
    ]
    if state["cooldown_seconds"]:
        parts.append(f"cooldown {state['cooldown_seconds']}s")
    return f"{account}[{' '.join(parts)}]" if parts else ""


def uncached_costs(uncached: Sequence[int] | None, floor: int, accounts: int) -> list[int]:
    """Per account, the uncached prompt tokens to book: what the caller predicted, within
    0..floor (a prediction never books more than the prompt, nor less than nothing); all of
    `floor` where it predicted nothing."""
    given = list(uncached or ())[:accounts]
    return [max(0, min(floor, cost)) for cost in given] + [floor] * (accounts - len(given))


def settled_uncached(reservation: Reservation, actual_tokens: int, uncached_tokens: int | None) -> int:
    """The uncached tokens a settled request counts: the provider's figure within 0..actual
    (a usage block claiming more cached than prompt counts none uncached); without one, what
    was booked, at most the actual total."""
    figure = reservation.uncached if uncached_tokens is None else uncached_tokens
    return max(0, min(actual_tokens, figure))
