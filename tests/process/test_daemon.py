"""Running as a daemon: detach, pidfile, log file, `trioproxy stop`, one instance per pidfile."""

import json
import re
from pathlib import Path

import httpx
import pytest
import trio

from support.command import run, scrubbed_env
from support.leftovers import kill_holding

pytestmark = pytest.mark.xdist_group("processes")  # starts trioproxy processes: one at a time (see scripts/test)


async def test_daemon_starts_serves_refuses_a_twin_and_stops(tmp_path: Path) -> None:
    """--daemon returns once serving; a second start on the pidfile is refused; stop ends it cleanly."""
    pidfile, log_file = tmp_path / "trioproxy.pid", tmp_path / "trioproxy.log"
    env = scrubbed_env(PORT="0", STATE_FILE="")
    try:
        started = await run(["--demo", "--daemon", "--pidfile", str(pidfile), "--log-file", str(log_file)], tmp_path, env)
        assert started.returncode == 0, started.stderr
        url = re.search(r"running in the background at (\S+)", started.stdout)
        assert url is not None, started.stdout
        pid = int(pidfile.read_text())
        async with httpx.AsyncClient() as client:
            health = await client.get(url.group(1).removesuffix("/v1") + "/healthz")
        assert health.status_code == 200

        twin = await run(["--demo", "--daemon", "--pidfile", str(pidfile), "--log-file", str(log_file)], tmp_path, env)
        assert twin.returncode == 1
        assert f"already running (pid {pid}" in twin.stderr

        stopped = await run(["stop", "--pidfile", str(pidfile), "--timeout", "15"], tmp_path, env)
        assert stopped.returncode == 0, stopped.stderr
        assert f"pid {pid}) stopped" in stopped.stdout
        assert not pidfile.exists()
        assert "received SIGTERM" in log_file.read_text()
    finally:
        await kill_holding(tmp_path)  # also a daemon that came up after `run` gave up on it


async def test_a_daemon_that_cannot_bind_says_why(tmp_path: Path) -> None:
    """The waiting parent reports the bind error and exits 1; nothing is left running (the
    check every test ends with, in conftest.py, fails the test otherwise)."""
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        pidfile = tmp_path / "p.pid"
        result = await run(
            ["--demo", "--daemon", "--pidfile", str(pidfile), "--log-file", str(tmp_path / "log")],
            tmp_path,
            scrubbed_env(PORT=str(port), STATE_FILE=""),
        )
    assert result.returncode == 1
    assert "did not start" in result.stderr and "Address already in use" in result.stderr
    assert not pidfile.exists()


async def test_stop_without_a_running_daemon_fails_clearly(tmp_path: Path) -> None:
    result = await run(["stop", "--pidfile", str(tmp_path / "none.pid")], tmp_path)
    assert result.returncode == 1 and "no trioproxy is running" in result.stderr


async def test_a_json_daemon_writes_only_json_lines_and_names_its_stop_command(tmp_path: Path) -> None:
    """--daemon with LOG_FORMAT=json: the demo's banner is a JSON line too, saying how to stop it."""
    pidfile, log_file = tmp_path / "trioproxy.pid", tmp_path / "trioproxy.log"
    env = scrubbed_env(PORT="0", STATE_FILE="", LOG_FORMAT="json")
    try:
        started = await run(["--demo", "--daemon", "--pidfile", str(pidfile), "--log-file", str(log_file)], tmp_path, env)
        assert started.returncode == 0, started.stderr
        stopped = await run(["--pidfile", str(pidfile), "stop", "--timeout", "15"], tmp_path, env)
        assert stopped.returncode == 0, stopped.stderr
    finally:
        await kill_holding(tmp_path)  # also a daemon that came up after `run` gave up on it
    records = [json.loads(line) for line in log_file.read_text().splitlines()]  # every line is JSON
    banner = [record["message"] for record in records if record["message"].startswith("demo:")]
    assert len(banner) == 1 and f"stop: trioproxy stop --pidfile {pidfile}" in banner[0]
    assert "Ctrl-C" not in log_file.read_text()
