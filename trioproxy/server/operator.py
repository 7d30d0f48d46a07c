"""What operators read: `/healthz`, `/v1/status` and the gauges of `/metrics`, from live state."""

from typing import Any

import attrs

from ..quota.ledger import WINDOW_NAMES, QuotaLedger
from ..routing.router import Router
from .metrics import Metrics


def provider_state(router: Router, ledger: QuotaLedger, name: str) -> dict[str, Any]:
    health = router.health[name]
    return {
        "usable": health.usable and not ledger.in_cooldown(name),
        **attrs.asdict(health),
        "accounts": ledger.provider_snapshot(name),
    }


def health(router: Router, ledger: QuotaLedger) -> tuple[int, dict[str, Any]]:
    """The status code and body of /healthz: 200 while any provider is usable, else 503."""
    providers = {upstream.name: provider_state(router, ledger, upstream.name) for upstream in router.upstreams}
    usable = any(state["usable"] for state in providers.values())
    return (200 if usable else 503), {"status": "ok" if usable else "unavailable", "providers": providers}


def status(router: Router, ledger: QuotaLedger, metrics: Metrics, model: str) -> dict[str, Any]:
    """Everything an operator asks: per provider and key, state, quota, traffic, reroutes."""
    providers = []
    for upstream in router.upstreams:
        served = {
            "requests": sum(n for (p, _, code), n in metrics.requests.items() if p == upstream.name and code == 200),
            "prompt_tokens": metrics.tokens[(upstream.name, "prompt")],
            "completion_tokens": metrics.tokens[(upstream.name, "completion")],
        }
        providers.append({"name": upstream.name, "model": upstream.config.model,
                          **provider_state(router, ledger, upstream.name), "served_since_start": served})
    return {"model": model, "providers": providers, "reroutes": dict(metrics.reroutes)}


def gauges(router: Router, ledger: QuotaLedger) -> list[tuple[str, str, str, float]]:
    """(name, help, labels, value) of the live gauges /metrics adds to the counters."""
    found = []
    for upstream in router.upstreams:
        health_ = router.health[upstream.name]
        found.append(("trioproxy_provider_up", "1 while the prober finds the provider usable.", f'provider="{upstream.name}"', float(health_.usable)))
        for account, state in ledger.provider_snapshot(upstream.name).items():
            labels = f'provider="{upstream.name}",account="{account}"'
            found.append(("trioproxy_cooldown_active", "1 while an account cools down.", labels, float(state["cooldown_seconds"] > 0)))
            for window in WINDOW_NAMES:
                limit, remaining = state[window]["limit"], state[window].get("provider_remaining")
                left = [value for value in (limit - state[window]["used"] if limit else None, remaining) if value is not None]
                if left:
                    found.append(("trioproxy_quota_remaining", "What is left of each limited window (the smaller of ours and the provider's figure).", f'{labels},window="{window}"', float(max(0, min(left)))))
    return found
