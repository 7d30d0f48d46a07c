"""The shared quota ledger: the contract of `contract.Ledger` kept in Redis, for several workers
and replicas spending the same keys.

Admission is one operation of the ledger script (`ledger.lua`): it checks and books a request
on all of an account's windows at once and picks the account with most headroom. A booking is
a lease that expires by itself if its process dies. Far from the limits, a process holds a
share (`shares.py`): a block booked at once, from which requests are admitted without a round
trip, asked for again in the background when half spent. Settling, header figures, probe
results and returned shares are queued and sent after the client has its answer. The shared figures (refreshed every
second, and by refusals and cooldowns) serve the synchronous views (status, logs,
Retry-After) without asking Redis again.

While Redis is unreachable, a local ledger stands in: with the "local" policy at
limit / replicas; with "refuse", providers that have limits count as out of quota.
"""

import functools
import hashlib
import itertools
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import trio
from attrs import define

from ...config.schema import ProviderConfig
from ...config.derived import configured_limits, extra_windows, starting_limits
from ..contract import WINDOW_NAMES, Refusal, Reservation, settled_uncached, summary_line, uncached_costs, window_kind
from ..account import account_name
from ..ledger import QuotaLedger
from ..limits import limit_states
from .ledger_script import Lane, Reply
from .store import QuotaStore
from .share_keeper import ShareKeeper

OUTAGE_RETRY_SECONDS = 1.0  # what a "refuse" refusal tells the router about trying again
RESTATE_SECONDS = 60.0  # unchanged stated limits are sent to Redis again after this long


@define
class SharedReservation(Reservation):
    index: int = 1  # the account's place among its provider's keys, as the script counts (from 1)
    lease: str = ""
    cum: int = 0  # the account's tokens booked up to this one, to tell what a provider figure includes
    floor: int = 0
    day: int = 0  # the account's day number when booked: tokens per day are refunded within that day only


def _limits(provider: ProviderConfig) -> list[int | str]:
    """The script's limit arguments: the number of windows, then per window its name, starting
    limit and configured ceiling (-1 = none)."""
    starting, ceilings = starting_limits(provider), configured_limits(provider)
    figures: list[int | str] = [len(starting)]
    for window, (start, _) in starting.items():
        figures += [window, -1 if start is None else start, -1 if ceilings[window] is None else ceilings[window]]
    return figures


def _has_limits(provider: ProviderConfig) -> bool:
    return any(start is not None for start, _ in starting_limits(provider).values())


