"""Clients' figures shared between the processes of one Redis ledger, every second: the policy.

Each process publishes what its clients asked of and used of each provider over the last
minute (for the fair share) and what each of their budget windows counted, adds the usage it
counted since the last round to the shared counters, and takes back every other process's
figures (into the fair share and the budgets) and the shared usage (into the clients' usage
view). A round is one atomic step in the shared store (`SharedClientFigures`; in Redis,
`quota/redis/client_figures.py`). A second of delay is the price of keeping every Redis call
off the requests' path.
"""

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import msgspec
import trio

from ..quota.clients import ClientBook, Row
from .fair_share import FairShare, Published
from .rounds import every

INTERVAL = 1.0

log = logging.getLogger("trioproxy.client_exchange")


class PeerFigures(msgspec.Struct):
    """What one replica publishes: `fair` is `{quota_key: {client: (weight, asked, used)}}`,
    `budgets` is `[(client, scope, window, used)]`."""

    fair: dict[str, dict[str, tuple[float, int, int]]] = msgspec.field(default_factory=dict)
    budgets: list[tuple[str, str, str, int]] = msgspec.field(default_factory=list)


_peer_decoder = msgspec.json.Decoder(PeerFigures)


def decode_peers(published: list[str]) -> list[PeerFigures]:
    """The other replicas' figures; one that is not in the shape this replica writes (another
    version, a corrupted key) is left out with a warning, never an exception that would stop
    the exchange and the proxy with it."""
    peers = []
    for raw in published:
        try:
            peers.append(_peer_decoder.decode(raw))
        except msgspec.DecodeError as error:  # ValidationError is one
            log.warning("a replica's client figures were left out: %s", error)
    return peers


class SharedClientFigures(Protocol):
    """Where the replicas publish their clients' figures and add up their usage
    (`quota.redis.client_figures.RedisClientFigures`)."""

    async def exchange(
        self, replica: str, published: str, usage: Mapping[Row, Sequence[int]]
    ) -> tuple[dict[str, str], dict[Row, list[int]]] | None:
        """Publish `replica`'s figures, add `usage`, and return every publishing replica's
        figures by replica and the shared usage (new dicts); None when the store is down
        (nothing was added). Never raises for the store's failures."""
        ...


class ClientExchange:
    """Publishes this process's client figures through `shared` and takes the other replicas',
    until cancelled."""

    def __init__(self, shared: SharedClientFigures, replica: str, book: ClientBook, fair: FairShare,
                 clock: Callable[[], float] = trio.current_time) -> None:
        self._shared = shared
        self._replica = f"{replica}/{fair.tag}"
        self._book = book
        self._fair = fair
        self._clock = clock
        if book.usage.shared is None:
            book.usage.shared = {}

    async def run(self) -> None:
        """Exchange every INTERVAL seconds until cancelled (the runtime's background scope owns
        it); a round while Redis is down is skipped, and the store reports the outage."""
        await every(INTERVAL, self.exchange)

    async def exchange(self) -> None:
        """One round: publish, add usage, read everyone's, in one call. Skipped while Redis is
        down (usage counted meanwhile waits for the next round)."""
        pending = self._book.usage.take_pending()
        answer = await self._shared.exchange(self._replica, json.dumps(self._figures(self._clock())), pending)
        if answer is None:
            self._book.usage.return_pending(pending)
            return
        figures, usage = answer
        self._take_others(decode_peers([published for replica, published in figures.items() if replica != self._replica]))
        self._book.usage.shared = usage

    def _figures(self, now: float) -> dict[str, Any]:
        fair = {quota_key: {name: [p.weight, p.asked, p.used] for name, p in share.local(now).items()}
                for quota_key, share in self._fair.providers.items()}
        budgets = [[*key, used] for key, used in self._book.budgets.local().items() if used]
        return {"fair": fair, "budgets": budgets}

    def _take_others(self, others: list[PeerFigures]) -> None:
        fair: dict[str, dict[str, Published]] = {}
        budgets: dict[tuple[str, str, str], int] = {}
        for published in others:
            for quota_key, clients in published.fair.items():
                for name, (weight, asked, used) in clients.items():
                    before = fair.setdefault(quota_key, {}).get(name, Published(weight, 0, 0))
                    fair[quota_key][name] = Published(weight, before.asked + asked, before.used + used)
            for name, scope, window, used in published.budgets:
                budgets[(name, scope, window)] = budgets.get((name, scope, window), 0) + used
        for quota_key, share in self._fair.providers.items():
            share.others = fair.get(quota_key, {})
        self._book.budgets.others = budgets

