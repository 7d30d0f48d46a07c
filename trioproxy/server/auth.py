"""Client keys: which callers may use the proxy. Empty means anyone (the original behaviour)."""

import hmac
import ipaddress

from ..errors import ProxyError


class ClientKeys:
    """Accepted `Authorization: Bearer` keys, compared in constant time."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = tuple(key.encode() for key in keys)

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def check(self, authorization: str | None, x_api_key: str | None = None) -> None:
        """Raise a 401 unless `Authorization: Bearer` or Anthropic's `x-api-key` carries an accepted key."""
        if not self._keys:
            return
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() == "bearer":
            candidate = presented.strip().encode()
        else:
            candidate = (x_api_key or "").strip().encode()
        # Compare against every key, so the time taken does not tell which one nearly matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        if not matched:
            raise ProxyError(
                401,
                "Incorrect API key provided. Use one of the keys in this proxy's PROXY_API_KEYS.",
                type="invalid_request_error",
                code="invalid_api_key",
            )


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the proxy reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
