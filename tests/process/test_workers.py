"""`trioproxy --workers N` as a user runs it: one supervisor, N workers, one port, one Redis."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from support.chat import CLIENT_KEY, chat
from support.proxies import Providers
from support.workers import alive
from trioproxy.testing.ports import free_port
from trioproxy.testing.redis_server import RedisServer

pytestmark = pytest.mark.xdist_group("processes")  # starts trioproxy processes: one at a time (see scripts/test)


class Output:
    """The supervisor's log, read as it comes, for lines the test waits for (bounded in time)."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self.lines: list[str] = []
        self._buffer = b""

    async def wait_for(self, pattern: str, count: int = 1, seconds: float = 20.0) -> list[re.Match[str]]:
        with trio.fail_after(seconds):
            while True:
                matches = [m for line in self.lines if (m := re.search(pattern, line))]
                if len(matches) >= count:
                    return matches
                chunk = await self._stream.receive_some()
                if not chunk:
                    raise AssertionError(f"log ended without {pattern!r}:\n" + "\n".join(self.lines))
                self._buffer += chunk
                *complete, self._buffer = self._buffer.split(b"\n")
                self.lines.extend(line.decode(errors="replace") for line in complete)


def settings(tmp_path: Path, providers: Providers, port: int, backend: str, redis_url: str = "") -> Path:
    path = tmp_path / "trioproxy.toml"
    path.write_text(
        f'port = {port}\nstate_file = ""\nquota_backend = "{backend}"\n'
        + (f'redis_url = "{redis_url}"\nredis_key_prefix = "workers:"\nredis_timeout_ms = 5000\n' if redis_url else "")
        + f'[cerebras]\nbase_url = "{providers.cerebras_url}"\n[chutes]\nbase_url = "{providers.chutes_url}"\n'
    )
    return path


def environment(providers: Providers) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "REDIS_URL"}
    return {**env, "CEREBRAS_API_KEY": providers.cerebras.api_key, "CHUTES_API_KEY": providers.chutes.api_key}


async def test_workers_share_a_port_restart_reload_and_drain(
    providers: Providers, redis: RedisServer, tmp_path: Path
) -> None:
    port = free_port()
    config = settings(tmp_path, providers, port, "redis", redis.url)
    command = [sys.executable, "-m", "trioproxy", "--config", str(config), "--workers", "2"]
    process = await trio.lowlevel.open_process(command, stderr=subprocess.PIPE, env=environment(providers))
    assert process.stderr is not None
    log = Output(process.stderr)
    try:
        await log.wait_for(r"supervising 2 workers")
        pids = [int(m[1]) for m in await log.wait_for(r"worker \d started \(pid (\d+)\)", 2)]
        await log.wait_for(r"trioproxy serving", 2)  # both workers are up
        base = f"http://127.0.0.1:{port}/v1"
        async with httpx.AsyncClient(base_url=base, headers={"authorization": f"Bearer {CLIENT_KEY}"}) as client:
            for _ in range(6):
                assert (await client.post("/chat/completions", json=chat(max_tokens=5))).status_code == 200
            os.kill(pids[0], signal.SIGKILL)
            await log.wait_for(r"worker 1 \(pid \d+\) exited with signal SIGKILL; restarting")
            await log.wait_for(r"worker 1 started \(pid (\d+)\)", 2)
            await log.wait_for(r"trioproxy serving", 3)
            for _ in range(4):  # the surviving worker and the new one keep serving the port
                assert (await client.post("/chat/completions", json=chat(max_tokens=5))).status_code == 200
            status = (await client.get("/status")).json()
            assert status["quota_store"]["connected"] is True
        process.send_signal(signal.SIGHUP)
        await log.wait_for(r"configuration reloaded", 2)
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await process.wait() == 0
        await log.wait_for(r"worker 2 \(pid \d+\) stopped")
        assert not alive(pids[1])
        assert providers.cerebras.served + providers.chutes.served == 10
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.parametrize("where", ["flag", "file"])
async def test_workers_with_the_memory_ledger_refuse_to_start(providers: Providers, tmp_path: Path, where: str) -> None:
    config = settings(tmp_path, providers, free_port(), "memory")
    if where == "file":
        config.write_text("workers = 3\n" + config.read_text())
    command = [sys.executable, "-m", "trioproxy", "--config", str(config)] + (["--workers", "3"] if where == "flag" else [])
    result = await trio.run_process(command, capture_stderr=True, check=False, env=environment(providers))
    assert result.returncode == 2
    message = result.stderr.decode()
    assert message.count("\n") == 1 and "workers 3: each process" in message and 'quota_backend = "redis"' in message
