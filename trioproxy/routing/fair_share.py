"""Fair share of a fast provider among clients: max-min fair by weight, work-conserving.

Each request a client sends towards a provider that has a fallback costs a part of that
provider's minute: the larger of one request over its requests/minute and its tokens over its
tokens/minute (the limit it weighs on most). Over the last minute, what each client asked for
is its demand and what it was given its use. While the provider has more than SATURATION of
every limit left (its minute buckets, its day), nobody is held back (no one is short of
anything); below, each client active
in the last minute may use the part water-filling gives it: clients asking less than their
weight's part get all they ask, the rest is split among the others by weight. A request
beyond its client's part is refused with reason "share", so it goes to the next provider
(or waits, where patience says that is faster). With one active client nothing changes.

The figures are this process's, plus what the other replicas publish when the quota is
shared through Redis (`routing/client_exchange.ClientExchange`).
"""

import math
import secrets
from collections.abc import Callable, Mapping

import trio
from attrs import define, field

from ..config.schema import ProviderConfig
from ..config.derived import starting_limits
from ..quota.contract import Ledger, Refusal, snapshot_windows
from ..quota.windows import MINUTE, SlidingWindow, WindowBooking

# Below this much left of any of the provider's limits, demand is taken to exceed its quota: a
# fuller bucket would overflow (its refill lost) if the clients over their parts waited.
SATURATION = 0.8
# Costs are kept in millionths of a minute's capacity: whole numbers for the windows.
UNIT = 1_000_000
ACTIVE_SECONDS = MINUTE
# How often a request's cost is priced again from the limits in force (they change seldom).
LIMITS_SECONDS = 1.0


def water_fill(demands: Mapping[str, tuple[float, int]], capacity: int) -> dict[str, float]:
    """Max-min fair parts of `capacity` by weight: `demands` is `{client: (weight, demand)}`.

    A client demanding less than its weight's part of what is left gets its demand; what it
    leaves is shared among the rest in proportion to their weights, and so on."""
    parts: dict[str, float] = {}
    left, open_ = float(capacity), dict(demands)
    while open_:
        level = left / sum(weight for weight, _ in open_.values())
        modest = {name: demand for name, (weight, demand) in open_.items() if demand <= level * weight}
        if not modest:
            parts.update({name: level * weight for name, (weight, _) in open_.items()})
            break
        for name, demand in modest.items():
            parts[name] = demand
            left -= demand
            del open_[name]
    return parts


@define
class _ClientUse:
    weight: float
    asked: SlidingWindow = field(factory=lambda: SlidingWindow(None, span=MINUTE))
    used: SlidingWindow = field(factory=lambda: SlidingWindow(None, span=MINUTE))
    last_asked: float = -math.inf


@define
class Published:
    """What one replica says its clients asked for and used over the last minute (units)."""

    weight: float
    asked: int
    used: int


