"""Checks across settings that no single field's type or validator can make: Redis settings that
go together, provider names, routes, clients and their budgets; and, when serving, a route no
provider can serve."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..plans import WINDOW_SETTINGS
from .derived import key_digest, quota_name, starting_limits
from .env import env_prefix
from .redis_target import TlsFileError, parse_redis_url, tls_context
from .validators import InvalidKey

if TYPE_CHECKING:
    from .schema import Budget, ClientConfig, Config, ModelRoute, ProviderConfig

_CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_KEY_HASH = re.compile(r"sha256:[0-9a-f]{64}")


def check_settings(config: Config) -> None:
    """Raise InvalidKey naming the first key whose value clashes with another setting."""
    if config.quota_backend == "redis" and not config.redis_url:
        raise InvalidKey("redis_url", "must be set when quota_backend is \"redis\" (e.g. redis://127.0.0.1:6379/0)")
    _check_redis_tls(config)
    if config.redis_sentinel_password and (not config.redis_url or parse_redis_url(config.redis_url).topology != "sentinel"):
        raise InvalidKey("redis_sentinel_password", "is only read with a sentinel redis_url (redis+sentinel://, rediss+sentinel://)")
    names = [p.name for p in (config.cerebras, config.chutes, *config.extra_providers)]
    if config.cerebras.name != "cerebras" or config.chutes.name != "chutes":
        raise InvalidKey("cerebras.name", "the [cerebras] and [chutes] tables keep their own names")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InvalidKey("extra_providers", f"provider name {duplicates[0]!r} is used twice")
    unknown = [name for name in config.provider_order if name not in names]
    if unknown:
        raise InvalidKey("provider_order", f"names no provider called {unknown[0]!r}")
    _check_routes(config)
    _check_clients(config)


def _check_redis_tls(config: Config) -> None:
    """TLS files are for rediss:// URLs, come as a certificate with its key, and must load."""
    given = [name for name in ("redis_tls_ca", "redis_tls_cert", "redis_tls_key") if getattr(config, name)]
    if not given:
        return
    if not config.redis_url or not parse_redis_url(config.redis_url).tls:
        raise InvalidKey(given[0], "is only read with a TLS redis_url (rediss://, rediss+cluster://, rediss+sentinel://)")
    if bool(config.redis_tls_cert) != bool(config.redis_tls_key):
        raise InvalidKey("redis_tls_key" if config.redis_tls_cert else "redis_tls_cert",
                          "must be set too: a client certificate goes with its private key")
    try:
        tls_context(config.redis_tls_ca, config.redis_tls_cert, config.redis_tls_key)
    except TlsFileError as error:
        raise InvalidKey(error.setting, str(error)) from None


def _check_routes(config: Config) -> None:
    """Route mistakes the types cannot catch: unknown providers, names used twice, clashing limits."""
    if config.models and config.model_aliases:
        raise InvalidKey("model_aliases", "is not used with [[models]] routes; give each route its own `aliases`")
    providers = {p.name: p for p in (config.cerebras, config.chutes, *config.extra_providers)}
    names: dict[str, int] = {}
    limits: dict[str, tuple[int, ProviderConfig]] = {}
    for index, route in enumerate(config.models):
        if not route.name or not all(route.aliases):
            raise InvalidKey(f"models.{index}.name" if not route.name else f"models.{index}.aliases", "must not be empty")
        if not route.providers:
            raise InvalidKey(f"models.{index}.providers", f"route {route.name!r} names no provider")
        for alias_index, name in enumerate((route.name, *route.aliases)):
            key = f"models.{index}.name" if alias_index == 0 else f"models.{index}.aliases"
            if name in names:
                raise InvalidKey(key, f"{name!r} is already used by route {config.models[names[name]].name!r}")
            names[name] = index
        for entry_index, entry in enumerate(route.providers):
            key = f"models.{index}.providers.{entry_index}"
            if entry.provider not in providers:
                raise InvalidKey(f"{key}.provider", f"names no provider called {entry.provider!r}")
            used = entry.applied_to(providers[entry.provider])
            quota = quota_name(providers[entry.provider], used.model)
            earlier = limits.setdefault(quota, (index, used))
            if _quota_settings(earlier[1]) != _quota_settings(used):
                raise InvalidKey(key, f"{entry.provider} model {', '.join(used.model)!r} has other limits in route "
                                       f"{config.models[earlier[0]].name!r}; one model has one quota")


