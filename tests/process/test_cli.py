"""The real `trioproxy` command in a subprocess: flags, exit codes, --check-config and --demo."""

import json
import os
import re
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import httpx
import pytest
import trio

from support.command import COMMAND, RUN_TIMEOUT, lines, run, scrubbed_env
from trioproxy import __version__

pytestmark = pytest.mark.xdist_group("processes")  # starts trioproxy processes: one at a time (see scripts/test)

STARTUP_TIMEOUT = 15  # seconds for --demo to print its base URL
EXIT_TIMEOUT = 10  # seconds for --demo to exit after SIGTERM


# --- commands that exit by themselves -------------------------------------------------------


async def test_version_exits_0(tmp_path: Path) -> None:
    """`trioproxy --version` prints the package version and exits 0."""
    result = await run(["--version"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert __version__ in result.stdout
    assert result.stdout.startswith("trioproxy")


async def test_help_exits_0_and_lists_options(tmp_path: Path) -> None:
    """`trioproxy --help` exits 0 and documents every option."""
    result = await run(["--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    for option in ("--config", "--demo", "--check-config", "--version"):
        assert option in result.stdout


async def test_unknown_flag_exits_2_with_one_line(tmp_path: Path) -> None:
    """An unknown flag exits 2 with exactly one line on stderr naming the flag, and nothing on stdout."""
    result = await run(["--frobnicate"], tmp_path)
    assert result.returncode == 2
    assert len(lines(result.stderr)) == 1, result.stderr
    assert "--frobnicate" in result.stderr
    assert result.stdout == ""


async def test_no_keys_and_no_demo_exits_2_with_advice(tmp_path: Path) -> None:
    """With no API key anywhere and no --demo, it exits 2 telling the user to set a key or use --demo."""
    result = await run([], tmp_path)
    assert result.returncode == 2
    assert "CEREBRAS_API_KEY" in result.stderr
    assert "--demo" in result.stderr
    assert "Traceback" not in result.stderr


async def test_bad_config_file_exits_2_naming_the_key(tmp_path: Path) -> None:
    """A config file with a wrong value exits 2 with one stderr line naming the key and the file."""
    config = tmp_path / "bad.toml"
    config.write_text('[cerebras]\nrequests_per_minute = "many"\n')
    result = await run(["--config", str(config)], tmp_path, scrubbed_env(CEREBRAS_API_KEY="csk-x"))
    assert result.returncode == 2
    stderr = lines(result.stderr)
    assert len(stderr) == 1, result.stderr
    assert "cerebras.requests_per_minute" in stderr[0]
    assert str(config) in stderr[0]


async def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    """A --config path that does not exist exits 2 with one line naming the path."""
    missing = tmp_path / "absent.toml"
    result = await run(["--config", str(missing), "--check-config"], tmp_path)
    assert result.returncode == 2
    assert len(lines(result.stderr)) == 1, result.stderr
    assert str(missing) in result.stderr


async def test_check_config_prints_redacted_json(tmp_path: Path) -> None:
    """--check-config prints the effective settings as JSON, showing a key as set but never its value."""
    config = tmp_path / "config.toml"
    config.write_text("port = 4567\n[chutes]\nrequests_per_minute = 40\n")
    env = scrubbed_env(CEREBRAS_API_KEY="csk-secret-test", HOST="0.0.0.0")
    result = await run(["--config", str(config), "--check-config"], tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert "csk-secret-test" not in result.stdout + result.stderr
    settings = json.loads(result.stdout)
    assert settings["port"] == 4567
    assert settings["host"] == "0.0.0.0"
    assert settings["chutes"]["requests_per_minute"] == 40
    assert settings["cerebras"]["model"][0] == "gpt-oss-120b"  # candidates, today's first
    assert settings["cerebras"]["api_key"] == "<set>"
    assert settings["chutes"]["api_key"] != "<set>"


async def test_check_config_reads_dotenv_in_working_directory(tmp_path: Path) -> None:
    """A .env file in the working directory is read, and its key is redacted too."""
    (tmp_path / ".env").write_text('export CHUTES_API_KEY="cpk_dotenv-secret"\nPORT=4321\n')
    result = await run(["--check-config"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "dotenv-secret" not in result.stdout
    settings = json.loads(result.stdout)
    assert settings["chutes"]["api_key"] == "<set>"
    assert settings["port"] == 4321


async def test_port_in_use_exits_1_with_one_line(tmp_path: Path) -> None:
    """When the port is taken, it exits 1 with one line naming the address instead of a traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = scrubbed_env(PORT=str(port), HOST="127.0.0.1", CEREBRAS_API_KEY="csk-unused")
        result = await run([], tmp_path, env)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    problem = [line for line in lines(result.stderr) if line.startswith("trioproxy:")]
    assert len(problem) == 1, result.stderr
    assert f"127.0.0.1:{port}" in problem[0]


# --- --demo: a long-running server ----------------------------------------------------------


@attrs.define
class Running:
    """A started command whose stdout and stderr are read continuously into text buffers."""

    process: trio.Process
    stdout: str = ""
    stderr: str = ""
    closed: int = 0  # output streams that reached end of file
    changed: trio.Event = attrs.field(factory=trio.Event)

    def _notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def _pump(self, stream: trio.abc.ReceiveStream, which: str) -> None:
        async for chunk in stream:
            setattr(self, which, getattr(self, which) + chunk.decode(errors="replace"))
            self._notify()
        self.closed += 1
        self._notify()

    async def exited(self, timeout: float) -> int:
        """Wait for the process to exit and for all of its output to be read; its exit code."""
        with trio.fail_after(timeout):
            returncode = await self.process.wait()
        await self.wait_until(lambda: self.closed == 2, "end of output", timeout)
        return returncode

    async def wait_until(self, done: Callable[[], bool], what: str, timeout: float) -> None:
        """Wait until `done()` holds, re-checking whenever output arrives; fail after `timeout`."""
        with trio.move_on_after(timeout):
            while not done():
                await self.changed.wait()
            return
        raise AssertionError(
            f"{what} not seen within {timeout} s (exit code {self.process.poll()})\n"
            f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}"
        )

    async def wait_for(self, pattern: str, which: str, timeout: float) -> re.Match[str]:
        """Wait until `pattern` matches the stdout or stderr text so far; fail after `timeout`."""
        await self.wait_until(lambda: re.search(pattern, getattr(self, which)) is not None, f"{pattern!r} on {which}", timeout)
        match = re.search(pattern, getattr(self, which))
        assert match is not None
        return match


@asynccontextmanager
async def started(args: list[str], cwd: Path, env: Mapping[str, str]) -> AsyncIterator[Running]:
    """Start the command with piped output; it is always killed on the way out."""
    process = await trio.lowlevel.open_process(
        COMMAND + args, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    running = Running(process)
    try:
        async with trio.open_nursery() as nursery:
            assert process.stdout is not None and process.stderr is not None
            nursery.start_soon(running._pump, process.stdout, "stdout")
            nursery.start_soon(running._pump, process.stderr, "stderr")
            try:
                yield running
            finally:
                if process.returncode is None:
                    process.kill()
                with trio.CancelScope(shield=True), trio.move_on_after(EXIT_TIMEOUT):
                    await process.wait()
            # the pumps end at EOF once the process is gone
    finally:
        if process.returncode is None:
            process.kill()


def request_log_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "trioproxy.request" in line]


def chat(content: str, **extra: object) -> dict[str, object]:
    return {"model": "qwen-3-coder", "messages": [{"role": "user", "content": content}], **extra}


async def test_demo_serves_falls_back_and_stops_on_sigterm(tmp_path: Path) -> None:
    """--demo needs no keys: it prints its URL and the models serving, answers chat and streams,
    spills a burst over Cerebras's 15 requests/min to Chutes (logged as `fallback: rpm`), and exits 0 on SIGTERM."""
    env = scrubbed_env(PORT="0", LOG_LEVEL="INFO")
    async with started(["--demo"], tmp_path, env) as proxy:
        base_url = (await proxy.wait_for(r"base URL: (http://\S+)", "stdout", STARTUP_TIMEOUT)).group(1)
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", base_url), base_url
        assert not base_url.endswith(":0/v1")
        assert "served by: cerebras gpt-oss-120b, chutes Qwen/Qwen3-Coder-Next-TEE" in proxy.stdout

        sent = 0
        headers = {"authorization": "Bearer any-key"}
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10) as client:
            response = await client.post("/chat/completions", json=chat("Hello"))
            sent += 1
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["model"] == "qwen-3-coder"
            assert body["choices"][0]["message"]["content"]

            async with client.stream("POST", "/chat/completions", json=chat("Stream please", stream=True)) as stream:
                assert stream.status_code == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
                data = [line[len("data: "):] async for line in stream.aiter_lines() if line.startswith("data: ")]
            sent += 1
            assert data[-1] == "[DONE]"
            chunks = [json.loads(item) for item in data[:-1]]
            assert chunks and all(chunk["model"] == "qwen-3-coder" for chunk in chunks)

            # DONE-WHEN: 15 requests in well under a minute, all answered.
            with trio.fail_after(60):
                for index in range(15):
                    response = await client.post("/chat/completions", json=chat(f"burst {index}"))
                    sent += 1
                    assert response.status_code == 200, f"request {index}: {response.status_code} {response.text}"
                    assert response.json()["model"] == "qwen-3-coder"

        # one INFO line per request; a stream's line may land just after its last byte
        await proxy.wait_until(lambda: len(request_log_lines(proxy.stderr)) >= sent, f"{sent} request log lines", STARTUP_TIMEOUT)
        logged = request_log_lines(proxy.stderr)
        assert len(logged) == sent, "\n".join(logged)
        on_cerebras = [line for line in logged if "provider=cerebras" in line]
        on_chutes = [line for line in logged if "provider=chutes" in line]
        assert on_cerebras and on_chutes, "\n".join(logged)
        assert all("fallback: rpm" in line for line in on_chutes), "\n".join(on_chutes)
        # Cerebras serves exactly the code plan's 15 requests/min (the preset: Cerebras states
        # no per-minute request limit) before the spill-over
        assert len(on_cerebras) == 15, "\n".join(logged)
        assert logged.index(on_chutes[0]) == 15
        assert all(" INFO " in line for line in logged)

        proxy.process.send_signal(signal.SIGTERM)
        returncode = await proxy.exited(EXIT_TIMEOUT)
        assert returncode == 0, proxy.stderr
        assert "Traceback" not in proxy.stderr


async def test_demo_shows_cerebras_two_buckets_the_cache_share_and_where_limits_come_from(tmp_path: Path) -> None:
    """An agent's turns (one conversation growing) on --demo: /v1/status, `trioproxy status` and
    the dashboard's state show the uncached bucket beside the total one, the share of the prompt
    tokens Cerebras's cache held, and each limit's source (the plan's preset, the provider's
    header, the demo's setting)."""
    async with started(["--demo"], tmp_path, scrubbed_env(PORT="0")) as proxy:
        base_url = (await proxy.wait_for(r"base URL: (http://\S+)", "stdout", STARTUP_TIMEOUT)).group(1)
        messages: list[dict[str, str]] = [{"role": "system", "content": "You are a coding agent. " * 400}]
        async with httpx.AsyncClient(base_url=base_url, headers={"authorization": "Bearer any-key"}, timeout=10) as client:
            for turn in range(4):
                messages.append({"role": "user", "content": f"tool result {turn}: " + "x = 1\n" * 200})
                response = await client.post("/chat/completions", json={"model": "qwen-3-coder", "messages": messages,
                                                                        "max_tokens": 100})
                assert response.status_code == 200, response.text
                messages.append(response.json()["choices"][0]["message"])
            status = (await client.get("/status")).json()
            dashboard = (await client.get(base_url.removesuffix("/v1") + "/dashboard/api/state")).json()
        table = await run(["status", "--url", base_url], tmp_path, scrubbed_env())

    cerebras = status["providers"][0]
    account = cerebras["accounts"]["cerebras"]
    served = cerebras["served_since_start"]
    assert cerebras["name"] == "cerebras" and served["requests"] == 4
    assert 0.5 * served["prompt_tokens"] < served["cached_tokens"] < served["prompt_tokens"]  # later turns: mostly cached
    assert account["utpm"]["limit"] == 55_000 and 0 < account["utpm"]["used"] < account["tpm"]["used"]
    sources = account["limit_sources"]
    assert sources["utpm"]["source"] == "configured" and sources["rpm"]["source"] == "preset"
    assert sources["tpm"]["source"] == "provider" and sources["tpm"]["stated"] == 165_000
    assert dashboard["routes"][0]["providers"][0]["served_since_start"] == served
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()[:2]
    assert header.split()[5:8] == ["rpm", "tpm", "utpm"]
    share = round(100 * served["cached_tokens"] / served["prompt_tokens"])
    assert "/55000 [configured]" in row and "[provider " in row and f"4 ({share}% cached)" in row


async def test_demo_stops_on_ctrl_c(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT), the stop the demo banner advertises, exits 0 without a traceback."""
    async with started(["--demo"], tmp_path, scrubbed_env(PORT="0")) as proxy:
        await proxy.wait_for(r"base URL: (http://\S+)", "stdout", STARTUP_TIMEOUT)
        proxy.process.send_signal(signal.SIGINT)
        returncode = await proxy.exited(EXIT_TIMEOUT)
        assert returncode == 0, proxy.stderr
        assert "Traceback" not in proxy.stderr


# --- flags, settings and the shell, tried as a new user would (issue 11) ----------------------


async def test_pidfile_before_the_stop_command_is_used(tmp_path: Path) -> None:
    """`trioproxy --pidfile X stop` used to ignore X and look at the default pidfile."""
    pidfile = tmp_path / "mine.pid"
    result = await run(["--pidfile", str(pidfile), "stop"], tmp_path)
    assert result.returncode == 1 and f"pidfile {pidfile}" in result.stderr


async def test_check_config_without_keys_exits_2_like_serving(tmp_path: Path) -> None:
    """--check-config prints the settings but exits 2 with the advice serving them would give."""
    result = await run(["--check-config"], tmp_path)
    assert result.returncode == 2
    assert json.loads(result.stdout)["port"] == 3000
    assert "CEREBRAS_API_KEY" in result.stderr and "--demo" in result.stderr
    demo = await run(["--check-config", "--demo"], tmp_path)
    assert demo.returncode == 0, demo.stderr


async def test_host_and_port_flags_win_and_are_checked(tmp_path: Path) -> None:
    env = scrubbed_env(CEREBRAS_API_KEY="csk-x", PORT="3001", HOST="127.0.0.1")
    result = await run(["--port", "3005", "--host", "::1", "--check-config"], tmp_path, env)
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout)
    assert (settings["host"], settings["port"]) == ("::1", 3005)
    refused = await run(["--port", "70000", "--check-config"], tmp_path, env)
    assert refused.returncode == 2 and "port" in refused.stderr and "--port" in refused.stderr
    typo = await run(["--port", "many"], tmp_path, env)
    assert typo.returncode == 2 and len(lines(typo.stderr)) == 1


async def test_status_finds_the_proxy_from_the_settings(tmp_path: Path, start_proxy: Callable[..., object]) -> None:
    """Without --url, `trioproxy status` asks the address PORT/HOST or --config name, with its keys."""
    proxy = await start_proxy(client_api_keys=("client-secret",))  # type: ignore[misc]
    port = proxy.base_url.rsplit(":", 1)[1].removesuffix("/v1")  # type: ignore[attr-defined]
    from_env = await run(["status"], tmp_path, scrubbed_env(PORT=port, HOST="0.0.0.0", PROXY_API_KEYS="client-secret"))
    assert from_env.returncode == 0, from_env.stderr
    assert from_env.stdout.splitlines()[0].split()[:2] == ["provider", "model"]
    config = tmp_path / "config.toml"
    config.write_text(f'port = {port}\nclient_api_keys = ["client-secret"]\n')
    from_file = await run(["--config", str(config), "status", "--json"], tmp_path)
    assert from_file.returncode == 0, from_file.stderr
    assert json.loads(from_file.stdout)["providers"][0]["name"] == "cerebras"


async def test_a_closed_pipe_is_not_a_traceback(tmp_path: Path) -> None:
    """`trioproxy --check-config | head -1`: the reader leaves early; no BrokenPipeError on stderr,
    and the exit code is still the command's own."""
    cases = ((scrubbed_env(CHUTES_API_KEY="cpk-x"), 0), (scrubbed_env(), 2), (scrubbed_env(PYTHONUNBUFFERED="1"), 2))
    for env, expected in cases:
        read_end, write_end = os.pipe()
        os.close(read_end)  # the reader is gone before anything is written
        try:
            with trio.fail_after(RUN_TIMEOUT):
                done = await trio.run_process(
                    [*COMMAND, "--check-config"], cwd=tmp_path, env=env,
                    stdin=subprocess.DEVNULL, stdout=write_end, capture_stderr=True, check=False,
                )
        finally:
            os.close(write_end)
        assert "Traceback" not in done.stderr.decode() and "BrokenPipe" not in done.stderr.decode()
        assert done.returncode == expected


START_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "start"


async def test_start_script_installs_only_when_pyproject_changes(tmp_path: Path) -> None:
    """./scripts/start used to run `pip install` (6 s) on every start."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "start").write_bytes(START_SCRIPT.read_bytes())
    (tmp_path / "scripts" / "start").chmod(0o755)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "calls.log"
    # Stand-ins for the venv's python (whose pip "installs" trioproxy) and for trioproxy,
    # recording how they were called.
    (tmp_path / "installed").write_text(f'#!/bin/sh\necho "trioproxy $*" >> {log}\n')
    (bin_dir / "python").write_text(f'#!/bin/sh\necho "pip $*" >> {log}\ninstall -m 755 {tmp_path / "installed"} {bin_dir / "trioproxy"}\n')
    (bin_dir / "python").chmod(0o755)
    env = scrubbed_env(CEREBRAS_API_KEY="csk-x")

    async def start() -> None:
        with trio.fail_after(RUN_TIMEOUT):
            await trio.run_process([str(tmp_path / "scripts" / "start"), "--version"], cwd=tmp_path, env=env)

    await start()
    await start()
    assert log.read_text().splitlines() == [
        "pip -m pip install --quiet --disable-pip-version-check -e .",
        "trioproxy --version",
        "trioproxy --version",
    ]
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\nversion = '2'\n")
    await start()
    assert log.read_text().count("pip install") == 2
