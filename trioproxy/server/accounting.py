"""The one place a finished request is accounted for: its log line, metrics and the dashboard's history."""

import logging

import trio

from ..runtime import Runtime
from .history import TrafficHistory
from .metrics import Metrics
from .refusals import Refusals
from .served import ServedRequest

log = logging.getLogger("trioproxy.request")


def finish_request(served: ServedRequest, runtime: Runtime, metrics: Metrics, history: TrafficHistory,
                   refusals: Refusals) -> None:
    """Log the request's one INFO line and count it in the metrics, the dashboard's history and,
    when it was answered with an error, the refusals."""
    route = served.route
    reason = served.refusal or route.reason
    now = trio.current_time()
    latency = now - served.started
    first_byte = served.first_byte_at - served.started if served.first_byte_at is not None else None
    overhead = served.overhead_seconds(served.first_byte_at or now) if served.status == 200 else None
    metrics.observe(
        served.model, route.provider, served.stream, served.status, reason,
        route.prompt_tokens, route.completion_tokens, latency, first_byte, overhead,
    )
    for broke_off, why in route.continuations:
        metrics.continued(broke_off, why)
    history.observe(served, reason, latency, first_byte)
    _count_for_client(served, runtime, metrics)
    if served.status != 200:
        refusals.observe(served.request_id, served.api, "POST", "", served.status, reason, served.message,
                         refused=bool(served.refusal))
    if not log.isEnabledFor(logging.INFO):
        return
    ledger = runtime.ledger
    router = runtime.routers.get(served.model, runtime.router)
    quota = " ".join(filter(None, (ledger.summary(upstream.quota_key) for upstream in router.upstreams)))
    log.info(
        "request %s api=%s provider=%s reason=%r route=%s client=%s stream=%s status=%d prompt_tokens=%s completion_tokens=%s latency_ms=%.0f waited_ms=%.0f%s%s%s%s%s quota: %s",
        served.request_id,
        served.api,
        route.account if route.account != "-" else route.provider,
        reason,
        served.model,
        served.client,
        "yes" if served.stream else "no",
        served.status,
        route.prompt_tokens if route.prompt_tokens is not None else "-",
        route.completion_tokens if route.completion_tokens is not None else "-",
        latency * 1000,
        route.waited_seconds * 1000,
        f" waited_for={route.waited_why!r}" if route.waited_why else "",
        f" cached_tokens={route.cached_tokens}" if route.cached_tokens else "",
        f" continued_from={','.join(name for name, _ in route.continuations)}" if route.continuations else "",
        f" dropped_tools={','.join(served.dropped_tools)}" if served.dropped_tools else "",
        f" message={served.message!r}" if served.message else "",
        quota or "-",
    )


def _count_for_client(served: ServedRequest, runtime: Runtime, metrics: Metrics) -> None:
    """The client's usage by route and provider, failovers against the provider that failed; its
    token budgets settled from the estimate booked at admission to what it really used."""
    route, client, model = served.route, served.client, served.model
    usage = runtime.clients.usage
    for failed in route.failed_over:
        usage.count(client, model, failed, failovers=1)
    metrics.observe_client(client, model, route.provider, route.failed_over, served.over_budget,
                           route.prompt_tokens, route.cached_tokens, route.completion_tokens)
    if served.over_budget:
        usage.count(client, model, "-", over_budget=1)
        return
    prompt, completion = route.prompt_tokens or 0, route.completion_tokens or 0
    usage.count(client, model, route.provider, requests=1, prompt_tokens=prompt,
                cached_tokens=route.cached_tokens or 0, completion_tokens=completion)
    if served.tokens_booked is not None:
        served.tokens_booked.settle(prompt + completion)
