"""What a configuration turns into at run time, swapped whole when SIGHUP reloads the settings.

Requests already in flight keep the Runtime they started with; new ones get the new one.
"""

from collections.abc import Callable

import attrs
import trio
from attrs import define

from .config.schema import Config, ProviderConfig
from .config.derived import quota_name
from .config.redaction import secrets
from .quota.cooldown import CooldownTimers
from .providers.health import HealthProber, ProviderHealth
from .quota.backends import open_ledger, replica_name
from .quota.clients import ClientBook
from .quota.redis.client_figures import RedisClientFigures
from .quota.redis.ledger import RedisLedger
from .quota.redis.prompt_stream import RedisPromptStream
from .quota.contract import Ledger
from .routing.client_exchange import ClientExchange
from .routing.prompt_exchange import PromptExchange
from .routing.fair_share import FairShare
from .routing.limits import route_limits
from .routing.models import ModelNames, ServedModel
from .routing.router import Router
from .secrets import Sanitizer
from .providers.upstream import AnswerBounds, Deadlines, ProviderClient, Upstream


@define
class Runtime:
    config: Config
    models: ModelNames
    routers: dict[str, Router]  # one per route, by the route's name
    ledger: Ledger
    background_scope: trio.CancelScope  # ends the prober and the Redis exchanges when a reload replaces it
    sanitizer: Sanitizer  # the one scrubber: what a client or provider wrote, before logs and views
    clients: ClientBook  # budgets and usage by client; carried over a reload, like the ledger
    fair_share: FairShare  # the clients' use of each provider with limits; carried over too

    @property
    def router(self) -> Router:
        """The first route's router: the whole proxy's when it serves one model."""
        return self.routers[self.models.served]


class ClientPool:
    """One pooled client per provider address, reused across reloads, closed at the end."""

    def __init__(self) -> None:
        self._clients: dict[tuple[str, float], ProviderClient] = {}

    def client(self, provider: ProviderConfig, timeout: float) -> ProviderClient:
        """The pooled client for the provider's address; the pool owns it (closed by `aclose`)."""
        key = (provider.base_url, timeout)
        if key not in self._clients:
            self._clients[key] = ProviderClient.for_provider(provider, timeout)
        return self._clients[key]

    async def aclose(self) -> None:
        """Close every client, shielded: it runs while the process stops, also when cancelled."""
        with trio.CancelScope(shield=True):
            for client in self._clients.values():
                await client.aclose()


def serving_providers(config: Config) -> list[ProviderConfig]:
    """The providers that take part: those with at least one API key, in order of preference."""
    return [p for p in config.providers if p.keys]


def upstream_maker(config: Config, pool: ClientPool) -> Callable[[ProviderConfig, str | None], Upstream]:
    """Builds Upstreams on `pool`'s connections with the settings' deadlines and secret scrubbing."""
    timeout = config.request_timeout_ms / 1000
    sanitizer = Sanitizer(secrets(config))
    deadlines = Deadlines(
        config.first_event_timeout_ms / 1000, config.answer_timeout_ms / 1000, config.stream_idle_timeout_ms / 1000
    )

    bounds = AnswerBounds(config.max_answer_bytes, config.max_stream_event_bytes)

    def upstream(provider: ProviderConfig, quota_key: str | None = None) -> Upstream:
        return Upstream(provider, pool.client(provider, timeout), sanitizer, deadlines, quota_key, bounds)

    return upstream


async def build_runtime(
    config: Config, pool: ClientPool, nursery: trio.Nursery, previous: Runtime | None = None
) -> Runtime:
    """Routers, ledger and prober for `config`; the ledger and health carry over from `previous`.

    The prober (and the Redis exchanges) run in `nursery` until `Runtime.background_scope` is
    cancelled, which the caller does when it replaces this runtime; a Redis store started here
    belongs to `nursery` too. Raises QuotaStoreError when a new Redis store cannot start (the
    previous runtime then keeps serving).

    Routes share the providers' connection pools, one health record per provider, and one
    ledger whose quotas are per provider account and model.
    """
    providers = serving_providers(config)
    tables = {p.name: p for p in providers}
    upstream = upstream_maker(config, pool)
    routes = {
        route.name: [upstream(p, quota_name(tables[p.name], p.model)) for p in config.route_providers(route)]
        for route in config.routes
    }
    # The ledger knows each provider model's quota as a provider of its own, named by its quota key.
    quotas = list({u.quota_key: attrs.evolve(u.config, name=u.quota_key) for ups in routes.values() for u in ups}.values())
    ledger = await open_ledger(config, quotas, nursery, previous.ledger if previous is not None else None)
    health = {p.name: ProviderHealth() for p in providers}
    if previous is not None:
        for name, state in previous.router.health.items():
            if name in health:
                health[name] = state
    cooldowns = CooldownTimers(nursery, ledger)
    max_wait_seconds = config.max_wait_ms / 1000
    fair_share = previous.fair_share if previous is not None else FairShare()
    fair_share.configure({quota.name: quota for quota in quotas}, ledger)
    routers = {
        name: Router(ups, ledger, cooldowns, config.cooldown_period_ms / 1000, config.capacity_backoff_ms / 1000,
                     config.honour_retry_after, health, name, max_wait_seconds,
                     fair_share if config.fair_share else None, config.max_continuations)
        for name, ups in routes.items()
    }
    if previous is not None:
        for name, router in routers.items():
            before = previous.routers.get(name, previous.router)
            router.estimator.ratio = before.estimator.ratio
            router.patience.carry_over(before.patience)
            for quota_key, memory in router.prompt_memory.items():
                if quota_key in before.prompt_memory:
                    memory.carry_over(before.prompt_memory[quota_key])
    wanted: dict[str, list[tuple[str, ...]]] = {}
    for ups in routes.values():
        for u in ups:
            if u.config.model not in wanted.setdefault(u.name, []):
                wanted[u.name].append(u.config.model)
    prober = HealthProber([upstream(p, None) for p in providers], wanted, health,
                          config.health_check_interval_ms / 1000, config.health_check_failures)
    background_scope = trio.CancelScope()

    if previous is not None:
        clients = previous.clients
        clients.budgets.reconfigure(config.clients)
    else:
        clients = ClientBook.for_clients(config.clients)
    exchanges: list[ClientExchange | PromptExchange] = []
    if isinstance(ledger, RedisLedger):
        figures = RedisClientFigures(ledger.store, config.redis_key_prefix)
        exchanges.append(ClientExchange(figures, replica_name(), clients, fair_share))
        memories = [(quota_key, memory) for router in routers.values() for quota_key, memory in router.prompt_memory.items()]
        if memories:
            exchanges.append(PromptExchange(RedisPromptStream(ledger.store, config.redis_key_prefix), memories))

    async def background() -> None:
        with background_scope:
            async with trio.open_nursery() as tasks:
                for exchange in exchanges:
                    tasks.start_soon(exchange.run)
                await prober.run()

    nursery.start_soon(background)
    models = ModelNames(tuple(
        ServedModel(route.name, route.aliases, route_limits((u.config for u in routes[route.name]), route.context_window,
                                                           route.max_output_tokens))
        for route in config.routes))
    return Runtime(config, models, routers, ledger, background_scope, Sanitizer(secrets(config)), clients, fair_share)
