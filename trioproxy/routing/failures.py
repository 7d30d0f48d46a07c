"""What routing does about each kind of provider failure, in one table: whether the next provider
gets the request, whether the account cools down, whether the reservation is given back, and
what the client is told when no provider delivers."""

from attrs import frozen

from ..errors import ProxyError, default_type
from ..providers.failures import Kind, UpstreamFailure


@frozen
class Handling:
    """Routing's answer to one kind of failure."""

    failover: bool  # the next provider may well serve the same request
    cooldown: bool  # the account waits before its next request (a 429's or 503's backoff)
    ran_nothing: bool  # the provider refused before running anything: only the request is booked
    status: int | None = None  # the client's status; None: the provider's own
    code: str | None = None  # the client's error code; None: the provider's own
    passed_statuses: frozenset[int] = frozenset()  # provider statuses kept although `status` is set


_UPSTREAM_FAULT = dict(failover=True, cooldown=False, ran_nothing=False, status=502)
HANDLING: dict[Kind, Handling] = {
    Kind.TIMEOUT: Handling(**{**_UPSTREAM_FAULT, "status": 504}, code="upstream_timeout"),
    Kind.CONNECTION: Handling(**_UPSTREAM_FAULT, code="upstream_unavailable"),
    Kind.PROTOCOL: Handling(**_UPSTREAM_FAULT, code="upstream_bad_response"),
    Kind.PROVIDER_ERROR: Handling(**_UPSTREAM_FAULT, passed_statuses=frozenset({504})),
    Kind.RATE_LIMITED: Handling(failover=True, cooldown=True, ran_nothing=True),
    Kind.OVERLOADED: Handling(failover=True, cooldown=True, ran_nothing=False),
    # No cooldown: the key is fine, and the next candidate model may serve at once.
    Kind.MODEL_MISSING: Handling(failover=True, cooldown=False, ran_nothing=True),
    # The client's key is not in question: the operator must mend trioproxy's key for the provider.
    Kind.KEY_REFUSED: Handling(failover=True, cooldown=False, ran_nothing=True, status=502, code="provider_key_refused"),
    Kind.NOT_HERE: Handling(failover=True, cooldown=False, ran_nothing=True),
    Kind.BAD_REQUEST: Handling(failover=False, cooldown=False, ran_nothing=True),
}
RETRY_STATUSES = (429, 503)  # a client told one of these also learns when to try again


def client_error(failure: UpstreamFailure) -> ProxyError:
    """What the client is told of `failure` when no provider delivered instead."""
    rule = HANDLING[failure.kind]
    status = failure.status or 502
    if rule.status is not None and status not in rule.passed_statuses:
        status = rule.status
    message = failure.message
    if failure.kind is Kind.KEY_REFUSED:
        message = (f"{failure.provider} refused trioproxy's API key for it ({failure.status}: {message}); "
                   "the operator must check the provider keys in its settings.")
    if rule.code is not None:
        return ProxyError(status, message, type=default_type(status), code=rule.code)
    return ProxyError(status, message, type=failure.type or default_type(failure.status or status),
                      code=failure.code, param=failure.param)


@frozen
class Backoff:
    """How long to leave a provider alone, and a short label for logs and state."""

    seconds: float
    window: str  # the limit that ran out: "rpm", "tpm", "utpm", "rpd", "tpd", "capacity" or "unknown"
    from_provider: bool  # the provider named the time (Retry-After or a reset header)


def backoff_for(
    failure: UpstreamFailure, quota_cooldown: float, capacity_backoff: float, honour_hints: bool = True
) -> Backoff | None:
    """The cooldown a failure calls for; None for failures that need none.

    The provider's own figure wins (Retry-After, then the matching reset header); without
    one, a quota refusal waits `quota_cooldown` and a capacity refusal `capacity_backoff`.
    With `honour_hints` off (the original design), every 429 waits `quota_cooldown`.
    """
    if not HANDLING[failure.kind].cooldown:
        return None
    if not honour_hints:
        return Backoff(quota_cooldown, failure.window, False) if failure.kind is Kind.RATE_LIMITED else None
    if failure.retry_after is not None:
        return Backoff(max(failure.retry_after, 1.0), failure.window, True)
    return Backoff(capacity_backoff if failure.window == "capacity" else quota_cooldown, failure.window, False)
