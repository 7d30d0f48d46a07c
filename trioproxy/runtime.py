"""What a configuration turns into at run time, swapped whole when SIGHUP reloads the settings.

Requests already in flight keep the Runtime they started with; new ones get the new one.
"""

import logging

import trio
from attrs import define

from .server.auth import ClientKeys
from .config import Config, ProviderConfig
from .quota.cooldown import CooldownTimers
from .providers.health import HealthProber, ProviderHealth
from .quota.ledger import QuotaLedger
from .routing.models import ModelNames
from .routing.router import Router
from .providers.upstream import ProviderClient, Upstream

log = logging.getLogger("trioproxy")


@define
class Runtime:
    config: Config
    models: ModelNames
    router: Router
    ledger: QuotaLedger
    client_keys: ClientKeys
    prober_scope: trio.CancelScope


class ClientPool:
    """One pooled client per provider address, reused across reloads, closed at the end."""

    def __init__(self) -> None:
        self._clients: dict[tuple[str, float], ProviderClient] = {}

    def client(self, provider: ProviderConfig, timeout: float) -> ProviderClient:
        key = (provider.base_url, timeout)
        if key not in self._clients:
            self._clients[key] = ProviderClient.for_provider(provider, timeout)
        return self._clients[key]

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            for client in self._clients.values():
                await client.aclose()


def serving_providers(config: Config) -> list[ProviderConfig]:
    """The providers that take part: those with at least one API key, in order of preference."""
    return [p for p in config.providers if p.keys]


async def build_runtime(
    config: Config, pool: ClientPool, nursery: trio.Nursery, previous: Runtime | None = None
) -> Runtime:
    """Router, ledger, prober and keys for `config`; quota state and health carry over from `previous`."""
    providers = serving_providers(config)
    ledger = QuotaLedger(providers)
    timeout = config.request_timeout_ms / 1000
    upstreams = [Upstream(p, pool.client(p, timeout)) for p in providers]
    health = {p.name: ProviderHealth() for p in providers}
    if previous is not None:
        ledger.import_state(previous.ledger.export_state(0.0), 0.0)
        for name, state in previous.router.health.items():
            if name in health:
                health[name] = state
    router = Router(
        upstreams,
        ledger,
        CooldownTimers(nursery, ledger),
        config.cooldown_period_ms / 1000,
        config.capacity_backoff_ms / 1000,
        config.honour_retry_after,
        health,
        config.max_wait_ms / 1000,
    )
    if previous is not None:
        router.estimator.ratio = previous.router.estimator.ratio
        router.patience.carry_over(previous.router.patience)
    prober = HealthProber(upstreams, health, config.health_check_interval_ms / 1000, config.health_check_failures)
    prober_scope = trio.CancelScope()

    async def probe() -> None:
        with prober_scope:
            await prober.run()

    nursery.start_soon(probe)
    models = ModelNames(config.proxy_model_name, config.model_aliases)
    return Runtime(config, models, router, ledger, ClientKeys(config.client_api_keys), prober_scope)
