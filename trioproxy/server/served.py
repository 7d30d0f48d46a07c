"""One request as the server saw it: written by the server only; `route` is routing's record."""

import trio
from attrs import define, field

from ..quota.clients import TokenBooking
from ..routing.request import NOT_ROUTED, RouteRecord

STATUS_CLIENT_CLOSED = 499  # nginx's convention for "client went away", for the log only


@define
class ServedRequest:
    """What the server did for one request (written by the server only); `route` is routing's."""

    request_id: str
    api: str  # the front door: chat, responses or messages
    route: RouteRecord = NOT_ROUTED  # routing's outcome (`Routing.outcome`), copied in once routing starts
    model: str = "-"  # the model route the client's model name resolved to
    stream: bool = False
    status: int = 0
    started: float = field(factory=trio.current_time)
    first_byte_at: float | None = None  # streams: when the client's 200 went out
    refusal: str = ""  # why it was refused before any provider was asked (bad body, unknown model, ...)
    client: str = "anonymous"  # who sent it: a client's name, never its key
    over_budget: bool = False  # refused because the client had spent one of its own budgets
    tokens_booked: TokenBooking | None = None  # its estimate on the client's token budgets, settled at the end
    dropped_tools: tuple[str, ...] = ()  # hosted tools the door left out
    message: str = ""  # an error answer's message, scrubbed and cut short, for logs and views

    def overhead_seconds(self, until: float) -> float:
        """Time up to `until` that the proxy, not a provider, spent on this request."""
        return until - self.started - self.route.upstream_seconds - self.route.waited_seconds
