"""What operators read: `/healthz`, `/v1/status` and the gauges of `/metrics`, from live state.

Each route lists its providers with the model it uses there; the top-level `providers` are the
first route's, as they were before routes existed.
"""

from typing import Any

from ..providers.upstream import Upstream
from ..quota.ledger import WINDOW_NAMES, QuotaLedger
from ..routing.router import Router
from ..runtime import Runtime
from .metrics import Metrics


def provider_state(router: Router, ledger: QuotaLedger, upstream: Upstream) -> dict[str, Any]:
    health = router.health[upstream.name]
    model = upstream.config.model
    return {
        "usable": health.usable_for(model) and not ledger.in_cooldown(upstream.quota_key),
        **health.view(model),
        "accounts": ledger.provider_snapshot(upstream.quota_key),
    }


def health(runtime: Runtime) -> tuple[int, dict[str, Any]]:
    """The status code and body of /healthz: 200 while any route has a usable provider, else 503."""
    routes = {
        name: {upstream.name: provider_state(router, runtime.ledger, upstream) for upstream in router.upstreams}
        for name, router in runtime.routers.items()
    }
    usable = any(state["usable"] for providers in routes.values() for state in providers.values())
    body = {"status": "ok" if usable else "unavailable", "providers": routes[runtime.models.served], "routes": routes}
    return (200 if usable else 503), body


def _route_providers(router: Router, ledger: QuotaLedger, metrics: Metrics) -> list[dict[str, Any]]:
    providers = []
    for upstream in router.upstreams:
        served = {  # for this route
            "requests": metrics.route_requests[(router.route, upstream.name, 200)],
            "prompt_tokens": metrics.route_tokens[(router.route, upstream.name, "prompt")],
            "completion_tokens": metrics.route_tokens[(router.route, upstream.name, "completion")],
        }
        providers.append({"name": upstream.name, "model": upstream.config.model,
                          **provider_state(router, ledger, upstream), "served_since_start": served})
    return providers


def status(runtime: Runtime, metrics: Metrics) -> dict[str, Any]:
    """Everything an operator asks: per route, provider and key, state, quota, traffic, reroutes."""
    routes = [
        {"name": served.name, "aliases": list(served.aliases),
         "providers": _route_providers(runtime.routers[served.name], runtime.ledger, metrics),
         "served_since_start": sum(n for (route, _, code), n in metrics.route_requests.items()
                                   if route == served.name and code == 200)}
        for served in runtime.models.models
    ]
    return {"model": runtime.models.served, "providers": routes[0]["providers"], "routes": routes,
            "reroutes": dict(metrics.reroutes)}


def gauges(runtime: Runtime) -> list[tuple[str, str, str, float]]:
    """(name, help, labels, value) of the live gauges /metrics adds to the counters."""
    found = []
    upstreams = {u.quota_key: (router, u) for router in runtime.routers.values() for u in router.upstreams}
    providers = {u.name: router.health[u.name] for router, u in upstreams.values()}
    for name, health_ in providers.items():
        found.append(("trioproxy_provider_up", "1 while the prober finds the provider up.", f'provider="{name}"', float(health_.up)))
    for router, upstream in upstreams.values():
        offered = router.health[upstream.name].offers(upstream.config.model) is not False
        labels = f'provider="{upstream.name}",model="{upstream.config.model}"'
        found.append(("trioproxy_model_offered", "1 unless the provider's model list lacks the model.", labels, float(offered)))
    for quota_key, (_, upstream) in upstreams.items():
        for account, state in runtime.ledger.provider_snapshot(quota_key).items():
            labels = f'provider="{upstream.name}",account="{account}"'
            found.append(("trioproxy_cooldown_active", "1 while an account cools down.", labels, float(state["cooldown_seconds"] > 0)))
            for window in WINDOW_NAMES:
                limit, remaining = state[window]["limit"], state[window].get("provider_remaining")
                left = [value for value in (limit - state[window]["used"] if limit else None, remaining) if value is not None]
                if left:
                    found.append(("trioproxy_quota_remaining", "What is left of each limited window (the smaller of ours and the provider's figure).", f'{labels},window="{window}"', float(max(0, min(left)))))
    return found
