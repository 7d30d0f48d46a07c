"""Where a window's limit comes from: the settings start it, the provider's stated figure
replaces it, and a configured figure stays a ceiling over both.

Both ledgers keep one `LimitState` per window of an account (per key and model); the memory
ledger enforces `limit` directly, the Redis ledger's script applies the same rule to the figures
it stores.
"""

from typing import Any

from attrs import define

from ..config.schema import ProviderConfig
from ..config.derived import configured_limits, starting_limits


@define
class LimitState:
    """One window's limit: its starting figure (and where that came from), the configured
    ceiling, and the provider's last stated figure with when it was stated (clock time)."""

    start: int | None
    start_source: str  # "configured", "preset", or "" (no limit)
    ceiling: int | None
    stated: int | None = None
    stated_at: float | None = None

    @property
    def limit(self) -> int | None:
        """The bucket size in force: the provider's figure under the ceiling, else the start."""
        if self.stated is None:
            return self.start
        return self.stated if self.ceiling is None else min(self.stated, self.ceiling)

    @property
    def source(self) -> str:
        """"provider" when its stated figure is in force, "configured" when the ceiling holds
        it lower (or no figure was stated), "preset" for a plan's starting figure."""
        if self.stated is None:
            return self.start_source
        return "configured" if self.ceiling is not None and self.ceiling < self.stated else "provider"

    def view(self, now: float) -> dict[str, Any]:
        """For operators: the source, and how old the provider's figure is (seconds)."""
        shown: dict[str, Any] = {"source": self.source}
        if self.stated_at is not None:
            shown["stated"], shown["age_seconds"] = self.stated, round(max(0.0, now - self.stated_at), 1)
        return shown


def limit_states(provider: ProviderConfig) -> dict[str, LimitState]:
    """A fresh `LimitState` per window from the settings (nothing stated yet)."""
    ceilings = configured_limits(provider)
    return {window: LimitState(start, source, ceilings[window]) for window, (start, source) in starting_limits(provider).items()}
