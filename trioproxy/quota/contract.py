"""The ledger contract: what the router, cooldown timers and operator views ask of a quota ledger.

Two implementations: `ledger.QuotaLedger` keeps the quota in this process (the default);
`redis_ledger.RedisLedger` keeps it in Redis, shared by every worker and replica.
All times given and returned are Trio clock times of the calling process.
"""

from collections.abc import Mapping
from typing import Any, Protocol

from attrs import define, frozen

WINDOW_NAMES = ("rpm", "tpm", "rpd", "tpd")


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


class Ledger(Protocol):
    def now(self) -> float:
        """The clock every deadline given to or returned by the ledger is on."""
        ...

    def accounts(self) -> list[str]: ...

    async def reserve(self, provider: str, tokens: int, *, floor: int = 0) -> Reservation | Refusal:
        """Check and book one request of `tokens` on the provider's account with most headroom,
        atomically over all its windows. Refused, it says what `refusal(provider, tokens)` would
        at that moment (the soonest account, the limit that holds it longest), so a caller need
        not ask again. `floor` is what the request costs even if it is cut short (its prompt):
        a shared ledger's lease that is never settled gives back the rest."""
        ...

    async def refusal(self, provider: str, tokens: int, requests: int = 1) -> Refusal | None:
        """Without booking: when `requests` requests of `tokens` in all could go to `provider`
        (its soonest account, once every limit has room) and the limit that holds them
        longest; None if they could now."""
        ...

    async def settle(self, reservation: Reservation, actual_tokens: int) -> None:
        """Replace the reservation's estimate by what the provider really counted."""
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

    def in_cooldown(self, provider: str) -> bool: ...

    def snapshot(self, account: str) -> dict[str, Any]:
        """Used and limit of each window, the provider's own figures, the cooldown, and in
        `limit_sources` where each limit in force comes from (`LimitState.view`)."""
        ...

    def provider_snapshot(self, provider: str) -> dict[str, dict[str, Any]]: ...

    def summary(self, provider: str) -> str: ...

    def account_summary(self, account: str) -> str: ...

    def store_status(self) -> dict[str, Any]:
        """Where the quota lives and whether it is reachable, for /healthz, /v1/status, /metrics."""
        ...


def summary_line(account: str, state: Mapping[str, Any]) -> str:
    """A snapshot in short for logs, e.g. `cerebras[rpm 3/12 tpm 4100/132000]`."""
    parts = [f"{name} {state[name]['used']}/{state[name]['limit']}" for name in WINDOW_NAMES if state[name]["limit"] is not None]
    if state["cooldown_seconds"]:
        parts.append(f"cooldown {state['cooldown_seconds']}s")
    return f"{account}[{' '.join(parts)}]" if parts else ""
