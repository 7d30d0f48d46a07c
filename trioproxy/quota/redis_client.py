"""The coredis client for `redis_url` (see `redis_target`): one server over TCP, TLS or a unix
socket, a Redis Cluster, or the primary that Redis Sentinel names (and names again after a
failover). Every client answers within the store's timeout and leaves retrying to the store."""

import ssl
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import coredis
from attrs import frozen
from coredis.connection import TCPLocation
from coredis.exceptions import RedisError
from coredis.retry import NoRetryPolicy

from .redis_target import parse_redis_url, tls_context

Client = coredis.Redis[str] | coredis.RedisCluster[str]


class QuotaStoreError(Exception):
    """Redis cannot be used at start; the message is one line naming the setting."""


@frozen
class TlsFiles:
    """PEM files for rediss:// (settings redis_tls_ca, redis_tls_cert, redis_tls_key)."""

    ca: str = ""
    cert: str = ""
    key: str = ""


@asynccontextmanager
async def open_redis(url: str, tls: TlsFiles, timeout: float) -> AsyncIterator[Client]:
    """The client, open for the duration of the block."""
    target = parse_redis_url(url)  # the settings checked it already; this cannot fail here
    options: dict[str, Any] = {
        "decode_responses": True,
        "connect_timeout": timeout,
        "stream_timeout": timeout,
        "retry_policy": NoRetryPolicy(),
        "username": target.username,
        "password": target.password,
    }
    encryption = {"ssl_context": tls_context(tls.ca, tls.cert, tls.key)} if target.tls else {}
    nodes = [TCPLocation(host, port) for host, port in target.nodes]
    async with AsyncExitStack() as stack:
        if target.topology == "cluster":
            client: Client = coredis.RedisCluster(startup_nodes=nodes, **options, **encryption)
            try:  # unlike the others, a cluster client asks for the layout as it opens
                await stack.enter_async_context(client)
            except (RedisError, OSError) as error:
                raise QuotaStoreError(f"redis_url: cannot reach the Redis Cluster at {', '.join(map(str, nodes))} "
                                      f"({explain(error)}); trioproxy learns a cluster's layout at start") from None
            yield client
            return
        if target.topology == "sentinel":
            # The sentinels answer on their own ports without the data nodes' password.
            sentinel_options = {"connect_timeout": timeout, "stream_timeout": timeout, **encryption}
            sentinel = coredis.Sentinel(nodes, sentinel_kwargs=sentinel_options, db=target.db, **options, **encryption)
            await stack.enter_async_context(sentinel)
            client = sentinel.primary_for(target.service)
        elif target.topology == "socket":
            client = coredis.Redis(unix_socket_path=target.socket, db=target.db, **options)
        else:
            client = coredis.Redis(nodes[0].host, nodes[0].port, target.db, **options, **encryption)
        await stack.enter_async_context(client)
        yield client


def explain(error: BaseException) -> str:
    """Why Redis could not be used, in words an operator can act on: a TLS failure arrives
    as coredis's connection error with the reason underneath."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            hint = ("the certificate must name the host redis_url names" if "mismatch" in str(cause.verify_message)
                    else "redis_tls_ca must name the CA that signed it")
            return f"its TLS certificate is not trusted: {cause.verify_message}; {hint}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS failed: {cause.reason or cause}"
        cause = cause.__cause__ or cause.__context__
    return str(error) or "no answer in time"