def _per_replica(provider: ProviderConfig, replicas: int) -> ProviderConfig:
    """The provider with each starting limit divided among the replicas, for serving without Redis."""
    starting = starting_limits(provider)

    def share(window: str) -> int | None:
        limit = starting[window][0]
        return None if limit is None else max(1, limit // replicas)

    return attrs.evolve(
        provider,
        requests_per_minute=share("rpm"),
        tokens_per_minute=share("tpm"),
        requests_per_day=share("rpd"),
        tokens_per_day=share("tpd"),
        uncached_tokens_per_minute=share("utpm"),
        windows=tuple(attrs.evolve(w, limit=max(1, w.limit // replicas)) for w in provider.windows or ()) or None,
    )


def account_key(prefix: str, provider: str, api_key: str) -> str:
    """The Redis hash of one account: by a digest of its API key, so replicas that list keys in
    another order still share; `{provider}` keeps a provider's keys in one cluster slot.
    Room is left for a model component after it (per-model quotas)."""
    digest = hashlib.sha256(api_key.encode()).hexdigest()[:16]
    return f"{prefix}{{{provider}}}:account:{digest}"


class RedisLedger:
    """The quota ledger shared through Redis by every replica and worker (the `Ledger` contract
    of `quota/contract.py`, whose docstrings say what each method answers and raises). It books
    from a share the store took ahead for this process while far from a limit, and through one
    script call per request near one; the store (`store.py`) owns the connection and outages, the
    lanes and the clock, and tells this ledger (its listener, from construction on) what it must hear."""

    def __init__(
        self,
        providers: Iterable[ProviderConfig],
        store: QuotaStore,
        *,
        prefix: str,
        outage_policy: str,
        replicas: int,
        lease_seconds: float,
        replica: str,
        shares: bool = True,
    ) -> None:
        self.store = store
        self._prefix = prefix
        self._providers = {p.name: p for p in providers}
        self._policy = outage_policy
        self._replicas = replicas
        self._lease_seconds = lease_seconds
        self._replica = replica
        self._fallback = QuotaLedger(
            _per_replica(p, replicas) if outage_policy == "local" else p for p in self._providers.values()
        )
        self._names: dict[str, list[str]] = {}
        self._lanes: dict[str, Lane] = {}
        self._where: dict[str, tuple[str, int]] = {}  # account -> (provider, index from 1)
        for name, provider in self._providers.items():
            keys = provider.keys or ("",)
            self._names[name] = [account_name(name, i, len(keys)) for i in range(len(keys))]
            keys_of = (
                f"{prefix}{{{name}}}:leases",
                f"{prefix}{{{name}}}:lease-data",
                f"{prefix}{{{name}}}:lease-holders",
                *(account_key(prefix, name, key) for key in keys),
            )
            self._lanes[name] = (keys_of, tuple(_limits(provider)))
            self._where.update((account, (name, i + 1)) for i, account in enumerate(self._names[name]))
        self._views: dict[str, dict[str, Any]] = {}  # account -> the script's last view of it
        self._stated: dict[str, tuple[dict[str, int], float]] = {}  # account -> limits last sent, when
        self._leases: dict[str, dict[str, int]] = {}  # provider -> replica -> leases held
        self._lease_numbers = itertools.count(1)
        # Lease ids name this ledger too: the ledger a reload builds, or several in one process,
        # count from 1 again while leases of the one before may still be out under that name.
        self._lease_prefix = f"{replica}/{secrets.token_hex(4)}"
        self._shares = ShareKeeper(
            store, self._lanes, self._new_lease, lease_seconds=lease_seconds, replica=replica, enabled=shares
        )
        store.listen(self)

    def with_providers(self, providers: Iterable[ProviderConfig]) -> "RedisLedger":
        """The same shared ledger for other provider settings (a reload)."""
        successor = RedisLedger(
            providers, self.store, prefix=self._prefix, outage_policy=self._policy, replicas=self._replicas,
            lease_seconds=self._lease_seconds, replica=self._replica, shares=self._shares.enabled,
        )
        self.retire()
        return successor

    def now(self) -> float:
        return trio.current_time()

    def accounts(self) -> list[str]:
        return list(self._where)

    def _absorb(self, provider: str, reply: Reply) -> None:
        if reply.shared is None:
            return
        for account, view in zip(self._names[provider], reply.shared["views"]):
            self._views[account] = view
        if "leases" in reply.shared:
            self._leases[provider] = reply.shared["leases"]

    async def reserve(
        self, provider: str, tokens: int, *, floor: int = 0, uncached: Sequence[int] | None = None
    ) -> Reservation | Refusal:
        floor = min(floor, tokens)
        costs = uncached_costs(uncached, floor, len(self._names[provider]))
        # Shares book no uncached tokens and pick no account by cache: not where either counts.
        handed = None
        if self._providers[provider].uncached_tokens_per_minute is None and len(set(costs)) == 1:
            handed = self._shares.hand_out(provider, tokens, floor, self.now())
        if handed is not None:
            return SharedReservation(
                self._names[provider][handed.index - 1], provider, handed.index - 1, tokens, handed.seq,
                index=handed.index, lease=handed.lease, cum=handed.cum, floor=floor, day=handed.day,
            )
        lease = self._new_lease()
        args = (tokens, floor, lease, self._lease_seconds, self._replica, self.store.deadline(), *costs)
        abandoned = functools.partial(self._give_back_unused, provider, tokens, lease)
        reply = await self.store.call(self._lanes[provider], "reserve", 0, args, abandoned)
        if reply is None or reply.result[:2] == [0, "late"]:  # late: booked nothing, as if Redis were down
            return await self._reserve_locally(provider, tokens, floor, costs)
        self._absorb(provider, reply)
        if reply.result[0] == 0:
            return Refusal(reply.result[1], self.store.clock.to_trio(float(reply.result[2])))
        _, index, seq, cum, day, probe, booked_uncached = reply.result
        account = self._names[provider][index - 1]
        return SharedReservation(
            account, provider, index - 1, tokens, seq, bool(probe), booked_uncached, index=index, lease=lease,
            cum=cum, floor=floor, day=day,
        )

    def _new_lease(self) -> str:
        return f"{self._lease_prefix}/{next(self._lease_numbers)}"

    def _give_back_unused(self, provider: str, tokens: int, lease: str, reply: Reply) -> None:
        """A reservation granted after its caller stopped waiting (it went local, or its client
        left): nothing was sent on it, so all of it comes back, and its probe turn too."""
        if reply.result[0] == 0:
            return
        _, index, _, _, day, probe, booked_uncached = reply.result
        lane = self._lanes[provider]
        self.store.submit(lane, "settle", index, (lease, 0, tokens, 0, day, 1, 0, booked_uncached))
        if probe:
            self.store.submit(lane, "probe", index, (lease, 0))

    async def _reserve_locally(self, provider: str, tokens: int, floor: int, costs: list[int]) -> Reservation | Refusal:
        if self._policy == "refuse" and _has_limits(self._providers[provider]):
            return Refusal("redis", self.now() + OUTAGE_RETRY_SECONDS)
        return await self._fallback.reserve(provider, tokens, floor=floor, uncached=costs)

    async def refusal(self, provider: str, tokens: int, requests: int = 1, uncached: int = 0) -> Refusal | None:
        if uncached == 0 and self._shares.fits(provider, tokens, requests, self.now()):
            return None
        reply = await self.store.call(self._lanes[provider], "refusal", 0, (tokens, requests, uncached))
        if reply is None:
            if self._policy == "refuse" and _has_limits(self._providers[provider]):
                return Refusal("redis", self.now() + OUTAGE_RETRY_SECONDS)
            return await self._fallback.refusal(provider, tokens, requests, uncached)
        if reply.result[0] == 0:
            return None
        return Refusal(reply.result[1], self.store.clock.to_trio(float(reply.result[2])))

    async def settle(self, reservation: Reservation, actual_tokens: int, uncached_tokens: int | None = None) -> None:
        if not isinstance(reservation, SharedReservation):
            await self._fallback.settle(reservation, actual_tokens, uncached_tokens)
            return
        r = reservation
        actual_tokens = max(0, actual_tokens)
        uncached = settled_uncached(r, actual_tokens, uncached_tokens)
        args = (r.lease, actual_tokens, r.tokens, r.floor, r.day, 0, uncached, r.uncached)
        self.store.submit(self._lanes[r.provider], "settle", r.index, args)
        # A second settle corrects this one: the lease is gone by then, and its floor is this figure.
        r.tokens = r.floor = actual_tokens
        r.uncached = uncached

    async def sync(self, reservation: Reservation, figures: Mapping[str, tuple[float, float]]) -> None:
        if not isinstance(reservation, SharedReservation):
            await self._fallback.sync(reservation, figures)
            return
        r = reservation
        flat = [item for name, (remaining, reset) in figures.items() for item in (name, remaining, reset)]
        self.store.submit(self._lanes[r.provider], "sync", r.index, (r.seq, r.cum, *flat))

    async def adopt_limits(self, reservation: Reservation, stated: Mapping[str, int]) -> None:
        if not isinstance(reservation, SharedReservation):
            await self._fallback.adopt_limits(reservation, stated)
            return
        # Every answer states them: tell Redis when they change, and once a minute to keep
        # their age honest, not on every request.
        now, last = self.now(), self._stated.get(reservation.account)
        if last is not None and last[0] == stated and now - last[1] < RESTATE_SECONDS:
            return
        self._stated[reservation.account] = (dict(stated), now)
        flat = [item for window, figure in stated.items() for item in (window, figure)]
        self.store.submit(self._lanes[reservation.provider], "learn", reservation.index, flat)

    async def start_cooldown(self, account: str, until: float, reason: str) -> bool:
        started_here = await self._fallback.start_cooldown(account, until, reason)
        provider, index = self._where[account]
        self._shares.return_on(provider, index)  # its requests would meet the cooldown
        reply = await self.store.call(self._lanes[provider], "cooldown", index, (until - self.now(), reason))
        if reply is None:
            return started_here
        self._absorb(provider, reply)
        return bool(reply.result[0])

    async def end_cooldown(self, account: str, until: float) -> bool:
        ended_here = await self._fallback.end_cooldown(account, until)
        provider, index = self._where[account]
        reply = await self.store.call(self._lanes[provider], "end_cooldown", index, ())
        if reply is None:
            return ended_here
        self._absorb(provider, reply)
        return bool(reply.result[0])

    def finish_probe(self, reservation: Reservation, succeeded: bool) -> None:
        if not isinstance(reservation, SharedReservation):
            self._fallback.finish_probe(reservation, succeeded)
        elif reservation.probe:
            r = reservation
            self.store.submit(self._lanes[r.provider], "probe", r.index, (r.lease, int(succeeded)))

    async def refresh(self) -> None:
        """Read every provider's shared figures and who holds leases (for operators); return
        shares that outlived their second unused."""
        self._shares.refresh(self.now())
        for provider in self._providers:
            reply = await self.store.call(self._lanes[provider], "view", 0, ())
            if reply is None:
                return
            self._absorb(provider, reply)

    def _shared(self, accounts: Iterable[str]) -> bool:
        """Whether the shared figures are the ones in force (else the local stand-in's are)."""
        return self.store.connected and all(account in self._views for account in accounts)

    def available_at(self, provider: str) -> float:
        if not self._shared(self._names[provider]):
            return self._fallback.available_at(provider)
        return min(self.store.clock.to_trio(self._views[account]["av"]) for account in self._names[provider])

    def in_cooldown(self, provider: str) -> bool:
        if not self._shared(self._names[provider]):
            return self._fallback.in_cooldown(provider)
        now = self.now()
        return all(self.store.clock.to_trio(self._views[a]["cd"]) > now for a in self._names[provider])

    def snapshot(self, account: str) -> dict[str, Any]:
        if not self._shared([account]):
            return self._fallback.snapshot(account)
        view, provider = self._views[account], self._providers[self._where[account][0]]
        state: dict[str, Any] = {}
        sources = limit_states(provider)
        other = list(extra_windows(provider))
        for name in (*WINDOW_NAMES, *other):
            limit = view["lim"][name]
            state[name] = {"used": view["u"][name], "limit": None if limit < 0 else limit}
            if name in view["st"]:
                sources[name].stated, at = view["st"][name]
                sources[name].stated_at = self.store.clock.to_trio(float(at))
            if name in view["pr"]:
                state[name]["provider_remaining"] = int(view["pr"][name])
            kind = window_kind(name)
            held = 0 if kind == "uncached_tokens" else view["sh"][kind == "tokens"]  # shares book no uncached tokens
            if held:
                state[name]["in_shares"] = held  # booked in shares, not handed out yet
        left = self.store.clock.to_trio(view["cd"]) - self.now() if view["cd"] else 0.0
        state["cooldown_seconds"] = round(left, 1) if left > 0 else 0
        state["cooldown_reason"] = view["why"] if left > 0 else ""
        state["half_open"] = bool(view["ho"])
        now = self.now()
        state["limit_sources"] = {name: limit.view(now) for name, limit in sources.items() if limit.limit is not None}
        state["other_windows"] = other
        return state

    def provider_snapshot(self, provider: str) -> dict[str, dict[str, Any]]:
        return {account: self.snapshot(account) for account in self._names[provider]}

    def summary(self, provider: str) -> str:
        return " ".join(filter(None, (self.account_summary(a) for a in self._names[provider])))

    def account_summary(self, account: str) -> str:
        return summary_line(account, self.snapshot(account))

    def store_status(self) -> dict[str, Any]:
        return {
            "backend": "redis",
            **self.store.status(),
            "outage_policy": self._policy,
            "replicas": self._replicas,
            "replica": self._replica,
            "leases": self._leases,
            "shares": self._shares.status(self.now()),
        }

    def retire(self) -> None:
        """Return every share and ask for none again: this ledger stops serving (a reload)."""
        self._shares.retire()

    def revised(self) -> None:
        """An account's revision moved (another process changed its limits): return the shares
        taken under the old ones."""
        self._shares.return_revoked()