def _check_clients(config: Config) -> None:
    """Client mistakes, each reported against the client's entry naming the client."""
    routes = {route.name: route for route in config.routes}
    owners: dict[str, str] = {key_digest(key): "client_api_keys" for key in config.client_api_keys}
    names: set[str] = set()
    for index, client in enumerate(config.clients):
        def refuse(key: str, reason: str) -> InvalidKey:
            return InvalidKey(f"clients.{index}.{key}", f"client {client.name!r} {reason}")

        if not _CLIENT_NAME.fullmatch(client.name):
            raise refuse("name", "must be 1-64 letters, digits, '.', '_' or '-' (it names the client in logs and metrics)")
        if client.name in names:
            raise refuse("name", "is listed twice")
        names.add(client.name)
        if client.weight <= 0:
            raise refuse("weight", f"must be greater than 0, got {client.weight:g}")
        if not client.api_keys and not client.key_hashes:
            raise refuse("api_keys", "has no key: give api_keys or key_hashes")
        for hashed in client.key_hashes:
            if not _KEY_HASH.fullmatch(hashed):
                raise refuse("key_hashes", "must list keys as sha256:<64 lowercase hex digits>")
        for digest in client.digests():
            field_ = "key_hashes" if digest in client.key_hashes else "api_keys"
            if owners.setdefault(digest, client.name) != client.name:
                raise refuse(field_, f"has a key that {owners[digest]} lists too")
        for route in client.routes:
            if route not in routes:
                raise refuse("routes", f"names no route called {route!r}")
        usable = [routes[name] for name in client.routes or routes]
        _check_budget(config, client, client.budget, usable, f"clients.{index}.budget")
        for route_name, budget in client.route_budgets.items():
            if route_name not in routes:
                raise refuse("route_budgets", f"names no route called {route_name!r}")
            _check_budget(config, client, budget, [routes[route_name]], f"clients.{index}.route_budgets.{route_name}")


def _check_budget(config: Config, client: ClientConfig, budget: Budget, routes: list[ModelRoute], key: str) -> None:
    """A budget is a positive figure no larger than what the routes' providers allow together,
    as configured or as their plans start (a window some provider does not limit allows any)."""
    everyone = {p.name: p for p in (config.cerebras, config.chutes, *config.extra_providers)}
    for window, limit in budget.limits().items():
        name = WINDOW_SETTINGS[window]
        if limit <= 0:
            raise InvalidKey(f"{key}.{name}", f"client {client.name!r} must be greater than 0, got {limit}")
        for route in routes:
            figures = [starting_limits(entry.applied_to(everyone[entry.provider]))[window][0] for entry in route.providers]
            if all(figure is not None for figure in figures) and limit > sum(figures):
                raise InvalidKey(f"{key}.{name}", f"client {client.name!r} has {limit}, above what the providers "
                                                   f"of route {route.name!r} allow together ({sum(figures)})")


def _quota_settings(provider: ProviderConfig) -> tuple[int | str | None, ...]:
    return (
        provider.requests_per_minute, provider.tokens_per_minute, provider.uncached_tokens_per_minute,
        provider.requests_per_day, provider.tokens_per_day, provider.plan, provider.windows,
    )


def keyless_route(config: Config) -> str | None:
    """One line naming the first route none of whose providers has a key, or None if all can serve.

    Checked only when serving: settings without any key are fine to inspect (--check-config).
    """
    for index, route in enumerate(config.routes):
        if not config.route_providers(route):
            first = route.providers[0].provider
            variable = f"{env_prefix(first)}_API_KEY"
            return (f"models.{index}.providers: none of the providers of route {route.name!r} "
                    f"({', '.join(entry.provider for entry in route.providers)}) has an API key; "
                    f"set {variable} (in the environment or .env) or {first}.api_key")
    return None
