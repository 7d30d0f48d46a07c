"""What operators read: `/healthz`, `/v1/status` and the live families of `/metrics`.

Quota, provider state and errors are an operator's business. When keys are configured, the
details need one: an operator key (`operator_api_keys`) if any is set, else a client key (the
app checks; see `auth.operator_keys`). Without one, /healthz still answers its status, for load
balancers and probes, and nothing more.

Each route lists its providers with the model it uses there (the first of its candidates the
provider offers) and the candidates; the top-level `providers` are the first route's, as they
were before routes existed.
"""

from collections.abc import Iterable
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from ..providers.upstream import Upstream
from ..quota.clients import USAGE_FIELDS
from ..quota.contract import snapshot_windows
from ..routing.router import Router
from ..runtime import Runtime
from .metrics import Metrics
from .refusals import Refusals


def _provider_state(runtime: Runtime, router: Router, upstream: Upstream) -> dict[str, Any]:
    health = router.health[upstream.name]
    candidates = upstream.config.model
    return {
        "usable": health.usable_for(candidates) and not runtime.ledger.in_cooldown(upstream.quota_key),
        **health.view(candidates),
        "accounts": runtime.ledger.provider_snapshot(upstream.quota_key),
    }


def health(runtime: Runtime, detailed: bool) -> tuple[int, dict[str, Any]]:
    """Status code and body of /healthz: 200 while a route has a usable provider, 503 otherwise;
    per-route and per-provider details only when `detailed` (the caller may see them)."""
    routes = {
        name: {upstream.name: _provider_state(runtime, router, upstream) for upstream in router.upstreams}
        for name, router in runtime.routers.items()
    }
    usable = any(state["usable"] for providers in routes.values() for state in providers.values())
    body: dict[str, Any] = {"status": "ok" if usable else "unavailable"}
    if detailed:
        body["providers"], body["routes"] = routes[runtime.models.served], routes
        body["quota_store"] = runtime.ledger.store_status()
    return (200 if usable else 503), body


def _route_providers(runtime: Runtime, router: Router, metrics: Metrics) -> list[dict[str, Any]]:
    return [
        {
            "name": upstream.name,
            **_provider_state(runtime, router, upstream),
            "served_since_start": metrics.served(router.route, upstream.name),
        }
        for upstream in router.upstreams
    ]


def status(runtime: Runtime, metrics: Metrics, refusals: Refusals) -> dict[str, Any]:
    """Everything an operator asks: per route, provider and key, state, quota, traffic, reroutes,
    and the requests answered with an error (counts by status, unknown paths, the last few)."""
    routes = []
    for served in runtime.models.models:
        providers = _route_providers(runtime, runtime.routers[served.name], metrics)
        requests = sum(provider["served_since_start"]["requests"] for provider in providers)
        routes.append({"name": served.name, "aliases": list(served.aliases), "providers": providers,
                       "served_since_start": requests})
    return {"model": runtime.models.served, "providers": routes[0]["providers"], "routes": routes,
            "reroutes": metrics.reroutes(), "quota_store": runtime.ledger.store_status(),
            "refusals": refusals.view(), "clients": clients(runtime)}


def clients(runtime: Runtime) -> dict[str, Any]:
    """Each client by name: weight, budgets (used and limit by scope and window) and usage by
    route and provider. Clients that are no longer configured keep their usage."""
    weights = {client.name: client.weight for client in runtime.config.clients}
    view: dict[str, Any] = {}
    for name, usage in runtime.clients.usage.view().items():
        view[name] = {"weight": weights.get(name), "budgets": runtime.clients.budgets.snapshot(name), **usage}
    for name, weight in weights.items():
        if name not in view:
            view[name] = {"weight": weight, "budgets": runtime.clients.budgets.snapshot(name),
                          "total": dict.fromkeys(USAGE_FIELDS, 0), "routes": {}}
    return dict(sorted(view.items()))


def live_families(runtime: Runtime) -> Iterable[Metric]:
    """Provider up, models offered, cooldowns and quota remaining, read at scrape time."""
    up = GaugeMetricFamily("trioproxy_provider_up", "1 while the prober finds the provider up.", labels=("provider",))
    offered = GaugeMetricFamily("trioproxy_model_offered", "1 unless the provider's model list lacks the model.",
                                labels=("provider", "model"))
    cooling = GaugeMetricFamily("trioproxy_cooldown_active", "1 while an account cools down.", labels=("provider", "account"))
    remaining = GaugeMetricFamily(
        "trioproxy_quota_remaining",
        "What is left of each limited window (the smaller of ours and the provider's figure).",
        labels=("provider", "account", "window"),
    )
    # One entry per quota (provider and model): routes sharing one count it once.
    quotas = {u.quota_key: (router, u) for router in runtime.routers.values() for u in router.upstreams}
    for name, health_ in {u.name: router.health[u.name] for router, u in quotas.values()}.items():
        up.add_metric((name,), float(health_.up))
    for quota_key, (router, upstream) in quotas.items():
        # Labelled with the model chosen, or the first candidate when none is offered.
        model = router.health[upstream.name].choose(upstream.config.model)
        offered.add_metric((upstream.name, model or upstream.config.model[0]), float(model is not None))
        for account, state in runtime.ledger.provider_snapshot(quota_key).items():
            cooling.add_metric((upstream.name, account), float(state["cooldown_seconds"] > 0))
            for window in snapshot_windows(state):
                limit, provider_figure = state[window]["limit"], state[window].get("provider_remaining")
                left = [value for value in (limit - state[window]["used"] if limit else None, provider_figure) if value is not None]
                if left:
                    remaining.add_metric((upstream.name, account, window), float(max(0, min(left))))
    return (up, offered, cooling, remaining, *_quota_store_families(runtime.ledger.store_status()))


def _quota_store_families(store: dict[str, Any]) -> list[Metric]:
    """A shared ledger's reachability; the memory ledger has none to show."""
    if "connected" not in store:
        return []
    figures = (("trioproxy_quota_store_up", "1 while the shared quota ledger (Redis) answers.", store["connected"]),
               ("trioproxy_quota_store_outages", "Times the shared quota ledger became unreachable since start.", store["outages"]),
               ("trioproxy_quota_store_dropped_updates", "Settlements and header figures that could not reach Redis.", store["dropped_updates"]))
    return [GaugeMetricFamily(name, help_, value=float(value)) for name, help_, value in figures]
