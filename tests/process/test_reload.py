"""Reloading the settings (SIGHUP): new limits and keys apply, connections and quota state stay."""

import os
import signal
import subprocess
from pathlib import Path

import attrs
import httpx
import pytest
import trio
import trio.testing

from support.chat import chat, client_for, post
from support.command import COMMAND, scrubbed_env
from support.proxies import Providers, proxy_config
from support.reload import reloadable_proxy


async def test_reload_applies_new_limits_and_keys_and_keeps_the_ledger(providers: Providers) -> None:
    """A stream in flight survives the swap; counts carry over; the new limit and client keys apply."""
    config = proxy_config(providers, cerebras={"requests_per_minute": 2})
    providers.cerebras.faults.chunk_delay = 0.01
    async with reloadable_proxy(config) as (proxy, send_reloads):
        async with client_for(proxy) as client:
            assert (await post(client, chat())).status_code == 200
            async with client.stream("POST", "/chat/completions", json=chat(stream=True)) as streaming:
                lines = streaming.aiter_lines()
                first = await lines.__anext__()
                assert first.startswith("data: ")
                wider = attrs.evolve(config, cerebras=attrs.evolve(config.cerebras, requests_per_minute=3))
                await send_reloads.send(wider)
                await trio.testing.wait_all_tasks_blocked()
                rest = [line async for line in lines if line.startswith("data: ")]
            assert rest[-1] == "data: [DONE]"
            status = (await client.get("/status")).json()
            assert status["providers"][0]["accounts"]["cerebras"]["rpm"] == {"used": 2, "limit": 3}
            assert (await post(client, chat())).status_code == 200
            assert providers.cerebras.served == 3

            locked = attrs.evolve(wider, client_api_keys=("new-client-key",))
            await send_reloads.send(locked)
            await trio.testing.wait_all_tasks_blocked()
            assert (await post(client, chat())).status_code == 401


async def test_a_reload_settles_reservations_in_flight_into_the_ledger_that_serves(providers: Providers) -> None:
    """A stream reserved its whole completion budget before a reload and settles after it: the
    settlement must correct the ledger that now serves, not the one the reload replaced."""
    config = proxy_config(providers, cerebras={"tokens_per_day": 1_000_000})
    providers.cerebras.faults.chunk_delay = 0.01
    async with reloadable_proxy(config) as (proxy, send_reloads):
        async with client_for(proxy) as client:
            async with client.stream("POST", "/chat/completions", json=chat(stream=True, max_tokens=5000)) as streaming:
                lines = streaming.aiter_lines()
                assert (await lines.__anext__()).startswith("data: ")
                await send_reloads.send(attrs.evolve(config, cerebras=attrs.evolve(config.cerebras, tokens_per_day=2_000_000)))
                await trio.testing.wait_all_tasks_blocked()
                assert [line async for line in lines if line.startswith("data: ")][-1] == "data: [DONE]"
            status = (await client.get("/status")).json()
    spent = sum(usage.prompt_tokens + usage.completion_tokens for usage in providers.cerebras.usage_log)
    assert spent < 100  # far below the 5,000 tokens reserved
    assert status["providers"][0]["accounts"]["cerebras"]["tpd"] == {"used": spent, "limit": 2_000_000}


@pytest.mark.xdist_group("processes")
async def test_sighup_rereads_the_file_and_refuses_a_bad_one(tmp_path: Path) -> None:
    """End to end with the real command: a good file applies, a broken one is logged and ignored."""
    settings = tmp_path / "config.toml"
    settings.write_text("[cerebras]\nrequests_per_minute = 5\n")
    process = subprocess.Popen(
        [*COMMAND, "--demo", "--config", str(settings)],
        cwd=tmp_path,
        env=scrubbed_env(PORT="0"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "stderr.log", "wb"),
    )
    try:
        base_url = await _banner_url(process)
        assert await _rpm_limit(base_url) == 5
        settings.write_text("[cerebras]\nrequests_per_minute = 7\n")
        process.send_signal(signal.SIGHUP)
        await _until(lambda: _rpm_limit(base_url), 7)
        settings.write_text("[cerebras]\nrequests_per_minute = 'many'\n")
        process.send_signal(signal.SIGHUP)
        await _until(lambda: _log_has(tmp_path / "stderr.log", "reload refused"), True)
        assert await _rpm_limit(base_url) == 7
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            while process.poll() is None:
                await trio.sleep(0.05)
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()


async def _banner_url(process: subprocess.Popen[bytes]) -> str:
    assert process.stdout is not None
    os.set_blocking(process.stdout.fileno(), False)
    seen = b""
    with trio.fail_after(15):
        while b"base URL: " not in seen or not seen.split(b"base URL: ", 1)[1].strip():
            await trio.lowlevel.wait_readable(process.stdout.fileno())
            seen += process.stdout.read() or b""
    return seen.split(b"base URL: ", 1)[1].split()[0].decode()


async def _rpm_limit(base_url: str) -> int:
    async with httpx.AsyncClient() as client:
        status = (await client.get(base_url + "/status")).json()
    return status["providers"][0]["accounts"]["cerebras"]["rpm"]["limit"]


async def _log_has(path: Path, text: str) -> bool:
    return text in path.read_text()


async def _until(probe, expected: object) -> None:  # type: ignore[no-untyped-def]
    """Poll `probe()` until it returns `expected` (bounded: 10 s)."""
    with trio.fail_after(10):
        while await probe() != expected:
            await trio.sleep(0.05)
