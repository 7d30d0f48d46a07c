"""What operators read: `/healthz`, `/v1/status` and the live families of `/metrics`.

Quota, provider state and errors are an operator's business. When keys are configured, the
details need one: an operator key (`operator_api_keys`) if any is set, else a client key (the
app checks; see `auth.operator_keys`). Without one, /healthz still answers its status, for load
balancers and probes, and nothing more.
"""

from collections.abc import Iterable
from typing import Any

import attrs
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from ..quota.contract import WINDOW_NAMES
from ..runtime import Runtime
from .metrics import Metrics


def _provider_state(runtime: Runtime, name: str) -> dict[str, Any]:
    health = runtime.router.health[name]
    return {
        "usable": health.usable and not runtime.ledger.in_cooldown(name),
        **attrs.asdict(health),
        "accounts": runtime.ledger.provider_snapshot(name),
    }


def health(runtime: Runtime, detailed: bool) -> tuple[int, dict[str, Any]]:
    """Status code and body of /healthz: 200 while a provider is usable, 503 otherwise;
    per-provider details only when `detailed` (the caller may see them)."""
    providers = {upstream.name: _provider_state(runtime, upstream.name) for upstream in runtime.router.upstreams}
    usable = any(state["usable"] for state in providers.values())
    body: dict[str, Any] = {"status": "ok" if usable else "unavailable"}
    if detailed:
        body["providers"] = providers
        body["quota_store"] = runtime.ledger.store_status()
    return (200 if usable else 503), body


def status(runtime: Runtime, metrics: Metrics) -> dict[str, Any]:
    """Everything an operator asks: per provider and key, state, quota, traffic, reroutes."""
    providers = [
        {
            "name": upstream.name,
            "model": upstream.config.model,
            **_provider_state(runtime, upstream.name),
            "served_since_start": metrics.served(upstream.name),
        }
        for upstream in runtime.router.upstreams
    ]
    return {"model": runtime.models.served, "providers": providers, "reroutes": metrics.reroutes(),
            "quota_store": runtime.ledger.store_status()}


def live_families(runtime: Runtime) -> Iterable[Metric]:
    """Provider up, cooldowns and quota remaining, read at scrape time."""
    up = GaugeMetricFamily("trioproxy_provider_up", "1 while the prober finds the provider usable.", labels=("provider",))
    cooling = GaugeMetricFamily("trioproxy_cooldown_active", "1 while an account cools down.", labels=("provider", "account"))
    remaining = GaugeMetricFamily(
        "trioproxy_quota_remaining",
        "What is left of each limited window (the smaller of ours and the provider's figure).",
        labels=("provider", "account", "window"),
    )
    for upstream in runtime.router.upstreams:
        up.add_metric((upstream.name,), float(runtime.router.health[upstream.name].usable))
        for account, state in runtime.ledger.provider_snapshot(upstream.name).items():
            cooling.add_metric((upstream.name, account), float(state["cooldown_seconds"] > 0))
            for window in WINDOW_NAMES:
                limit, provider_figure = state[window]["limit"], state[window].get("provider_remaining")
                left = [value for value in (limit - state[window]["used"] if limit else None, provider_figure) if value is not None]
                if left:
                    remaining.add_metric((upstream.name, account, window), float(max(0, min(left))))
    return (up, cooling, remaining, *_quota_store_families(runtime.ledger.store_status()))


def _quota_store_families(store: dict[str, Any]) -> list[Metric]:
    """A shared ledger's reachability; the memory ledger has none to show."""
    if "connected" not in store:
        return []
    figures = (("trioproxy_quota_store_up", "1 while the shared quota ledger (Redis) answers.", store["connected"]),
               ("trioproxy_quota_store_outages", "Times the shared quota ledger became unreachable since start.", store["outages"]),
               ("trioproxy_quota_store_dropped_updates", "Settlements and header figures that could not reach Redis.", store["dropped_updates"]))
    return [GaugeMetricFamily(name, help_, value=float(value)) for name, help_, value in figures]
