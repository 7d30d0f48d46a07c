"""`trioproxy --check-config --probe`: ask each provider key which models it offers today, and say
per route which of its providers offer the route's model.

Cerebras's catalogue moves (models are retired, new ones arrive) and what a key may use depends on
its organisation, so the provider's own `GET /models` is the truth; it costs no chat quota.
"""

import trio
from attrs import frozen

from .config import Config
from .providers.upstream import Upstream, UpstreamFailure
from .runtime import ClientPool, upstream_maker


@frozen
class KeyListing:
    provider: str
    key_number: int  # 1-based: which of the provider's keys (never the key itself)
    models: frozenset[str] | None  # None when the provider did not answer
    error: str = ""


async def list_every_key(config: Config) -> list[KeyListing]:
    """One `GET /models` per key of every provider that has keys, concurrently."""
    listings: list[KeyListing] = []
    pool = ClientPool()
    upstream = upstream_maker(config, pool)

    async def ask(upstream: Upstream, number: int, key: str) -> None:
        try:
            models = frozenset(await upstream.list_models(key))
        except UpstreamFailure as failure:
            listings.append(KeyListing(upstream.name, number, None, f"{failure.label}: {failure.error.message}"))
            return
        listings.append(KeyListing(upstream.name, number, models))

    try:
        async with trio.open_nursery() as nursery:
            for provider in config.providers:
                for number, key in enumerate(provider.keys, 1):
                    nursery.start_soon(ask, upstream(provider, None), number, key)
    finally:
        await pool.aclose()
    order = [p.name for p in config.providers]
    return sorted(listings, key=lambda listing: (order.index(listing.provider), listing.key_number))


def report(config: Config, listings: list[KeyListing]) -> tuple[str, bool]:
    """The text to print, and whether every route has a provider that offers its model."""
    lines = []
    for listing in listings:
        label = f"{listing.provider} key {listing.key_number}"
        if listing.models is None:
            lines.append(f"{label}: no answer ({listing.error})")
        else:
            lines.append(f"{label} offers: {', '.join(sorted(listing.models)) or '(nothing)'}")
    every_route_served = True
    for route in config.routes:
        lines.append("")
        lines.append(f"route {route.name}" + (f" (aliases: {', '.join(route.aliases)})" if route.aliases else ""))
        offered_anywhere = False
        for provider in config.route_providers(route):
            answers = [listing for listing in listings if listing.provider == provider.name]
            keys = [str(listing.key_number) for listing in answers if listing.models and provider.model in listing.models]
            if keys:
                offered_anywhere = True
                verdict = f"offered (key {', '.join(keys)})"
            elif all(listing.models is None for listing in answers):
                verdict = "unknown (the provider did not answer)"
            else:
                verdict = "NOT OFFERED: requests skip this provider"
            lines.append(f"  {provider.name:<12} {provider.model:<44} {verdict}")
        every_route_served = every_route_served and offered_anywhere
        if not offered_anywhere:
            lines.append("  no provider offers this model today: requests for it get a 503")
    return "\n".join(lines), every_route_served
