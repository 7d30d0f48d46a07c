"""The shared ledger through every way of reaching Redis, each a real deployment: TLS with a
private CA and client certificates, a unix socket, Sentinel (with a failover), a Redis Cluster."""

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from support.proxies import Providers, StartProxy
from support.redis_deployments import (
    DATA_PASSWORD,
    DEPLOYMENTS,
    Deployment,
    cluster_ports,
    keys_on,
    primary_of,
    redis_cluster,
    replicated,
    sentinel_redis,
    slot_of,
    tls_redis,
)
from support.redis_ledgers import Clock, alternate, cerebras, start_unwrapped
from trioproxy.config.schema import Config, ProviderConfig
from trioproxy.quota.contract import Refusal, Reservation
from trioproxy.quota.redis.client import QuotaStoreError, RedisAccess
from trioproxy.quota.redis.client_figures import RedisClientFigures
from trioproxy.quota.redis.ledger import RedisLedger, SharedReservation
from trioproxy.quota.redis.prompt_stream import RedisPromptStream
from trioproxy.quota.redis.store import QuotaStore
from trioproxy.testing.ports import free_port

pytestmark = pytest.mark.xdist_group("redis_deployments")  # on one worker: each deployment (a module fixture) is started once


def other(name: str, **limits: Any) -> ProviderConfig:
    """A provider named so that its keys land in another cluster slot than Cerebras's: with three
    primaries, {cerebras} is on the first, {fireworks} on the second, {together} on the third."""
    return attrs.evolve(Config().chutes, name=name, api_key=f"key-{name}", **limits)


async def ledger(nursery: trio.Nursery, deployment: Deployment, providers: list[ProviderConfig], clock: Clock | None,
                 name: str, *, access: RedisAccess | None = None, policy: str = "local", prefix: str = "deploy:") -> RedisLedger:
    store = QuotaStore(deployment.url, 10.0, allow_start_without=policy == "local", clock=clock,
                       access=deployment.access if access is None else access)
    await nursery.start(store.run)
    return RedisLedger(providers, store, prefix=prefix, outage_policy=policy, replicas=2, lease_seconds=60.0, replica=name)


@pytest.fixture(scope="module", params=sorted(DEPLOYMENTS))
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """One of each deployment for this module's tests (a cluster takes 2-3 s to join); each test
    keeps to keys of its own (`prefix`)."""
    with DEPLOYMENTS[request.param](tmp_path_factory.mktemp(request.param)) as running:
        yield running


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}:"


async def test_concurrent_reservations_from_two_ledgers_never_overshoot(nursery: trio.Nursery, deployment: Deployment, prefix: str) -> None:
    clock = Clock()
    providers = [cerebras(requests_per_minute=10), other("fireworks", requests_per_minute=4), other("together", requests_per_minute=3)]
    a, b = [await ledger(nursery, deployment, providers, clock, name, prefix=prefix) for name in ("a", "b")]
    results: dict[str, list[Reservation | Refusal]] = {p.name: [] for p in providers}

    async def ask(replica: RedisLedger, provider: str) -> None:
        results[provider].append(await replica.reserve(provider, 100))

    async with trio.open_nursery() as burst:
        for i in range(90):
            burst.start_soon(ask, (a, b)[i % 2], providers[i % 3].name)
    granted = {name: [r for r in answers if isinstance(r, SharedReservation)] for name, answers in results.items()}
    assert {name: len(answers) for name, answers in results.items()} == {"cerebras": 30, "fireworks": 30, "together": 30}
    assert {name: len(bookings) for name, bookings in granted.items()} == {"cerebras": 10, "fireworks": 4, "together": 3}
    assert sorted(r.seq for r in granted["cerebras"]) == list(range(1, 11))  # one booking order across both
    assert a.store.connected and b.store.connected


async def test_header_figures_and_cooldowns_reach_the_other_ledger(nursery: trio.Nursery, deployment: Deployment, prefix: str) -> None:
    clock = Clock()
    providers = [cerebras(tokens_per_minute=100_000), other("together")]
    a, b = [await ledger(nursery, deployment, providers, clock, name, prefix=prefix) for name in ("a", "b")]
    first = await a.reserve("cerebras", 1_000)
    assert isinstance(first, SharedReservation)
    await a.sync(first, {"tpm": (2_000.0, 30.0)})  # the provider says far less is left
    await a.store.drained()
    assert isinstance(await b.reserve("cerebras", 1_500), SharedReservation)
    refused = await b.reserve("cerebras", 1_000)
    assert isinstance(refused, Refusal) and refused.reason == "tpm"
    assert await a.start_cooldown("together", a.now() + 60, "429 tokens")
    cooling = await b.reserve("together", 10)
    assert isinstance(cooling, Refusal) and cooling.reason == "cooldown"
    assert b.in_cooldown("together") and b.snapshot("together")["cooldown_reason"] == "429 tokens"


