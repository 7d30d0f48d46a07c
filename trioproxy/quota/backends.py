"""Which ledger a configuration gets: the in-process one, or the one shared through Redis."""

import os
import socket

import trio

from ..config import Config, ProviderConfig
from .contract import Ledger
from .ledger import QuotaLedger
from .redis_ledger import RedisLedger
from .redis_store import QuotaStore


def replica_name() -> str:
    """How this process is named among those sharing the quota (host and pid: no secret)."""
    return f"{socket.gethostname()}/{os.getpid()}"


async def open_ledger(
    config: Config, providers: list[ProviderConfig], nursery: trio.Nursery, previous: Ledger | None
) -> Ledger:
    """The ledger for `config`. The memory ledger carries over `previous`'s state; a Redis
    ledger reuses `previous`'s connection when it points at the same Redis."""
    if config.quota_backend == "memory":
        ledger = QuotaLedger(providers)
        if isinstance(previous, QuotaLedger):
            ledger.import_state(previous.export_state(0.0), 0.0)
        return ledger
    if isinstance(previous, RedisLedger) and previous.store.url == config.redis_url:
        store = previous.store
    else:
        if isinstance(previous, RedisLedger):
            previous.store.close()
        store = QuotaStore(config.redis_url, config.redis_timeout_ms / 1000, allow_start_without=config.redis_outage == "local")
        await nursery.start(store.run)
    return RedisLedger(
        providers,
        store,
        prefix=config.redis_key_prefix,
        outage_policy=config.redis_outage,
        replicas=config.replicas,
        lease_seconds=config.redis_lease_ttl_ms / 1000,
        replica=replica_name(),
    )
