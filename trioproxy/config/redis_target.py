"""Where the shared ledger's Redis is, as `redis_url` says, and how TLS trusts it.

Parsing only (no client library), so loading settings stays fast:
- one server: `redis://[user:password@]host[:port][/db]`, `rediss://...` (TLS) or
  `unix://[user:password@]/path/to/redis.sock[?db=N]`;
- a Redis Cluster: `redis+cluster://[user:password@]host:port[,host:port...]` (seed nodes; the
  rest is learnt from the cluster), `rediss+cluster://` over TLS;
- a service behind Redis Sentinel: `redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]`
  (the sentinels; they name the current primary), `rediss+sentinel://` over TLS to both. The
  password is the data nodes'; sentinels with one of their own take redis_sentinel_password.
"""

import ssl
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from attrs import frozen

DEFAULT_PORT = 6379
SENTINEL_PORT = 26379
TOPOLOGIES = {
    "redis": ("server", False), "rediss": ("server", True), "unix": ("socket", False),
    "redis+cluster": ("cluster", False), "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False), "rediss+sentinel": ("sentinel", True),
}
SCHEMES = ", ".join(f"{scheme}://" for scheme in TOPOLOGIES)


@frozen
class RedisTarget:
    topology: str  # "server", "socket", "cluster" or "sentinel"
    tls: bool
    nodes: tuple[tuple[str, int], ...] = ()  # the server, the cluster's seed nodes, or the sentinels
    socket: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    service: str = ""  # the name the sentinels know the primary by


def parse_redis_url(url: str) -> RedisTarget:
    """The target `url` names; ValueError with the reason (for one line naming the setting)."""
    scheme, _, rest = url.partition("://")
    if scheme not in TOPOLOGIES:
        raise ValueError(f"must start with one of {SCHEMES}")
    topology, tls = TOPOLOGIES[scheme]
    if not rest.strip("/"):
        raise ValueError("names no socket path (unix:///path/to/redis.sock)" if topology == "socket" else "names no host")
    # Credentials end at the last "@": a password holding "/", "?" or "#" unencoded must never
    # be read as a path or query, whose text an error would repeat.
    credentials, _, located = rest.rpartition("@")
    username, _, password = credentials.partition(":")
    parts = urllib.parse.urlsplit("//" + located)
    hosts = parts.netloc
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    if set(query) - {"db"}:
        raise ValueError("has query parameters other than db; TLS files go in redis_tls_ca, redis_tls_cert "
                         "and redis_tls_key, the sentinels' own password in redis_sentinel_password")
    path = [segment for segment in parts.path.split("/") if segment]
    fields = {
        "username": urllib.parse.unquote(username) or None,
        "password": urllib.parse.unquote(password) or None,
    }
    if topology == "socket":
        if hosts or not parts.path:
            raise ValueError("names no socket path (unix:///path/to/redis.sock)")
        return RedisTarget("socket", False, socket=urllib.parse.unquote(parts.path), db=_db(query.get("db", ["0"])[0]), **fields)
    nodes = tuple(_node(node, SENTINEL_PORT if topology == "sentinel" else DEFAULT_PORT) for node in hosts.split(","))
    if topology == "server" and len(nodes) > 1:
        raise ValueError(f"names several hosts; for a cluster or sentinels use {scheme}+cluster:// or {scheme}+sentinel://")
    service = ""
    if topology == "sentinel":
        if not path:
            raise ValueError("names no service: redis+sentinel://host:port[,host:port]/service_name[/db]")
        service = urllib.parse.unquote(path.pop(0))
    db = _db(path[0] if path else query.get("db", ["0"])[0]) if len(path) <= 1 else _db("/".join(path))
    if topology == "cluster" and db != 0:
        raise ValueError("names a database other than 0; a Redis Cluster has only database 0")
    return RedisTarget(topology, tls, nodes, db=db, service=service, **fields)


def _node(text: str, default_port: int) -> tuple[str, int]:
    parts = urllib.parse.urlsplit("//" + text)
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has a port that is not a number") from None
    if not parts.hostname:
        raise ValueError("names no host")
    return parts.hostname, port or default_port


def _db(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"names database {text!r}; a database is a number (e.g. /0)")
    return int(text)


class TlsFileError(ValueError):
    """A TLS file that cannot be used; `setting` names the key that gave it."""

    def __init__(self, setting: str, reason: str) -> None:
        super().__init__(reason)
        self.setting = setting


def tls_context(ca: str = "", cert: str = "", key: str = "") -> ssl.SSLContext:
    """A client TLS context that checks the server's certificate and name: against `ca` (a PEM
    file of the private CA that signed it) or, without one, the system's CAs; `cert` and `key`
    present a client certificate to servers that ask for one (Redis does by default)."""
    context = ssl.create_default_context()
    if ca:
        with _reading("redis_tls_ca", ca):
            context.load_verify_locations(cafile=ca)
    if key:
        with _reading("redis_tls_key", key):
            Path(key).read_bytes()
    if cert:
        with _reading("redis_tls_cert", cert, f"{cert!r} with redis_tls_key {key!r} is not a usable PEM certificate and key"):
            context.load_cert_chain(cert, key or None)
    return context


@contextmanager
def _reading(setting: str, path: str, unusable: str = "") -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:
        raise TlsFileError(setting, f"no such file {path!r}") from None
    except ssl.SSLError as error:
        raise TlsFileError(setting, f"{unusable or f'{path!r} is not usable PEM'} ({error.reason or error})") from None
    except OSError as error:
        raise TlsFileError(setting, f"cannot read {path!r} ({error.strerror or error})") from None
