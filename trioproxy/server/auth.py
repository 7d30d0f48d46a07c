"""Client keys: which callers may use the proxy. Empty means anyone (the original behaviour)."""

import hmac
import ipaddress

from ..config import Config
from ..errors import ProxyError


class ClientKeys:
    """Accepted `Authorization: Bearer` keys, compared in constant time."""

    def __init__(self, keys: tuple[str, ...], setting: str = "PROXY_API_KEYS") -> None:
        self._keys = tuple(key.encode() for key in keys)
        self._setting = setting  # named in the 401, so the caller knows which keys apply

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def accepts(self, authorization: str | None, x_api_key: str | None = None) -> bool:
        """Whether `Authorization: Bearer` or Anthropic's `x-api-key` carries an accepted key
        (always, when no key is required)."""
        if not self._keys:
            return True
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() == "bearer":
            candidate = presented.strip().encode()
        else:
            candidate = (x_api_key or "").strip().encode()
        # Compare against every key, so the time taken does not tell which one nearly matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        return matched

    def check(self, authorization: str | None, x_api_key: str | None = None) -> None:
        """Raise a 401 unless the request carries an accepted key."""
        if not self.accepts(authorization, x_api_key):
            raise ProxyError(
                401,
                f"Incorrect API key provided. Use one of the keys in this proxy's {self._setting}.",
                type="invalid_request_error",
                code="invalid_api_key",
            )


def operator_keys(config: Config) -> ClientKeys:
    """Who may read the operator views: operator keys if set, else the client keys (else anyone)."""
    if config.operator_api_keys:
        return ClientKeys(config.operator_api_keys, "OPERATOR_API_KEYS")
    return ClientKeys(config.client_api_keys, "PROXY_API_KEYS")


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the proxy reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
