"""What a configuration turns into at run time, swapped whole when SIGHUP reloads the settings.

Requests already in flight keep the Runtime they started with; new ones get the new one.
"""

import logging

import attrs
import trio
from attrs import define

from .server.auth import ClientKeys
from .config import Config, ModelRoute, ProviderConfig, quota_name
from .quota.cooldown import CooldownTimers
from .providers.health import HealthProber, ProviderHealth
from .quota.ledger import QuotaLedger
from .routing.models import ModelNames, ServedModel
from .routing.router import Router
from .providers.upstream import ProviderClient, Upstream

log = logging.getLogger("trioproxy")


@define
class Runtime:
    config: Config
    models: ModelNames
    routers: dict[str, Router]  # one per route, by the route's name
    ledger: QuotaLedger
    client_keys: ClientKeys
    prober_scope: trio.CancelScope

    @property
    def router(self) -> Router:
        """The first route's router: the whole proxy's when it serves one model."""
        return self.routers[self.models.served]


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


def _route_upstreams(config: Config, route: ModelRoute, pool: ClientPool) -> list[Upstream]:
    timeout = config.request_timeout_ms / 1000
    tables = {p.name: p for p in config.providers}
    return [Upstream(p, pool.client(p, timeout), quota_name(tables[p.name], p.model)) for p in config.route_providers(route)]


async def build_runtime(
    config: Config, pool: ClientPool, nursery: trio.Nursery, previous: Runtime | None = None
) -> Runtime:
    """Routers, ledger, prober and keys for `config`; quota state and health carry over from `previous`.

    Routes share the providers' connection pools, one health record per provider, and one
    ledger whose quotas are per provider account and model.
    """
    providers = serving_providers(config)
    routes = {route.name: _route_upstreams(config, route, pool) for route in config.routes}
    quotas = {u.quota_key: attrs.evolve(u.config, name=u.quota_key) for upstreams in routes.values() for u in upstreams}
    ledger = QuotaLedger(quotas.values())
    health = {p.name: ProviderHealth() for p in providers}
    if previous is not None:
        ledger.import_state(previous.ledger.export_state(0.0), 0.0)
        for name, state in previous.router.health.items():
            if name in health:
                health[name] = state
    cooldowns = CooldownTimers(nursery, ledger)
    routers = {
        name: Router(upstreams, ledger, cooldowns, config.cooldown_period_ms / 1000, config.capacity_backoff_ms / 1000,
                     config.honour_retry_after, health, name)
        for name, upstreams in routes.items()
    }
    if previous is not None:
        for name, router in routers.items():
            router.estimator.ratio = previous.routers.get(name, previous.router).estimator.ratio
    wanted: dict[str, list[str]] = {}
    for upstreams in routes.values():
        for upstream in upstreams:
            wanted.setdefault(upstream.name, []).append(upstream.config.model)
    probes = [Upstream(p, pool.client(p, config.request_timeout_ms / 1000)) for p in providers]
    prober = HealthProber(probes, wanted, health, config.health_check_interval_ms / 1000, config.health_check_failures)
    prober_scope = trio.CancelScope()

    async def probe() -> None:
        with prober_scope:
            await prober.run()

    nursery.start_soon(probe)
    models = ModelNames(tuple(ServedModel(route.name, route.aliases) for route in config.routes))
    return Runtime(config, models, routers, ledger, ClientKeys(config.client_api_keys), prober_scope)
