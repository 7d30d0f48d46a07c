"""Client keys: which callers may use the proxy. Empty means anyone (the original behaviour)."""

import hmac
import ipaddress

from ..doors.chat import ApiError


class ClientKeys:
    """Accepted `Authorization: Bearer` keys, compared in constant time."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = tuple(key.encode() for key in keys)

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def check(self, authorization: str | None) -> None:
        """Raise a 401 in OpenAI's shape unless the header carries an accepted key."""
        if not self._keys:
            return
        scheme, _, presented = (authorization or "").partition(" ")
        candidate = presented.strip().encode() if scheme.lower() == "bearer" else b""
        # Compare against every key, so the time taken does not tell which one nearly matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        if not matched:
            raise ApiError(
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
