"""A route's size as clients see it: how long a prompt and how long an answer it takes."""

from collections.abc import Iterable

from attrs import frozen

from ..config.schema import ProviderConfig


@frozen
class RouteLimits:
    """What model lists report for a route; None where no provider of the route states a figure."""

    context_window: int | None  # prompt plus completion, in tokens
    output_tokens: int | None  # the completion budget the route sends at most


def route_limits(providers: Iterable[ProviderConfig], context_window: int | None = None,
                 output_tokens: int | None = None) -> RouteLimits:
    """The route's figures: `context_window` and `output_tokens` when given (the route's own
    settings); else the largest context window a provider of the route declares (a longer
    request skips every provider with a window), and the largest completion cap, within that window.

    A provider without a cap sends what the client asks for, up to the window; so with one such
    provider the output limit is the window itself.
    """
    derived = _derived(list(providers))
    return RouteLimits(context_window or derived.context_window, output_tokens or derived.output_tokens)


def _derived(configs: list[ProviderConfig]) -> RouteLimits:
    windows = [config.context_window for config in configs if config.context_window is not None]
    window = max(windows) if windows else None
    caps = [config.max_completion_tokens_cap for config in configs]
    if any(cap is None for cap in caps):
        return RouteLimits(window, window)
    output = max(cap for cap in caps if cap is not None) if caps else None
    return RouteLimits(window, min(output, window) if output is not None and window is not None else output)
