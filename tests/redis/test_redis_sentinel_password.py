"""Sentinels with a password of their own (redis_sentinel_password, REDIS_SENTINEL_PASSWORD), beside
the data nodes' password in redis_url: a real primary, replica and sentinel, each asking for one.
Serving through them and following a failover: tests/redis/test_redis_deployments.py ("sentinel-passwords")."""

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from support.processes import get_json
from support.proxies import Providers, StartProxy
from support.raw_http import root_of
from support.redis_deployments import DATA_PASSWORD, SENTINEL_PASSWORD, Deployment, sentinel_redis
from support.redis_ledgers import alternate

pytestmark = pytest.mark.xdist_group("redis_sentinel_password")  # on one worker: the deployment (a module fixture) is started once


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with sentinel_redis(tmp_path_factory.mktemp("sentinel-passwords"), passwords=True) as running:
        yield running


@pytest.mark.parametrize(
    ("policy", "data_password", "sentinel_password", "refusal"),
    [
        ("refuse", DATA_PASSWORD, "not-the-sentinels", "redis_sentinel_password: the sentinels at 127.0.0.1:{port} refused it "
                                                       "(invalid username-password pair or user is disabled.)"),
        ("local", DATA_PASSWORD, "", "redis_sentinel_password: the sentinels at 127.0.0.1:{port} ask for a password; "
                                     "set redis_sentinel_password (or REDIS_SENTINEL_PASSWORD)"),
        # The sentinels let it in; the data nodes do not: that is redis_url's password.
        ("refuse", "not-the-data-nodes", SENTINEL_PASSWORD, "redis_url: Redis refused the credentials (invalid username-password pair"),
    ],
    ids=["wrong-sentinel-password", "no-sentinel-password", "wrong-data-password"],
)
async def test_a_refused_password_stops_the_start_in_one_line_naming_its_setting(
    tmp_path: Path, guarded: Deployment, policy: str, data_password: str, sentinel_password: str, refusal: str
) -> None:
    """Whatever redis_outage says: a password the sentinels or the data nodes refuse is a
    mistake in the settings, not an outage to wait out. No password appears in the line."""
    settings = tmp_path / "sentinel.toml"
    settings.write_text(f'quota_backend = "redis"\nredis_outage = "{policy}"\nstate_file = ""\nport = 0\n')
    url = guarded.url.replace(f":{DATA_PASSWORD}@", f":{data_password}@")
    env = {**os.environ, "CEREBRAS_API_KEY": "csk-start-test", "REDIS_URL": url, "REDIS_SENTINEL_PASSWORD": sentinel_password}
    command = [sys.executable, "-m", "trioproxy", "--config", str(settings)]
    with trio.fail_after(30):
        result = await trio.run_process(command, capture_stderr=True, check=False, env=env)
    message = result.stderr.decode()
    assert result.returncode == 2
    assert message.startswith("trioproxy: " + refusal.format(port=guarded.ports["sentinel"])), message
    assert message.count("\n") == 1
    for secret in filter(None, (data_password, sentinel_password, DATA_PASSWORD, SENTINEL_PASSWORD)):
        assert secret not in message


async def test_the_passwords_stay_out_of_logs_and_status(
    providers: Providers, start_proxy: StartProxy, guarded: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    proxy = await start_proxy(quota_backend="redis", redis_url=guarded.url, redis_sentinel_password=SENTINEL_PASSWORD,
                              redis_timeout_ms=10_000, redis_key_prefix="secrets:")
    assert await alternate([proxy], 2) == [200, 200]
    status, healthz = [await get_json(root_of(proxy), path) for path in ("/v1/status", "/healthz")]
    shown = f"redis+sentinel://:***@127.0.0.1:{guarded.ports['sentinel']}/ledger/0"
    assert status["quota_store"]["url"] == shown and status["quota_store"]["connected"]
    assert f"quota shared through Redis at {shown}" in caplog.text
    for text in (json.dumps(status), json.dumps(healthz), caplog.text):
        assert DATA_PASSWORD not in text and SENTINEL_PASSWORD not in text
