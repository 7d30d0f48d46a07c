"""The coredis client for `redis_url` (see `config.redis_target`): one server over TCP, TLS or a unix
socket, a Redis Cluster, or the primary that Redis Sentinel names (and names again after a
failover). Every client answers within the store's timeout and leaves retrying to the store."""

import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import coredis
import trio
from attrs import field, frozen
from coredis.connection import TCPLocation
from coredis.exceptions import AuthenticationError, AuthenticationRequiredError, RedisClusterError, RedisError, ResponseError
from coredis.retry import NoRetryPolicy

from ...config.redis_target import parse_redis_url, tls_context

log = logging.getLogger("trioproxy.quota")

Client = coredis.Redis[str] | coredis.RedisCluster[str]
MAX_PAUSE = 5.0  # between attempts to open a cluster client that found no node at start


class QuotaStoreError(Exception):
    """Redis cannot be used at start; the message is one line naming the setting."""


@frozen
class RedisAccess:
    """What reaching Redis takes besides `redis_url`: PEM files for rediss:// (settings
    redis_tls_ca, redis_tls_cert, redis_tls_key) and the sentinels' own password
    (redis_sentinel_password; the URL's password is the data nodes')."""

    ca: str = ""
    cert: str = ""
    key: str = ""
    sentinel_password: str = field(default="", repr=False)




@asynccontextmanager
async def open_redis(url: str, access: RedisAccess, timeout: float, allow_start_without: bool) -> AsyncIterator[Client]:
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
    encryption = {"ssl_context": tls_context(access.ca, access.cert, access.key)} if target.tls else {}
    nodes = [TCPLocation(host, port) for host, port in target.nodes]
    if target.topology == "cluster":
        cluster: coredis.RedisCluster[str] = coredis.RedisCluster(startup_nodes=nodes, **options, **encryption)
        async with trio.open_nursery() as nursery:
            await nursery.start(_keep_cluster_open, cluster, nodes, allow_start_without)
            yield cluster
            nursery.cancel_scope.cancel()
        return
    async with AsyncExitStack() as stack:
        if target.topology == "sentinel":
            # The sentinels answer on their own ports, with a password of their own if any.
            sentinel_options = {"connect_timeout": timeout, "stream_timeout": timeout,
                                "password": access.sentinel_password or None, **encryption}
            sentinel = coredis.Sentinel(nodes, sentinel_kwargs=sentinel_options, db=target.db, **options, **encryption)
            await stack.enter_async_context(sentinel)
            await _check_sentinel_password(sentinel, target.service, nodes, timeout)
            client = sentinel.primary_for(target.service)
        elif target.topology == "socket":
            client = coredis.Redis(unix_socket_path=target.socket, db=target.db, **options)
        else:
            client = coredis.Redis(nodes[0].host, nodes[0].port, target.db, **options, **encryption)
        await stack.enter_async_context(client)
        yield client


async def _check_sentinel_password(sentinel: coredis.Sentinel[str], service: str, nodes: list[TCPLocation], timeout: float) -> None:
    """Ask the sentinels once for the primary, so that one refusing its password stops the start
    in one line naming redis_sentinel_password (the client would report it as the data nodes'
    credentials). Every other failure is the store's to judge, as Redis being unreachable."""
    where = ", ".join(map(str, nodes))
    with trio.move_on_after(timeout):
        try:
            await sentinel.discover_primary(service)
        except AuthenticationRequiredError:
            raise QuotaStoreError(f"redis_sentinel_password: the sentinels at {where} ask for a password; "
                                  "set redis_sentinel_password (or REDIS_SENTINEL_PASSWORD)") from None
        except AuthenticationError as error:
            raise QuotaStoreError(f"redis_sentinel_password: the sentinels at {where} refused it ({error})") from None
        except (RedisError, OSError):
            pass


async def _keep_cluster_open(
    cluster: coredis.RedisCluster[str], nodes: list[TCPLocation], allow_start_without: bool, *, task_status: trio.TaskStatus[None]
) -> None:
    """Hold the cluster client open while the store uses it. Unlike the others it asks for the
    layout as it opens: when no node answers at start, either that stops the start, or the
    store starts without Redis (the client's commands fail as in an outage, so the store's own
    reconnecting applies) while this opens it again with growing pauses."""
    starting, pause = True, 0.1
    while True:
        try:
            async with cluster:
                if starting:
                    starting = False
                    task_status.started()
                pause = 0.1
                await trio.sleep_forever()
        except (RedisError, OSError) as error:
            if starting:
                where = f"the Redis Cluster at {', '.join(map(str, nodes))}"
                if not allow_start_without:
                    raise QuotaStoreError(f"redis_url: cannot reach {where} ({explain(error)})") from None
                # The store's warning can only say no node answered; this says why.
                log.warning("cannot reach %s (%s); trying again in the background", where, explain(error))
                starting = False
                task_status.started()
        await trio.sleep(pause)
        pause = min(pause * 2, MAX_PAUSE)


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
    if isinstance(error, RedisClusterError) and not isinstance(error, ResponseError):
        return "no node of the cluster answered"  # coredis's words for it vary with the command
    return str(error) or "no answer in time"
