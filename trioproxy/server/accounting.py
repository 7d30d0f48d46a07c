"""The one place a finished request is accounted for: its log line (request_log), metrics and the dashboard's history."""

import trio

from ..runtime import Runtime
from .history import TrafficHistory
from .metrics import Metrics
from .refusals import Refusals
from .request_log import log_served
from .served import ServedRequest

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
    log_served(served, runtime, reason, latency)


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
