"""Which ledger a configuration gets: the in-process one, or the one shared through Redis."""

import logging
import os
import socket

import trio

from ..config.schema import Config, ProviderConfig
from .contract import Ledger
from .ledger import QuotaLedger
from .redis.ledger import RedisLedger
from .redis.client import RedisAccess
from .redis.store import QuotaStore

log = logging.getLogger("trioproxy.quota")


def replica_name() -> str:
    """How this process is named among those sharing the quota (host and pid: no secret)."""
    return f"{socket.gethostname()}/{os.getpid()}"


async def open_ledger(
    config: Config, providers: list[ProviderConfig], nursery: trio.Nursery, previous: Ledger | None
) -> Ledger:
    """The ledger for `config`. On a reload (`previous`), the memory ledger is reconfigured in
    place (reservations in flight settle into the ledger that serves), a Redis ledger keeps its connection while it points at the same Redis, and a change
    of `quota_backend` waits for a restart (the state file and Redis are not converted)."""
    if isinstance(previous, QuotaLedger) and config.quota_backend == "redis":
        log.warning('reload: quota_backend = "redis" takes effect after a restart; quota stays in memory')
    if isinstance(previous, RedisLedger) and config.quota_backend == "memory":
        log.warning('reload: quota_backend = "memory" takes effect after a restart; quota stays in Redis')
        return previous.with_providers(providers)
    if isinstance(previous, QuotaLedger):
        # The same ledger, so requests still in flight on the old settings settle into it.
        previous.reconfigure(providers)
        return previous
    if config.quota_backend == "memory":
        return QuotaLedger(providers)
    access = RedisAccess(config.redis_tls_ca, config.redis_tls_cert, config.redis_tls_key, config.redis_sentinel_password)
    timeout = config.redis_timeout_ms / 1000
    if isinstance(previous, RedisLedger) and previous.store.reaches(config.redis_url, access, timeout):
        store = previous.store
    else:
        # The new store starts first: one that cannot (QuotaStoreError) leaves the old one serving.
        store = QuotaStore(config.redis_url, timeout, allow_start_without=config.redis_outage == "local", access=access)
        await nursery.start(store.run)
        if isinstance(previous, RedisLedger):
            previous.store.close()
    if isinstance(previous, RedisLedger):
        previous.retire()  # its shares go back; requests still in flight settle through its store
    ledger = RedisLedger(
        providers,
        store,
        prefix=config.redis_key_prefix,
        outage_policy=config.redis_outage,
        replicas=config.replicas,
        lease_seconds=config.redis_lease_ttl_ms / 1000,
        shares=config.redis_shares,
        replica=replica_name(),
    )
    await ledger.refresh()  # the shared figures from the start, not the local stand-in's until the first refresh
    return ledger
