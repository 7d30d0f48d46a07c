"""Client keys: which callers may use the proxy, and who each one is. No key configured means
anyone, as one anonymous client (the original behaviour)."""

import hashlib
import ipaddress
from collections.abc import Sequence

from attrs import frozen

from ..config.schema import ClientConfig, Config
from ..config.derived import key_digest
from ..errors import ProxyError


@frozen
class Client:
    """Who sent a request, as logs, views and the fair share know it: never its key."""

    name: str
    weight: float = 1.0
    routes: frozenset[str] = frozenset()  # empty: every route

    def may_use(self, route: str) -> bool:
        return not self.routes or route in self.routes


ANYONE = Client("anonymous")


def _anonymous(keys: Sequence[str]) -> dict[str, Client]:
    """`client_api_keys` are clients of weight 1 named by position: `anonymous`, or
    `anonymous#1`, `anonymous#2`, ... for several."""
    return {key_digest(key): Client("anonymous" if len(keys) == 1 else f"anonymous#{index + 1}")
            for index, key in enumerate(keys)}


class ClientKeys:
    """Accepted keys, from `Authorization: Bearer` or Anthropic's `x-api-key`, and whose they are.

    A presented key is hashed (SHA-256) and looked up among the hashes of the accepted ones:
    one lookup however many clients, and what its timing could tell is about a hash, which
    says nothing about a key.
    """

    def __init__(self, keys: tuple[str, ...], setting: str = "PROXY_API_KEYS",
                 clients: Sequence[ClientConfig] = ()) -> None:
        named = {digest: Client(client.name, client.weight, frozenset(client.routes))
                 for client in clients for digest in client.digests()}
        self._by_digest = {bytes.fromhex(digest.removeprefix("sha256:")): client
                           for digest, client in {**_anonymous(keys), **named}.items()}
        # named in the 401, so the caller knows which keys apply
        self._setting = f"{setting} or [[clients]]" if clients else setting

    @property
    def required(self) -> bool:
        return bool(self._by_digest)

    def identify(self, authorization: str | None, x_api_key: str | None = None) -> Client:
        """The client whose key the request carries (ANYONE when no key is required);
        raises a 401 ProxyError for a missing or unknown key."""
        if not self._by_digest:
            return ANYONE
        scheme, _, presented = (authorization or "").partition(" ")
        candidate = presented.strip() if scheme.lower() == "bearer" else (x_api_key or "").strip()
        client = self._by_digest.get(hashlib.sha256(candidate.encode()).digest()) if candidate else None
        if client is None:
            raise ProxyError(
                401,
                f"Incorrect API key provided. Use one of the keys in this proxy's {self._setting}.",
                type="invalid_request_error",
                code="invalid_api_key",
            )
        return client

    def accepts(self, authorization: str | None, x_api_key: str | None = None) -> bool:
        """Whether the request carries an accepted key (always, when no key is required)."""
        try:
            self.identify(authorization, x_api_key)
        except ProxyError:
            return False
        return True

    def check(self, authorization: str | None, x_api_key: str | None = None) -> None:
        """Raise a 401 unless the request carries an accepted key."""
        self.identify(authorization, x_api_key)


def client_keys(config: Config) -> ClientKeys:
    """The keys of every client: `client_api_keys` (anonymous) and `[[clients]]`."""
    return ClientKeys(config.client_api_keys, "PROXY_API_KEYS", config.clients)


def operator_keys(config: Config) -> ClientKeys:
    """Who may read the operator views: operator keys if set, else the client keys (else anyone)."""
    if config.operator_api_keys:
        return ClientKeys(config.operator_api_keys, "OPERATOR_API_KEYS")
    return client_keys(config)


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the proxy reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
