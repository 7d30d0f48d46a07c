"""`trioproxy --workers 2` on one real Redis, as an operator runs it: a worker killed with
kill -9 in the middle of streams, and the supervisor as a daemon."""

import os
import re
import signal
import socket
from pathlib import Path

import pytest
import trio

from support.chat import chat, sized_messages
from support.command import run
from support.leftovers import kill_holding
from support.processes import (
    Outcome,
    account,
    client,
    environment,
    get_json,
    proxy_process,
    request,
    until,
    write_settings,
)
from support.proxies import Providers
from support.workers import alive
from trioproxy.testing.ports import free_port
from trioproxy.testing.redis_server import RedisServer

pytestmark = pytest.mark.xdist_group("processes")  # starts trioproxy processes: one at a time (see scripts/test)

PROMPT_TOKENS = 100  # what a killed request surely cost: its lease keeps this much (the floor)
STREAMS = 8
LATE_STREAMS = 2  # started on the surviving worker right after the kill
LEASE_SECONDS = 3.0


def running(pid: int) -> bool:
    """Whether `pid` is alive and not a zombie (an orphan's may wait for a container's init)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def replica(pid: int) -> str:
    return f"{socket.gethostname()}/{pid}"


async def leases(root: str) -> dict[str, int]:
    """Who holds Cerebras leases, as /v1/status shows the shared ledger."""
    return (await get_json(root, "/v1/status"))["quota_store"]["leases"].get("cerebras", {})


async def test_a_worker_killed_mid_stream_leaves_no_lease_and_no_double_count(
    providers: Providers, redis: RedisServer, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """kill -9 of the worker holding most of 8 streams' leases: the supervisor restarts it, the
    other worker serves throughout (streams across the restart, plain requests), the dead worker's leases expire after their TTL keeping
    only the prompt, and the day's tokens are exactly what was served plus those prompts."""
    providers.cerebras.completion_words, providers.cerebras.tokens_per_second = 30, 10.0  # 3 s streams
    port = free_port()
    settings = write_settings(
        tmp_path / "workers.toml", providers,
        {"requests_per_minute": 100_000, "tokens_per_minute": 100_000_000, "tokens_per_day": 100_000_000},
        port=port, quota_backend="redis", redis_url=redis.url, redis_timeout_ms=2000,
        redis_lease_ttl_ms=int(LEASE_SECONDS * 1000),
    )
    async with proxy_process(nursery, ["--config", str(settings), "--workers", "2"], environment(providers), port) as proxy:
        await proxy.log.wait_for(r"trioproxy serving", 2)
        pids = {int(m[1]): int(m[2]) for m in proxy.log.matching(r"worker (\d) started \(pid (\d+)\)")}
        body = chat(messages=sized_messages(PROMPT_TOKENS), max_tokens=50)
        streams: list[Outcome] = []

        async def one_stream() -> None:
            async with client(proxy.root) as c:  # a connection of its own: either worker may take it
                streams.append(await request(c, proxy.root, body, stream=True))

        async with trio.open_nursery() as streaming:
            for _ in range(STREAMS):
                streaming.start_soon(one_stream)
            await until(lambda: len(providers.cerebras.received) == STREAMS, "every stream reaches Cerebras")
            held: dict[str, int] = {}

            async def all_leases_shown() -> bool:
                nonlocal held
                held = await leases(proxy.root)
                return sum(held.values()) == STREAMS

            await until(all_leases_shown, f"{STREAMS} leases in /v1/status")
            number, victim = max(pids.items(), key=lambda item: held.get(replica(item[1]), 0))
            killed = held[replica(victim)]
            os.kill(victim, signal.SIGKILL)
            # The other worker serves at once, before the dead one is back: streams that run
            # across the restart, and plain requests.
            for _ in range(LATE_STREAMS):
                streaming.start_soon(one_stream)
            async with client(proxy.root) as c:
                during = [await request(c, proxy.root, chat(max_tokens=5), stream=False) for _ in range(2)]
            await proxy.log.wait_for(rf"worker {number} \(pid {victim}\) exited with signal SIGKILL; restarting")
            await proxy.log.wait_for(rf"worker {number} started \(pid (?!{victim}\))\d+\)")
            await proxy.log.wait_for(r"trioproxy serving", 3)

        broken = [s for s in streams if s.error]
        assert len(streams) == STREAMS + LATE_STREAMS
        assert len(broken) == killed  # the killed worker's streams, and no other
        assert [o.status for o in during] == [200, 200] and not any(o.error for o in during)
        async with client(proxy.root) as c:
            after = [await request(c, proxy.root, chat(max_tokens=5), stream=False) for _ in range(4)]
        assert not any(o.error for o in after)

        served = [o for o in [*streams, *during, *after] if not o.error]
        assert all(o.usage is not None for o in served)
        expected = sum(o.usage["total_tokens"] for o in served) + killed * PROMPT_TOKENS  # type: ignore[index]
        requests = STREAMS + LATE_STREAMS + len(during) + len(after)

        async def settled() -> bool:
            figures = account(await get_json(proxy.root, "/v1/status"))
            return (not await leases(proxy.root) and figures["tpd"]["used"] == expected
                    and figures["rpd"]["used"] == requests)

        # Each lease expires LEASE_SECONDS after its booking; a view runs every second; a share
        # a worker holds (requests booked ahead) goes back when it is returned or expires.
        await until(settled, f"no lease left, {expected} tokens and {requests} requests booked today", LEASE_SECONDS + 10)
        assert await redis_lease_count(redis) == 0