async def test_the_replicas_exchanges_work_through_each_deployment(nursery: trio.Nursery, deployment: Deployment, prefix: str) -> None:
    """The prompt stream (read with Redis's time, which a cluster client cannot ask for on its
    own: the read is keyed on the stream) and the clients' figures, between two stores."""
    a, b = [await ledger(nursery, deployment, [cerebras()], Clock(), name, prefix=prefix) for name in ("a", "b")]
    streams = [RedisPromptStream(a.store, prefix), RedisPromptStream(b.store, prefix)]
    for stream in streams:  # the first round only finds where the stream ends
        assert await stream.exchange(None, 60) == []
    assert await streams[0].exchange("turn 1", 60) == []  # its own message is not read back
    [(message, age)] = await streams[1].exchange(None, 60) or [("", -1.0)]
    assert message == "turn 1" and 0 <= age < 5
    assert a.store.connected and b.store.connected

    figures = [RedisClientFigures(a.store, prefix), RedisClientFigures(b.store, prefix)]
    assert await figures[0].exchange("a", "figures of a", {("agent", "route", "cerebras"): [1, 10, 0, 0, 5, 0]}) is not None
    answer = await figures[1].exchange("b", "figures of b", {("agent", "route", "cerebras"): [1, 0, 0, 0, 0, 0]})
    assert answer is not None
    published, usage = answer
    assert published == {"a": "figures of a", "b": "figures of b"}
    assert usage == {("agent", "route", "cerebras"): [2, 10, 0, 0, 5, 0]}
    assert a.store.connected and b.store.connected


async def test_a_cluster_spreads_the_providers_over_its_primaries(nursery: trio.Nursery, tmp_path: Path) -> None:
    """Each provider's keys stay in one slot (one script call touches them all), and different
    providers live on different primaries: the client follows the cluster's layout."""
    with redis_cluster(tmp_path) as cluster:
        providers = [cerebras(requests_per_minute=5), other("fireworks", requests_per_minute=5), other("together", requests_per_minute=5)]
        replica = await ledger(nursery, cluster, providers, Clock(), "a")
        for provider in providers:
            assert isinstance(await replica.reserve(provider.name, 10), SharedReservation)
        assert [keys_on(port) > 0 for port in cluster.ports.values()] == [True, True, True]
        port = cluster.ports["node0"]
        slots = {provider.name: {slot_of(port, key) for key in replica._lanes[provider.name][0]} for provider in providers}
        assert [len(provider_slots) for provider_slots in slots.values()] == [1, 1, 1]  # the keys of every call


@pytest.mark.parametrize("passwords", [False, True], ids=["open", "passwords"])
async def test_the_ledger_follows_a_sentinel_failover_and_keeps_the_bookings(nursery: trio.Nursery, tmp_path: Path, passwords: bool) -> None:
    """With `passwords`, the data nodes and the sentinel each have their own: after the failover
    the client asks the sentinel again (its password) and reaches the promoted replica (the URL's)."""
    with sentinel_redis(tmp_path, passwords=passwords) as deployment:
        clock = Clock()
        a, b = [await ledger(nursery, deployment, [cerebras(requests_per_minute=6)], clock, name) for name in ("a", "b")]
        for replica in (a, b, a, b):
            assert isinstance(await replica.reserve("cerebras", 10), SharedReservation)
        ports = deployment.ports
        with trio.fail_after(10):
            while not replicated(ports["primary"], ports["replica"], DATA_PASSWORD if passwords else ""):
                await trio.sleep(0.02)
        deployment.processes["primary"].kill()  # kill -9: the sentinel promotes the replica
        with trio.fail_after(30):
            while primary_of(ports["sentinel"], deployment.access.sentinel_password) != ports["replica"]:
                await trio.sleep(0.1)
            for replica in (a, b):
                await replica.refresh()  # notices the dead primary, if no request has yet
                while not replica.store.connected:
                    await trio.sleep(0.05)
        granted = [await replica.reserve("cerebras", 10) for replica in (b, a, b)]
        # 4 + 2 = the 6 a minute. (Whether a ledger counted an outage depends on timing: one
        # whose connection was seen closed before its next call just reconnects through the sentinel.)
        assert [isinstance(r, SharedReservation) for r in granted] == [True, True, False]


