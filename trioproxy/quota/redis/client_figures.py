"""The clients' figures the replicas of one Redis ledger share, as Redis keeps them: each
replica's published figures (a hash, with a sorted set of when each expires) and the usage
counters they add to (a hash), in one script call a round (`client_exchange.lua`), so a round
is one round trip and one atomic step (no replica reads another's figures half written, and
usage is added whole or not at all). A replica that stops publishing drops out when its
figures expire. What the figures say is the publisher's business; here they are text.

The keys share one hash tag, `{clients}`, so a Redis Cluster keeps them on one node.
"""

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..clients import USAGE_FIELDS, Row
from .client import Client
from .scripts import script
from .store import QuotaStore

EXPIRES = 5  # seconds a replica's figures outlive its last publication
SCRIPT = script("client_exchange.lua")


class RedisClientFigures:
    """The clients' figures of every replica and the shared usage counters, in the Redis of
    `store` under `prefix`."""

    def __init__(self, store: QuotaStore, prefix: str) -> None:
        self._store = store
        self._keys = [f"{prefix}{{clients}}:{name}" for name in ("figures", "expiry", "usage")]

    async def exchange(
        self, replica: str, published: str, usage: Mapping[Row, Sequence[int]]
    ) -> tuple[dict[str, str], dict[Row, list[int]]] | None:
        """Publish `replica`'s figures (they outlive this call by EXPIRES seconds), add `usage`
        (counts by row, in the order of USAGE_FIELDS) to the shared counters, and read back the
        figures of every replica still publishing (this one's too) and the shared counters, as
        new dicts the caller owns. None when Redis is down or does not answer in time (then
        nothing was added; the store reports the outage). Counter fields this proxy does not
        write are left out."""
        args: list[str | int] = [self._store.clock.script_arg(), replica, published, EXPIRES]
        for (name, route, provider), row in usage.items():
            for field, amount in zip(USAGE_FIELDS, row):
                if amount:
                    args += [json.dumps([name, route, provider, field]), amount]

        async def talk(client: Client) -> list[Any]:
            return await client.register_script(SCRIPT)(keys=self._keys, args=args)  # type: ignore[no-any-return]

        answer = await self._store.commands(talk)
        if answer is None:
            return None
        figures, counters = (_pairs(flat) for flat in answer)
        return figures, _usage_rows(counters)


def _pairs(flat: list[Any]) -> dict[str, Any]:
    """A flat HGETALL reply (field, value, field, value, ...) as a dict."""
    return dict(zip(flat[::2], flat[1::2]))


def _usage_rows(usage: dict[str, Any]) -> dict[Row, list[int]]:
    rows: dict[Row, list[int]] = {}
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
