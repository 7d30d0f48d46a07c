"""Fixtures: emulated providers and trioproxy, all real HTTP servers on 127.0.0.1, port 0."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

pytest.register_assert_rewrite("support")  # the helpers' asserts explain themselves as tests' do

from support.leftovers import end_left_behind
from support.proxies import Providers, Proxy, StartProxy, proxy_config
from trioproxy.process.supervisor import run_proxy
from trioproxy.testing import emulator
from trioproxy.testing.redis_server import RedisServer, running_redis


@pytest.fixture
async def providers(nursery: trio.Nursery) -> Providers:
    cerebras = emulator.cerebras()
    chutes = emulator.chutes()
    cerebras_url = await nursery.start(emulator.serve, cerebras)
    chutes_url = await nursery.start(emulator.serve, chutes)
    return Providers(cerebras, chutes, cerebras_url, chutes_url)


@pytest.fixture
def start_proxy(nursery: trio.Nursery, providers: Providers) -> StartProxy:
    """Start a trioproxy with settings overridden as in `proxy_config`; returns a Proxy."""

    async def start(**overrides: Any) -> Proxy:
        config = proxy_config(providers, **overrides)
        shutdown = trio.Event()
        base_url = await nursery.start(run_proxy, config, shutdown)
        return Proxy(base_url, config, shutdown)

    return start


@pytest.fixture
async def proxy(start_proxy: StartProxy) -> Proxy:
    return await start_proxy()


@pytest.fixture
def patient_clock() -> trio.testing.MockClock:
    """Trio's mock clock for tests that talk to a real Redis: it jumps only after 0.3 s in which
    nothing happened, so waiting on Redis's socket does not move it."""
    return trio.testing.MockClock(autojump_threshold=0.3)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server of this test's own (scripts/test installs Debian's package)."""
    with running_redis(tmp_path) as server:
        yield server


@pytest.fixture(autouse=True)
def no_process_outlives_its_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that leaves a process running fails, and the process is killed: found by the
    test's tmp_path on its command line (a daemon that detached after the test gave up on it,
    its workers). Only tests with a tmp_path can start one that holds it."""
    if "tmp_path" not in request.fixturenames:
        yield
        return
    directory: Path = request.getfixturevalue("tmp_path")
    yield
    left = trio.run(end_left_behind, directory)
    assert not left, f"the test left these running (killed now): {left}"


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The same over this run's whole temporary root, at its end: module and session fixtures'
    directories too (each run, and each xdist worker, has a root of its own)."""
    yield
    left = trio.run(end_left_behind, tmp_path_factory.getbasetemp())
    assert not left, f"the tests left these running (killed now): {left}"