@pytest.mark.parametrize("kind", ["tls", "tls-cluster"])
async def test_tls_with_the_wrong_ca_refuses_to_start_in_one_line(tmp_path: Path, kind: str) -> None:
    with DEPLOYMENTS[kind](tmp_path) as deployment:
        wrong = attrs.evolve(deployment.access, ca=deployment.wrong_ca)
        with pytest.raises(QuotaStoreError) as refused:
            await start_unwrapped(QuotaStore(deployment.url, 10.0, allow_start_without=False, access=wrong))
    message = str(refused.value)
    where = f"Redis at {deployment.url}" if kind == "tls" else "the Redis Cluster at 127.0.0.1:"
    assert message.startswith(f"redis_url: cannot reach {where}")
    assert "(its TLS certificate is not trusted: self-signed certificate in certificate chain; " in message
    assert message.endswith("redis_tls_ca must name the CA that signed it)") and "\n" not in message


async def test_tls_with_the_wrong_ca_starts_on_local_buckets_with_a_loud_warning(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with tls_redis(tmp_path) as deployment:
        wrong = attrs.evolve(deployment.access, ca=deployment.wrong_ca)
        replica = await ledger(nursery, deployment, [cerebras(requests_per_minute=6)], None, "a", access=wrong)
        local = await replica.reserve("cerebras", 10)
    assert isinstance(local, Reservation) and not isinstance(local, SharedReservation)
    assert not replica.store.connected
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(w.startswith("QUOTA IS NOT SHARED") and "TLS certificate is not trusted" in w for w in warnings)


async def test_a_cluster_that_does_not_answer_at_start_stops_it_in_one_line_with_the_refuse_policy() -> None:
    down = QuotaStore(f"redis+cluster://127.0.0.1:{free_port()}", 10.0, allow_start_without=False)
    with pytest.raises(QuotaStoreError, match=r"^redis_url: cannot reach the Redis Cluster at 127\.0\.0\.1:\d+ \(.+\)$"):
        await start_unwrapped(down)


async def test_with_the_local_policy_ledgers_start_before_their_cluster_and_share_once_it_answers(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ports = cluster_ports()
    early = Deployment(f"redis+cluster://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}")
    clock = Clock()
    a, b = [await ledger(nursery, early, [cerebras(requests_per_minute=4)], clock, name) for name in ("a", "b")]
    local = await a.reserve("cerebras", 10)
    assert isinstance(local, Reservation) and not isinstance(local, SharedReservation)
    assert any(r.getMessage().startswith("QUOTA IS NOT SHARED: cannot reach Redis at redis+cluster://") for r in caplog.records)
    with redis_cluster(tmp_path, ports=ports):
        with trio.fail_after(30):
            while not (a.store.connected and b.store.connected):
                await trio.sleep(0.05)
        granted = [await replica.reserve("cerebras", 10) for replica in (a, b, a, b, a)]
    assert [isinstance(r, SharedReservation) for r in granted] == [True, True, True, True, False]


async def test_two_proxies_spend_one_key_through_each_deployment(
    providers: Providers, start_proxy: StartProxy, deployment: Deployment, prefix: str
) -> None:
    """From the settings (redis_url, the TLS files, the sentinels' password) to the served answers."""
    providers.cerebras.requests_per_minute = 6
    tls = {f"redis_tls_{name}": getattr(deployment.access, name) for name in ("ca", "cert", "key")}
    shared = {"quota_backend": "redis", "redis_url": deployment.url, "redis_timeout_ms": 10_000,
              "redis_sentinel_password": deployment.access.sentinel_password, **tls}
    proxies = [await start_proxy(**shared, redis_key_prefix=prefix, cerebras={"requests_per_minute": 6}) for _ in range(2)]
    assert await alternate(proxies, 12) == [200] * 12
    assert providers.cerebras.served == 6
    assert len(providers.cerebras.received) == 6  # no request wasted on a 429
    assert providers.chutes.served == 6


async def test_a_wrong_tls_ca_stops_the_start_in_one_line(tmp_path: Path) -> None:
    with tls_redis(tmp_path / "redis") as deployment:
        settings = tmp_path / "tls.toml"
        settings.write_text(
            'quota_backend = "redis"\nredis_outage = "refuse"\nstate_file = ""\nport = 0\n'
            f'redis_tls_ca = "{deployment.wrong_ca}"\nredis_tls_cert = "{deployment.access.cert}"\nredis_tls_key = "{deployment.access.key}"\n'
        )
        env = {**os.environ, "CEREBRAS_API_KEY": "csk-start-test", "REDIS_URL": deployment.url}
        command = [sys.executable, "-m", "trioproxy", "--config", str(settings)]
        result = await trio.run_process(command, capture_stderr=True, check=False, env=env)
    message = result.stderr.decode()
    assert result.returncode == 2
    assert message.startswith(f"trioproxy: redis_url: cannot reach Redis at {deployment.url} (its TLS certificate is not trusted")
    assert message.count("\n") == 1