class ProviderShare:
    """The clients' use of one provider's quota (one quota key), and who may take more."""

    def __init__(self, provider: ProviderConfig, ledger: Ledger, clock: Callable[[], float] = trio.current_time) -> None:
        self.provider = provider  # sets the per-request cost's limits too
        self.ledger = ledger
        self._clock = clock
        self._clients: dict[str, _ClientUse] = {}
        # Other replicas' last published figures, by client (summed over replicas).
        self.others: dict[str, Published] = {}

    @property
    def provider(self) -> ProviderConfig:
        return self._provider

    @provider.setter
    def provider(self, provider: ProviderConfig) -> None:
        self._provider = provider
        limits = starting_limits(provider)
        self._rpm, self._tpm = limits["rpm"][0], limits["tpm"][0]
        self._limits_due = -math.inf  # read the ledger's limits at the next cost

    def cost(self, tokens: int) -> int:
        """What a request of `tokens` takes of the provider's minute, in units (0: no limit):
        its limits in force in the ledger (the provider's stated figures once it stated them,
        under a configured ceiling), read again every LIMITS_SECONDS, not twice per request."""
        if (now := self._clock()) >= self._limits_due:
            self._learn_limits(now)
        rpm, tpm = self._rpm, self._tpm
        shares = ([1 / rpm] if rpm else []) + ([tokens / tpm] if tpm else [])
        return math.ceil(max(shares, default=0.0) * UNIT)

    def _learn_limits(self, now: float) -> None:
        """The provider's minute as the ledger counts it now: each window's limits summed over
        its accounts (no limit on one account: none for the provider). Costs already counted
        keep the figures they were priced with; they leave within the minute."""
        self._limits_due = now + LIMITS_SECONDS
        accounts = self.ledger.provider_snapshot(self.provider.name).values()
        if not accounts:
            return
        limits = [[state[window]["limit"] for state in accounts] for window in ("rpm", "tpm")]
        self._rpm, self._tpm = (None if None in figures else sum(figures) for figures in limits)

    def asked(self, client: str, weight: float, cost: int) -> None:
        """A request of `client` wants the provider (counted once per request)."""
        now = self._clock()
        use = self._clients.get(client)
        if use is None:
            use = self._clients[client] = _ClientUse(weight)
        use.weight, use.last_asked = weight, now
        use.asked.add(now, cost)

    def took(self, client: str, cost: int) -> WindowBooking:
        """A request of `client` got the provider's quota; the booking settles it later."""
        return self._clients[client].used.add(self._clock(), cost)

    def settle(self, client: str, booking: WindowBooking, tokens: int) -> None:
        """Count what the request really took (the provider gives back the rest of a reservation)."""
        self._clients[client].used.adjust(booking, self.cost(tokens))

    def give_back(self, client: str, booking: WindowBooking) -> None:
        """A request counted by `took` that the provider did not take after all."""
        self._clients[client].used.adjust(booking, 0)

    def refusal(self, client: str, cost: int) -> Refusal | None:
        """None if `client` may take a request of `cost` now; else a "share" refusal with the
        time its own use will be below its part again (the others' may change that either way)."""
        now = self._clock()
        # The asking client is active, and asks for this request, however long patience has held
        # it (past the last minute, its own figures would have left the windows).
        self._clients[client].last_asked = now
        demands = self.demands(now)
        if len(demands) <= 1:
            return None
        weight, asked, used = demands[client]
        demands[client] = (weight, max(asked, cost), used)
        part = water_fill({name: (weight, asked) for name, (weight, asked, _) in demands.items()}, UNIT)[client]
        # Below its part a client may take one more request, however large: a request larger
        # than a part would otherwise never go, and the overdraft is repaid before the next.
        if used < part or self._headroom() >= SATURATION:
            return None
        mine = self._clients[client].used
        mine.limit = max(0, math.floor(part) - (used - mine.used(now)))  # what others' replicas used counts too
        wait = mine.seconds_until_fits(now, 1)
        mine.limit = None
        return Refusal("share", now + max(wait, 0.001))

    def demands(self, now: float) -> dict[str, tuple[float, int, int]]:
        """`{client: (weight, asked, used)}` of the clients active in the last minute, all replicas."""
        found: dict[str, tuple[float, int, int]] = {}
        for name, use in self._clients.items():
            if now - use.last_asked < ACTIVE_SECONDS:
                found[name] = (use.weight, use.asked.used(now), use.used.used(now))
        for name, published in self.others.items():
            weight, asked, used = found.get(name, (published.weight, 0, 0))
            found[name] = (weight, asked + published.asked, used + published.used)
        return found

    def local(self, now: float) -> dict[str, Published]:
        """This replica's figures for the others."""
        return {name: Published(use.weight, use.asked.used(now), use.used.used(now))
                for name, use in self._clients.items() if now - use.last_asked < ACTIVE_SECONDS}

    def _headroom(self) -> float:
        """The most any account of the provider has left of the window it is shortest of (1.0 =
        untouched): a day almost spent is as short as a minute's bucket almost empty."""
        best = 0.0
        for state in self.ledger.provider_snapshot(self.provider.name).values():
            if state.get("cooldown_seconds"):
                continue
            shares = [1 - state[window]["used"] / state[window]["limit"]
                      for window in snapshot_windows(state) if state[window]["limit"]]
            shares += [state[window]["provider_remaining"] / state[window]["limit"]
                       for window in snapshot_windows(state) if state[window]["limit"] and "provider_remaining" in state[window]]
            best = max(best, min(shares, default=1.0))
        return best


@define
class ShareTicket:
    """One request's claim on one provider's fair share: handed to patience, then settled."""

    share: ProviderShare
    client: str
    cost: int
    _booking: WindowBooking | None = None

    def refusal(self) -> Refusal | None:
        return self.share.refusal(self.client, self.cost)

    def took(self) -> None:
        """Count the request against its client's share now (before the ledger answers); settle
        it with `settle`, or undo it with `give_back` if the provider does not take it."""
        self._booking = self.share.took(self.client, self.cost)

    def settle(self, tokens: int) -> None:
        """The request's real tokens, once known (its reservation was an estimate)."""
        if self._booking is not None:
            self.share.settle(self.client, self._booking, tokens)

    def give_back(self) -> None:
        """The provider did not take the request after all (its ledger refused it)."""
        if self._booking is not None:
            self.share.give_back(self.client, self._booking)
            self._booking = None


class FairShare:
    """Every provider's share keeper, by quota key; carried over a reload."""

    def __init__(self, clock: Callable[[], float] = trio.current_time) -> None:
        self.providers: dict[str, ProviderShare] = {}
        self._clock = clock
        # Tells this proxy's figures apart from those of others in the same process (their
        # replica names are alike): it lives as long as this record, across reloads.
        self.tag = secrets.token_hex(4)

    def configure(self, providers: Mapping[str, ProviderConfig], ledger: Ledger) -> None:
        """Keep the record of providers that stay (with the new settings and ledger)."""
        kept = {}
        for quota_key, provider in providers.items():
            share = self.providers.get(quota_key)
            if share is None:
                share = ProviderShare(provider, ledger, self._clock)
            share.provider, share.ledger = provider, ledger
            kept[quota_key] = share
        self.providers = kept

    def ticket(self, quota_key: str, client: str, weight: float, tokens: int) -> ShareTicket | None:
        """Count the request as asking for the provider; None when the provider has no limits."""
        share = self.providers.get(quota_key)
        if share is None:
            return None
        cost = share.cost(tokens)
        if cost == 0:
            return None
        share.asked(client, weight, cost)
        return ShareTicket(share, client, cost)
