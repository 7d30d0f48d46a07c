"""What the routing pipeline takes in and what it records: one shape whichever door a request used."""

from typing import Any

from attrs import define, field


@define
class ChatRequest:
    """A request in the pipeline's one internal shape: an OpenAI Chat Completions body.

    Every front door translates its protocol into this; providers speak it natively.
    """

    body: dict[str, Any]
    stream: bool
    # The route (client-visible model) it resolved to, which picks the providers; every door
    # sets it. The router does not read it: each route has its own router.
    route: str = ""
    # Tools the door left out because no provider runs them (OpenAI's hosted `web_search`,
    # ...), by type: named to the client in a response header and in the request's log line.
    dropped_tools: tuple[str, ...] = ()
    # Who sent it (a client's name, never its key) and its weight in the fast provider's fair share.
    client: str = "anonymous"
    weight: float = 1.0


@define
class RouteRecord:
    """What routing did for one request: written by the router only (routing/router.py), from
    what patience, settlement and the stream relay hand it; read when the request is logged."""

    provider: str = "-"
    account: str = "-"  # which key's quota paid, e.g. cerebras#2; never the key itself
    reason: str = "-"  # why this provider: preferred, fallback: rpm, failover: 503, ...
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None  # of the prompt, what the provider's cache held
    upstream_seconds: float = 0.0  # time spent waiting on providers, to tell the proxy's own overhead
    waited_seconds: float = 0.0  # time patience held the request for a provider's quota
    waited_why: str = ""  # e.g. "patience: rpm 1.8 s"
    failed_over: list[str] = field(factory=list)  # providers that failed it before the next was tried
    # Streams another provider finished: (the provider that broke off, why), in order.
    continuations: list[tuple[str, str]] = field(factory=list)


# The outcome of a request that never reached routing (its door or admission refused it): no
# provider asked. Shared and only read: the router writes only the records it makes (`Routing`).
NOT_ROUTED = RouteRecord()
