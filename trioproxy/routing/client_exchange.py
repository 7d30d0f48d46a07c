"""Clients' figures shared between the processes of one Redis ledger, every second.

Each process publishes what its clients asked of and used of each provider over the last
minute (for the fair share) and what each of their budget windows counted, adds the usage it
counted since the last round to one shared hash, and reads back every process's figures and the
shared usage: all in one script call (`quota/redis/client_exchange.lua`), so a round is one round trip and
one atomic step (no process reads another's figures half written, and usage is added whole or
not at all). A second of delay is the price of keeping every Redis call off the requests' path;
a process that stops publishing drops out when its figures expire.

The keys share one hash tag, `{clients}`, so a Redis Cluster keeps them on one node.
"""

import json
import logging
from collections.abc import Callable
from typing import Any

import msgspec
import trio

from ..quota.clients import USAGE_FIELDS, ClientBook
from ..quota.redis.client import Client
from ..quota.redis.scripts import script
from ..quota.redis.store import QuotaStore
from .fair_share import FairShare, Published
from .rounds import every

INTERVAL = 1.0
EXPIRES = 5  # seconds a replica's figures outlive its last publication
SCRIPT = script("client_exchange.lua")

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


class ClientExchange:
    """Publishes this process's client figures and reads the other replicas', until cancelled."""

    def __init__(self, store: QuotaStore, prefix: str, replica: str, book: ClientBook, fair: FairShare,
                 clock: Callable[[], float] = trio.current_time) -> None:
        self._store = store
        self._keys = [f"{prefix}{{clients}}:{name}" for name in ("figures", "expiry", "usage")]
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
        args: list[str | int] = [self._store.clock.script_arg(), self._replica, json.dumps(self._figures(self._clock())), EXPIRES]
        for (name, route, provider), row in pending.items():
            for field, amount in zip(USAGE_FIELDS, row):
                if amount:
                    args += [json.dumps([name, route, provider, field]), amount]

        async def talk(client: Client) -> list[Any]:
            return await client.register_script(SCRIPT)(keys=self._keys, args=args)  # type: ignore[no-any-return]

        answer = await self._store.commands(talk)
        if answer is None:
            self._book.usage.return_pending(pending)
            return
        figures, usage = (_pairs(flat) for flat in answer)
        self._take_others(decode_peers([published for replica, published in figures.items() if replica != self._replica]))
        self._book.usage.shared = _usage_rows(usage)

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


def _pairs(flat: list[Any]) -> dict[str, Any]:
    """A flat HGETALL reply (field, value, field, value, ...) as a dict."""
    return dict(zip(flat[::2], flat[1::2]))


def _usage_rows(usage: dict[str, Any]) -> dict[tuple[str, str, str], list[int]]:
    rows: dict[tuple[str, str, str], list[int]] = {}
    for key, value in usage.items():
        try:
            parts, count = json.loads(key), int(value)
        except ValueError:
            continue  # not a field this proxy writes
        if not isinstance(parts, list) or len(parts) != 4 or parts[3] not in USAGE_FIELDS:
            continue
        row = rows.setdefault((str(parts[0]), str(parts[1]), str(parts[2])), [0] * len(USAGE_FIELDS))
        row[USAGE_FIELDS.index(parts[3])] = count
    return rows
