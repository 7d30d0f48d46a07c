"""Two trioproxy processes' worth of proxies spending one Cerebras key through one real Redis."""

import os
import sys
from pathlib import Path

import attrs
import pytest
import trio

from support.chat import chat, client_for, post
from support.proxies import Providers, Proxy, StartProxy, proxy_config
from support.redis_ledgers import alternate
from trioproxy.config.schema import Config
from trioproxy.cli.status_table import render_table
from trioproxy.process.supervisor import run_proxy
from trioproxy.testing.ports import free_port
from trioproxy.testing.redis_server import RedisServer, running_redis


async def test_two_proxies_on_one_redis_never_meet_a_429_where_one_would_not(
    providers: Providers, start_proxy: StartProxy, redis: RedisServer
) -> None:
    providers.cerebras.requests_per_minute = 6
    # A generous timeout: on a busy machine a slow answer must not switch to the local buckets here.
    shared = {"quota_backend": "redis", "redis_url": redis.url, "redis_timeout_ms": 10_000, "cerebras": {"requests_per_minute": 6}}
    proxies = [await start_proxy(**shared, redis_key_prefix="e2e:") for _ in range(2)]
    statuses = await alternate(proxies, 16)
    assert statuses == [200] * 16
    assert providers.cerebras.served == 6
    assert len(providers.cerebras.received) == 6  # no request wasted on a 429
    assert providers.chutes.served == 10
    async with client_for(proxies[1]) as client:
        status = (await client.get("/status")).json()
    store = status["quota_store"]
    assert store["backend"] == "redis" and store["connected"] is True and store["outages"] == 0
    cerebras = next(p for p in status["providers"] if p["name"] == "cerebras")
    assert cerebras["accounts"]["cerebras"]["rpm"]["used"] == 6  # both proxies' bookings, seen by either
    assert f"quota: shared in Redis {redis.url}, connected, outages 0" in render_table(status)


async def test_the_same_two_proxies_with_memory_ledgers_each_spend_the_whole_quota(
    providers: Providers, start_proxy: StartProxy
) -> None:
    """The control: without a shared ledger each proxy believes it owns the key."""
    providers.cerebras.requests_per_minute = 6
    proxies = [await start_proxy(cerebras={"requests_per_minute": 6}) for _ in range(2)]
    statuses = await alternate(proxies, 16)
    assert statuses == [200] * 16  # Chutes catches the rest, after a wasted round trip each
    assert providers.cerebras.served == 6
    assert len(providers.cerebras.received) > 6


async def test_metrics_and_healthz_show_the_quota_store(providers: Providers, start_proxy: StartProxy, redis: RedisServer) -> None:
    proxy = await start_proxy(quota_backend="redis", redis_url=redis.url, redis_timeout_ms=5_000)
    async with client_for(proxy) as client:
        metrics = (await client.get(proxy.base_url.removesuffix("/v1") + "/metrics")).text
        assert "trioproxy_quota_store_up 1.0" in metrics
        redis.stop()
        assert (await post(client, chat(max_tokens=10))).status_code == 200  # served on local buckets
        health = (await client.get(proxy.base_url.removesuffix("/v1") + "/healthz")).json()
        assert health["quota_store"]["connected"] is False and health["quota_store"]["outages"] == 1
        metrics = (await client.get(proxy.base_url.removesuffix("/v1") + "/metrics")).text
        assert "trioproxy_quota_store_up 0.0" in metrics and "trioproxy_quota_store_outages 1.0" in metrics
        redis.start()
        with trio.fail_after(15):
            while not (await client.get("/status")).json()["quota_store"]["connected"]:
                await trio.sleep(0.05)


@pytest.mark.xdist_group("processes")
async def test_a_refused_redis_password_stops_the_start_in_one_line_without_the_password(tmp_path: Path) -> None:
    with running_redis(tmp_path, password="the-right-one") as server:
        env = {**os.environ, "CEREBRAS_API_KEY": "csk-start-test", "REDIS_URL": server.url.replace("the-right-one", "a-wrong-secret")}
        settings = tmp_path / "shared.toml"
        settings.write_text('quota_backend = "redis"\nstate_file = ""\nport = 0\n')
        command = [sys.executable, "-m", "trioproxy", "--config", str(settings)]
        result = await trio.run_process(command, capture_stderr=True, check=False, env=env)
    message = result.stderr.decode()
    assert result.returncode == 2
    assert message.startswith("trioproxy: redis_url: Redis refused the credentials") and message.count("\n") == 1
    assert "a-wrong-secret" not in message


@pytest.mark.xdist_group("processes")
async def test_a_redis_url_that_does_not_parse_stops_the_start_naming_the_setting(tmp_path: Path) -> None:
    env = {**os.environ, "CEREBRAS_API_KEY": "csk-start-test", "REDIS_URL": "redis://127.0.0.1:notaport/0"}
    settings = tmp_path / "shared.toml"
    settings.write_text('quota_backend = "redis"\nstate_file = ""\n')
    command = [sys.executable, "-m", "trioproxy", "--config", str(settings)]
    result = await trio.run_process(command, capture_stderr=True, check=False, env=env)
    assert result.returncode == 2
    assert result.stderr.decode() == "trioproxy: redis_url: has a port that is not a number (from environment variable REDIS_URL)\n"


@pytest.mark.parametrize(("before", "after", "kept"), [("memory", "redis", "memory"), ("redis", "memory", "redis")])
async def test_a_reload_keeps_the_quota_backend_until_a_restart(
    providers: Providers, redis: RedisServer, caplog: pytest.LogCaptureFixture, before: str, after: str, kept: str
) -> None:
    """The state file and Redis are not converted into each other: a reload says so and keeps the ledger."""
    config = proxy_config(providers, quota_backend=before, redis_url=redis.url)
    send_reloads, receive_reloads = trio.open_memory_channel[Config](1)
    async with trio.open_nursery() as nursery:
        shutdown = trio.Event()
        proxy = Proxy(await nursery.start(run_proxy, config, shutdown, receive_reloads), config, shutdown)
        async with client_for(proxy) as client:
            await send_reloads.send(attrs.evolve(config, quota_backend=after))
            with trio.fail_after(10):
                while "configuration reloaded" not in caplog.text:
                    await trio.sleep(0.02)
            assert (await client.get("/status")).json()["quota_store"]["backend"] == kept
            assert (await post(client, chat(max_tokens=5))).status_code == 200
        shutdown.set()
    assert f'reload: quota_backend = "{after}" takes effect after a restart' in caplog.text


async def test_a_reload_to_a_redis_that_cannot_be_used_is_refused_and_the_proxy_serves_on(
    providers: Providers, redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """With "refuse", a new redis_url nobody answers at stops a start; on a reload it must not
    stop the running proxy: the reload is refused and the shared ledger it had keeps serving."""
    config = proxy_config(providers, quota_backend="redis", redis_url=redis.url, redis_outage="refuse")
    send_reloads, receive_reloads = trio.open_memory_channel[Config](1)
    async with trio.open_nursery() as nursery:
        shutdown = trio.Event()
        proxy = Proxy(await nursery.start(run_proxy, config, shutdown, receive_reloads), config, shutdown)
        async with client_for(proxy) as client:
            await send_reloads.send(attrs.evolve(config, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
            with trio.fail_after(10):
                while "reload refused" not in caplog.text:
                    await trio.sleep(0.02)
            status = (await client.get("/status")).json()["quota_store"]
            assert status["url"] == redis.url and status["connected"]
            assert (await post(client, chat(max_tokens=5))).status_code == 200
        shutdown.set()
    assert "redis_url: cannot reach Redis" in caplog.text
