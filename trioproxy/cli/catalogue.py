"""`trioproxy models` (or `--check-config --probe`): ask each provider key which models it offers
today, say per route which of its candidates each provider would serve, and print a `[[models]]`
block that pins today's choice.

Cerebras's catalogue moves (models are retired, new ones arrive) and what a key may use depends on
its organisation, so the provider's own `GET /models` is the truth; it costs no chat quota.
"""

from collections.abc import Iterable

import trio
from attrs import frozen

from ..config.schema import Config
from ..providers.failures import UpstreamFailure
from ..providers.upstream import Upstream
from ..runtime import ClientPool, upstream_maker


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
            listings.append(KeyListing(upstream.name, number, None, f"{failure.label}: {failure.message}"))
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
    """The text to print, and whether every route has a provider that offers one of its models.

    Per route and provider: which candidate serves on each key (the first its list offers),
    then a `[[models]]` block naming, per provider, the candidates the keys offer today.
    """
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
        block = []
        for provider in config.route_providers(route):
            answers = [listing for listing in listings if listing.provider == provider.name]
            verdict, offered = _verdict(provider.model, answers)
            offered_anywhere = offered_anywhere or bool(offered)
            lines.append(f"  {provider.name:<12} {verdict}")
            if offered:
                block.append(f'  {{ provider = "{provider.name}", model = [{", ".join(_quoted(offered))}] }},')
        every_route_served = every_route_served and offered_anywhere
        if not offered_anywhere:
            lines.append("  no provider offers any of its models today: requests for it get a 503")
        if block:
            lines.append("  # to pin today's choice, in config.toml:")
            lines.append("  [[models]]")
            lines.append(f"  name = {_quoted([route.name])[0]}")
            if route.aliases:
                lines.append(f"  aliases = [{', '.join(_quoted(route.aliases))}]")
            lines.extend(["  providers = [", *("  " + line for line in block), "  ]"])
    return "\n".join(lines), every_route_served


def _verdict(candidates: tuple[str, ...], answers: list[KeyListing]) -> tuple[str, list[str]]:
    """What serves a candidate list on each key, and the candidates every answering key offers."""
    heard = [listing for listing in answers if listing.models is not None]
    if not heard:
        return f"{', '.join(candidates)}: unknown (the provider did not answer)", []
    chosen = {}
    for listing in heard:
        assert listing.models is not None
        chosen[listing.key_number] = next((model for model in candidates if model in listing.models), None)
    offered = [model for model in candidates if all(listing.models and model in listing.models for listing in heard)]
    if all(model is None for model in chosen.values()):
        return f"NOT OFFERED: none of {', '.join(candidates)}; requests skip this provider", []
    serving = "; ".join(f"key {number}: {model or 'none of the candidates'}" for number, model in chosen.items())
    return f"serves {serving} (candidates: {', '.join(candidates)})", offered


def _quoted(values: Iterable[str]) -> list[str]:
    """TOML basic strings (ids hold no quotes or backslashes, but be safe)."""
    return ['"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' for value in values]
