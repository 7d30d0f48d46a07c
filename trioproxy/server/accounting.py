"""One request as the server saw it, and the one place it is accounted for: log line and metrics."""

import logging

import trio
from attrs import define, field

from ..routing.request import RouteRecord
from ..runtime import Runtime
from .metrics import Metrics

log = logging.getLogger("trioproxy.request")

STATUS_CLIENT_CLOSED = 499  # nginx's convention for "client went away", for the log only


@define
class ServedRequest:
    """What the server did for one request (written by the server only); `route` is routing's."""

    request_id: str
    api: str  # the front door: chat, responses or messages
    route: RouteRecord = field(factory=RouteRecord)
    stream: bool = False
    status: int = 0
    started: float = field(factory=trio.current_time)
    first_byte_at: float | None = None  # streams: when the client's 200 went out

    def overhead_seconds(self, until: float) -> float:
        """Time up to `until` that the proxy, not a provider, spent on this request."""
        return until - self.started - self.route.upstream_seconds - self.route.waited_seconds


def finish_request(served: ServedRequest, runtime: Runtime, metrics: Metrics) -> None:
    """Log the request's one INFO line and count it in the metrics."""
    route = served.route
    now = trio.current_time()
    latency = now - served.started
    first_byte = served.first_byte_at - served.started if served.first_byte_at is not None else None
    overhead = served.overhead_seconds(served.first_byte_at or now) if served.status == 200 else None
    metrics.observe(
        route.provider, served.stream, served.status, route.reason,
        route.prompt_tokens, route.completion_tokens, latency, first_byte, overhead,
    )
    if not log.isEnabledFor(logging.INFO):
        return
    ledger = runtime.ledger
    quota = " ".join(filter(None, (ledger.summary(upstream.name) for upstream in runtime.router.upstreams)))
    log.info(
        "request %s api=%s provider=%s reason=%r stream=%s status=%d prompt_tokens=%s completion_tokens=%s latency_ms=%.0f waited_ms=%.0f%s quota: %s",
        served.request_id,
        served.api,
        route.account if route.account != "-" else route.provider,
        route.reason,
        "yes" if served.stream else "no",
        served.status,
        route.prompt_tokens if route.prompt_tokens is not None else "-",
        route.completion_tokens if route.completion_tokens is not None else "-",
        latency * 1000,
        route.waited_seconds * 1000,
        f" waited_for={route.waited_why!r}" if route.waited_why else "",
        quota or "-",
    )
