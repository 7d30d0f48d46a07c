"""Whether a client may send this request: its allowed routes, then its own budgets."""

import trio

from ..errors import ProxyError
from ..quota.clients import TokenBooking, retry_after_seconds
from ..routing.request import ChatRequest
from ..runtime import Runtime
from .auth import Client
from .served import ServedRequest

_WINDOWS = {"rpm": "requests per minute", "tpm": "tokens per minute", "rpd": "requests per day",
            "tpd": "tokens per day"}


def check_route(client: Client, route: str) -> None:
    """Raise the 403 for a route `client` may not use."""
    if not client.may_use(route):
        raise ProxyError(403, f"This key may not use the model `{route}`.", type="permission_error",
                         code="model_not_allowed", param="model")


def admit_client(runtime: Runtime, client: Client, request: ChatRequest, served: ServedRequest) -> None:
    """Book the request (and its estimated tokens, settled in accounting) on the client's budgets
    and mark it as the client's; raise a 403 for a route it may not use, or a 429 with Retry-After when one of its own budgets is spent (the
    client's own limit: nobody else's quota is touched, no provider is asked)."""
    check_route(client, request.route)
    router = runtime.routers.get(request.route, runtime.router)
    refusal = runtime.clients.budgets.admit(client.name, request.route, lambda: router.expected_tokens(request.body))
    if isinstance(refusal, TokenBooking):
        served.tokens_booked = refusal
    else:  # a Refusal
        served.over_budget = True
        seconds = retry_after_seconds(refusal, trio.current_time())
        raise ProxyError(
            429,
            f"Client {client.name!r} has used its budget of {_WINDOWS[refusal.reason]}; try again in {seconds} s.",
            type="rate_limit_error",
            code="client_budget_exceeded",
            headers={"retry-after": str(seconds)},
        )
    request.client, request.weight = client.name, client.weight