async def redis_lease_count(redis: RedisServer) -> int:
    """Leases as Redis itself holds them (each provider's `:leases` sorted set), whatever any
    trioproxy shows."""

    async def cli(*command: str) -> str:
        return (await trio.run_process(["redis-cli", "-p", str(redis.port), *command], capture_stdout=True)).stdout.decode()

    keys = (await cli("--scan")).split()
    assert keys, "the shared ledger keeps its accounts in Redis"
    return sum([int(await cli("ZCARD", key)) for key in keys if key.endswith(":leases")])


async def test_a_daemon_with_two_workers_reloads_them_all_and_stops(
    providers: Providers, redis: RedisServer, tmp_path: Path
) -> None:
    """--daemon --workers 2: the pidfile names the supervisor, SIGHUP to it reloads every
    worker (each shows the new limit), `trioproxy stop` drains them all and removes the pidfile."""
    port = free_port()

    def configure(requests_per_minute: int) -> Path:
        return write_settings(
            tmp_path / "daemon.toml", providers, {"requests_per_minute": requests_per_minute},
            port=port, quota_backend="redis", redis_url=redis.url, redis_timeout_ms=2000,
        )

    settings, pidfile, log_file = configure(600), tmp_path / "trioproxy.pid", tmp_path / "trioproxy.log"
    env, root = environment(providers), f"http://127.0.0.1:{port}"
    arguments = ["--config", str(settings), "--workers", "2", "--daemon", "--pidfile", str(pidfile), "--log-file", str(log_file)]
    try:
        started = await run(arguments, tmp_path, env)
        assert started.returncode == 0, started.stderr
        assert f"running in the background at {root}/v1" in started.stdout
        supervisor = int(pidfile.read_text())
        await until(lambda: log_file.read_text().count("trioproxy serving") == 2, "both workers serve")
        workers = [int(pid) for pid in re.findall(r"worker \d started \(pid (\d+)\)", log_file.read_text())]
        assert len(workers) == 2 and supervisor not in workers
        async with client(root) as c:
            assert (await c.post("/v1/chat/completions", json=chat(max_tokens=5))).status_code == 200

        configure(300)
        os.kill(supervisor, signal.SIGHUP)
        await until(lambda: log_file.read_text().count("configuration reloaded") == 2, "both workers reload")
        for _ in range(6):  # fresh connections, taken by either worker
            assert account(await get_json(root, "/v1/status"))["rpm"]["limit"] == 300

        stopped = await run(["stop", "--pidfile", str(pidfile), "--timeout", "30"], tmp_path, env)
        assert stopped.returncode == 0, stopped.stderr
        assert f"pid {supervisor}) stopped" in stopped.stdout
        assert not pidfile.exists()
        assert not any(alive(pid) for pid in [supervisor, *workers])
        assert len(re.findall(r"worker \d \(pid \d+\) stopped", log_file.read_text())) == 2
    finally:  # the supervisor and its workers, also when they came up after `run` gave up on them
        await kill_holding(tmp_path)


