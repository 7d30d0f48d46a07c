"""Every request-log line, written here: one INFO line per request on `trioproxy.request`,
however it ended. Each starts `request <id>` and goes on in `key=value` fields:

- a request a front door took (served, refused by the door, failed): `api`, `provider`,
  `reason`, `route`, `client`, `stream`, `status`, tokens, latency and the quota left;
- a request refused before any door took it (an unknown path or method, a missing key):
  `api`, `provider=-`, `reason`, `status`, `method`, `path`, `message`;
- a request the HTTP-edges guard refused (ambiguous framing, a head too large): `refused:`
  with its status and why.

Texts a client or provider wrote arrive scrubbed (`secrets.Sanitizer`); the log's own
scrubber runs over every line too.
"""

import logging

from ..errors import ProxyError
from ..runtime import Runtime
from .refusals import MESSAGE_CHARS
from .served import ServedRequest

log = logging.getLogger("trioproxy.request")


def log_served(served: ServedRequest, runtime: Runtime, reason: str, latency: float) -> None:
    """The line of a request a front door took, with the quota left on its route's providers."""
    if not log.isEnabledFor(logging.INFO):
        return
    route = served.route
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


def log_refused(request_id: str, api: str, method: str, path: str, error: ProxyError, reason: str,
                message: str) -> None:
    """The line of a request refused before a front door took it: the request line's format
    plus method, path and the (scrubbed) message."""
    log.info(
        "request %s api=%s provider=- reason=%r status=%d method=%s path=%r message=%r",
        request_id,
        api,
        reason,
        error.status,
        method[:16],
        path[:MESSAGE_CHARS],
        message,
    )


def log_edge_refusal(request_id: str, error: ProxyError, why: str) -> None:
    """The line of a request the HTTP-edges guard refused before the application saw it."""
    log.info("request %s refused: status=%d reason=%r", request_id, error.status, why)
