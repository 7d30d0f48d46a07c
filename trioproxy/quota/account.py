"""One provider account's quota (one API key of a provider, on one model list): its windows,
where each window's limit comes from, the provider's own figures, its cooldown and half-open
probe. The memory ledger keeps one per account."""

import math
from collections.abc import Mapping

from attrs import define, field, frozen

from ..config.derived import extra_windows
from ..config.schema import ProviderConfig
from .contract import Refusal, window_kind
from .limits import LimitState, limit_states
from .windows import MINUTE, DailyWindow, RefillingBucket, Window, seconds_until_utc_midnight, window_of


@frozen
class Synced:
    """A provider's own figure for one window: `remaining` as of the request numbered `seq`."""

    remaining: int
    seq: int
    valid_until: float  # its reset time: afterwards the figure says nothing

@define
class AccountQuota:
    """Live quota state of one provider account (one API key).

    After a cooldown the account is half-open: one request probes it while the others keep
    going elsewhere; the probe's success reopens it, a new refusal cools it down again.
    """

    name: str
    provider: str
    key_index: int
    windows: dict[str, Window]
    limits: dict[str, LimitState] = field(factory=dict)  # where each window's limit comes from
    synced: dict[str, Synced] = field(factory=dict)
    figure_seq: dict[str, int] = field(factory=dict)  # the request whose figure was taken last
    cooldown_until: float = -math.inf
    cooldown_reason: str = ""
    half_open: bool = False
    probe_in_flight: bool = False
    # What each window counts (`contract.window_kind`), worked out once: every booking asks.
    kinds: dict[str, str] = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.kinds = {name: window_kind(name) for name in self.windows}

    @classmethod
    def from_config(cls, name: str, provider: ProviderConfig, key_index: int, now: float, wall: float) -> "AccountQuota":
        """A fresh account with the provider's windows and starting limits; daily windows end at
        the next UTC midnight after `wall` (Unix time), told on the clock of `now`."""
        day_ends_at = now + seconds_until_utc_midnight(wall)
        limits = limit_states(provider)
        windows: dict[str, Window] = {
            "rpm": RefillingBucket(limits["rpm"].limit, span=MINUTE),
            "tpm": RefillingBucket(limits["tpm"].limit, span=MINUTE),
            "utpm": RefillingBucket(limits["utpm"].limit, span=MINUTE),
            "rpd": DailyWindow(limits["rpd"].limit, day_ends_at=day_ends_at),
            "tpd": DailyWindow(limits["tpd"].limit, day_ends_at=day_ends_at),
        }
        windows |= {name: window_of(declared, now, wall) for name, declared in extra_windows(provider).items()}
        return cls(name=name, provider=provider.name, key_index=key_index, windows=windows, limits=limits)

    def take_limits(self, fresh: "AccountQuota", now: float) -> None:
        """Apply the limits of `fresh` (built from new settings), keeping this account's state
        and what the provider stated (under the new ceilings)."""
        for name, window in self.windows.items():
            kept = self.limits[name]
            self.limits[name] = state = fresh.limits[name]
            state.stated, state.stated_at = kept.stated, kept.stated_at
            window.set_limit(now, state.limit)

    def adopt_limits(self, now: float, stated: Mapping[str, int]) -> None:
        """Take the provider's stated limits as the windows' sizes, below the configured ceilings."""
        for name, figure in stated.items():
            state = self.limits.get(name)
            if state is None:
                continue
            state.stated, state.stated_at = figure, now
            if state.limit != self.windows[name].limit:
                self.windows[name].set_limit(now, state.limit)

    def end_cooldown_if_due(self, now: float) -> None:
        """A cooldown that has run out ends here, and the account becomes half-open."""
        if self.cooldown_until != -math.inf and now >= self.cooldown_until:
            self.cooldown_until, self.cooldown_reason = -math.inf, ""
            self.half_open, self.probe_in_flight = True, False

    def amounts(self, tokens: int, requests: int = 1, uncached: int = 0) -> dict[str, int]:
        """`{window: amount}` a booking of `requests` requests of `tokens` takes from each window,
        by the window's kind (`uncached` for the uncached prompt tokens' windows)."""
        amounts = {"requests": requests, "tokens": tokens, "uncached_tokens": uncached}
        return {name: amounts[kind] for name, kind in self.kinds.items()}

    def refusal(self, now: float, tokens: int) -> Refusal | None:
        """The first reason one request of `tokens` would be refused now, None if it would not."""
        return next(iter(self.refusals(now, tokens)), None)

    def longest_refusal(self, now: float, tokens: int, requests: int = 1, uncached: int = 0) -> Refusal | None:
        """The limit that holds `requests` requests of `tokens` in all longest, None if none does."""
        found = self.refusals(now, tokens, requests, uncached)
        return max(found, key=lambda r: r.retry_at) if found else None

    def refusals(self, now: float, tokens: int, requests: int = 1, uncached: int = 0) -> list[Refusal]:
        """Every reason `requests` requests of `tokens` in all (`uncached` of them prompt tokens
        not in the provider's cache) would be refused now."""
        self.end_cooldown_if_due(now)
        if now < self.cooldown_until:
            return [Refusal("cooldown", self.cooldown_until)]
        if self.half_open and self.probe_in_flight:
            return [Refusal("probe", now + 1)]
        found = []
        for name, amount in self.amounts(tokens, requests, uncached).items():
            window = self.windows[name]
            if not window.fits(now, amount):
                found.append(Refusal(name, now + window.seconds_until_fits(now, amount)))
            elif self.provider_remaining(name, now) < amount:
                found.append(Refusal(name, self.synced[name].valid_until))
        return found

    def provider_remaining(self, name: str, now: float) -> float:
        """What the provider last said remains, less what we booked since; inf if unknown."""
        synced = self.synced.get(name)
        if synced is None or now >= synced.valid_until:
            return math.inf
        return synced.remaining - self.windows[name].booked_after(synced.seq)

    def headroom(self, now: float) -> float:
        """The smallest share left of any limited window (1.0 = untouched), for choosing keys."""
        shares = [1.0]
        for name, window in self.windows.items():
            if window.limit:
                left = min(window.limit - window.used(now), self.provider_remaining(name, now))
                shares.append(max(0.0, left) / window.limit)
        return min(shares)

def account_name(provider: str, index: int, count: int) -> str:
    """`cerebras` for a single key, `cerebras#1`, `cerebras#2`, ... for several."""
    return provider if count == 1 else f"{provider}#{index + 1}"