async def test_a_stop_while_a_dead_worker_waits_to_restart_ends_the_supervisor(
    providers: Providers, redis: RedisServer, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """SIGTERM during the pause before a restart: the worker is not started again, and the
    supervisor exits 0 once the other worker has drained (it used to start a worker nobody
    would stop, and wait for it forever)."""
    port = free_port()
    settings = write_settings(tmp_path / "w.toml", providers, port=port, quota_backend="redis", redis_url=redis.url)
    async with proxy_process(nursery, ["--config", str(settings), "--workers", "2"], environment(providers), port) as proxy:
        await proxy.log.wait_for(r"trioproxy serving", 2)
        victim = int(proxy.log.matching(r"worker 1 started \(pid (\d+)\)")[0][1])
        os.kill(victim, signal.SIGKILL)
        await proxy.log.wait_for(r"worker 1 \(pid \d+\) exited with signal SIGKILL; restarting in [1-9]")
        proxy.process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            assert await proxy.process.wait() == 0
        assert len(proxy.log.matching(r"worker 1 started")) == 1, proxy.log.text()


async def test_workers_that_cannot_reach_redis_stop_the_start_in_one_line(
    providers: Providers, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """With "refuse" and no Redis, each worker would exit 2: the supervisor says why once and
    exits 2 instead of restarting them forever."""
    port = free_port()
    absent = f"redis://127.0.0.1:{free_port()}/0"
    settings = write_settings(tmp_path / "w.toml", providers, port=port, quota_backend="redis", redis_url=absent, redis_outage="refuse")
    async with proxy_process(nursery, ["--config", str(settings), "--workers", "2"], environment(providers), port) as proxy:
        with trio.fail_after(30):
            assert await proxy.process.wait() == 2
        await until(lambda: proxy.log.lines[-1:] != [], "the last line is read")
        failures = proxy.log.matching(r"^trioproxy: redis_url: cannot reach Redis at ")
        assert len(failures) == 1 and proxy.log.lines[-1] == failures[0].string, proxy.log.text()
        assert not proxy.log.matching("restarting")


async def test_a_daemon_whose_workers_cannot_start_says_why(providers: Providers, tmp_path: Path) -> None:
    """--daemon --workers 2 reports "running" only once the workers serve; otherwise the reason."""
    absent = f"redis://127.0.0.1:{free_port()}/0"
    settings = write_settings(tmp_path / "w.toml", providers, port=free_port(), quota_backend="redis", redis_url=absent, redis_outage="refuse")
    pidfile = tmp_path / "trioproxy.pid"
    arguments = ["--config", str(settings), "--workers", "2", "--daemon", "--pidfile", str(pidfile), "--log-file", str(tmp_path / "log")]
    started = await run(arguments, tmp_path, environment(providers))
    assert started.returncode == 1
    assert "the daemon did not start: redis_url: cannot reach Redis at" in started.stderr
    await until(lambda: not pidfile.exists(), "the pidfile is removed")  # (and nothing is left running:
    # the check every test ends with, in conftest.py, fails the test otherwise)


async def test_a_reload_while_the_workers_start_does_not_end_them(
    providers: Providers, redis: RedisServer, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """SIGHUP to the supervisor before its workers serve: a worker that has not yet set up its
    signal handling would die of it (each gets it once it serves: tests/process/test_workers_reload.py)."""
    port = free_port()
    settings = write_settings(tmp_path / "w.toml", providers, port=port, quota_backend="redis", redis_url=redis.url)
    async with proxy_process(nursery, ["--config", str(settings), "--workers", "2"], environment(providers), port) as proxy:
        await proxy.log.wait_for(r"worker 2 started")  # the workers are importing Python still
        proxy.process.send_signal(signal.SIGHUP)
        await proxy.log.wait_for(r"supervising 2 workers")
        assert not proxy.log.matching("exited with"), proxy.log.text()
        async with client(proxy.root) as c:
            assert (await c.post("/v1/chat/completions", json=chat(max_tokens=5))).status_code == 200


async def test_workers_drain_and_exit_when_their_supervisor_is_killed(
    providers: Providers, redis: RedisServer, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """kill -9 of the supervisor: its workers do not serve on, orphaned, holding the port (a
    daemon's pidfile would name a dead process and `trioproxy stop` could not end them)."""
    port = free_port()
    settings = write_settings(tmp_path / "w.toml", providers, port=port, quota_backend="redis", redis_url=redis.url)
    async with proxy_process(nursery, ["--config", str(settings), "--workers", "2"], environment(providers), port) as proxy:
        await proxy.log.wait_for(r"supervising 2 workers")
        workers = [int(m[1]) for m in proxy.log.matching(r"worker \d started \(pid (\d+)\)")]
        try:
            proxy.process.kill()
            await until(lambda: not any(running(pid) for pid in workers), "the workers exit", 20)
            await proxy.log.wait_for("the supervisor is gone; this worker drains and exits", 2)
        finally:
            for pid in workers:
                if running(pid):
                    os.kill(pid, signal.SIGKILL)
