"""Settings with their secrets hidden (`--check-config`), and every secret they hold (for the logs'
redaction filter)."""

import urllib.parse
from typing import Any

from .converter import CONVERTER
from .schema import Config


SECRET_KEYS = frozenset({"api_key", "api_keys", "client_api_keys", "operator_api_keys", "redis_url", "redis_sentinel_password"})


def redacted(config: Config) -> dict[str, Any]:
    """The effective settings as a tree, secrets replaced, for --check-config."""

    def scrub(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                key: ("<set>" if value else "<not set>") if key in SECRET_KEYS else scrub(value)
                for key, value in node.items()
            }
        if isinstance(node, list):
            return [scrub(item) for item in node]
        return node

    return scrub(CONVERTER.unstructure(config))


def secrets(config: Config) -> tuple[str, ...]:
    """Every secret value in the settings, for the log redaction filter."""
    provider_keys = tuple(key for provider in config.providers for key in provider.keys)
    redis_password = urllib.parse.urlsplit(config.redis_url).password if config.redis_url else None
    redis_passwords = tuple(password for password in (redis_password, config.redis_sentinel_password) if password)
    named_client_keys = tuple(key for client in config.clients for key in client.api_keys)
    return provider_keys + config.client_api_keys + named_client_keys + config.operator_api_keys + redis_passwords
