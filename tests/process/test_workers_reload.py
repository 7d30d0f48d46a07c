"""SIGHUP to `trioproxy --workers 2` while its workers are still starting (each has read the
settings file already but does not serve yet, so it can only be told once it serves), and while
they drain (when they would die of it)."""

import signal
from pathlib import Path

import pytest
import trio

from support.chat import chat
from support.processes import Outcome, client, environment, get_json, proxy_process, request, until, write_settings
from support.proxies import Providers
from trioproxy.testing.ports import free_port
from trioproxy.testing.redis_server import RedisServer

pytestmark = pytest.mark.xdist_group("processes")  # starts trioproxy processes: one at a time (see scripts/test)

STREAMS = 4


class SilentRedis:
    """A Redis host that takes connections and answers nothing (a network pause) until
    released; then it closes them and takes no more. A worker waits on it at start."""

    def __init__(self) -> None:
        self.connections = 0
        self._released = trio.Event()
        self._listening = trio.CancelScope()

    async def serve(self, *, task_status: trio.TaskStatus[int]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        with self._listening:
            await trio.serve_listeners(self._hold, listeners)

    async def _hold(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        async with stream:
            await self._released.wait()

    def release(self) -> None:
        self._released.set()
        self._listening.cancel()


async def test_a_reload_asked_while_the_workers_start_reaches_them_once_they_serve(
    providers: Providers, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Both workers read the settings, then wait on Redis; the settings change and the
    supervisor gets SIGHUP; Redis lets go ("local": they serve on local buckets). Each worker
    then reloads and serves the new settings (it used to serve the old ones until the next SIGHUP)."""
    port, redis = free_port(), SilentRedis()
    redis_url = f"redis://127.0.0.1:{await nursery.start(redis.serve)}/0"

    def configure(model: str) -> Path:
        # redis_timeout_ms: the workers wait on the silent Redis until the test lets them go.
        return write_settings(tmp_path / "w.toml", providers, port=port, quota_backend="redis", redis_url=redis_url,
                              redis_timeout_ms=60_000, proxy_model_name=model)

    settings = configure("before-the-reload")
    async with proxy_process(nursery, ["--config", str(settings), "--workers", "2"], environment(providers), port) as proxy:
        await until(lambda: redis.connections >= 2, "both workers wait on Redis (they have read the settings)")
        configure("after-the-reload")
        proxy.process.send_signal(signal.SIGHUP)
        await proxy.log.wait_for("received SIGHUP, reloading every worker")
        assert not proxy.log.matching("trioproxy serving"), proxy.log.text()  # the reload came while they start
        redis.release()
        await proxy.log.wait_for("supervising 2 workers")
        await proxy.log.wait_for("configuration reloaded", 2)
        for _ in range(6):  # fresh connections, taken by either worker
            listing = await get_json(proxy.root, "/v1/models")
            assert [model["id"] for model in listing["data"]] == ["after-the-reload"]
        assert not proxy.log.matching("exited with"), proxy.log.text()


async def test_a_reload_asked_while_the_workers_drain_does_not_end_them(
    providers: Providers, redis: RedisServer, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """SIGHUP after SIGTERM: a draining worker no longer handles SIGHUP (its default would end
    it, cutting its streams), so the supervisor does not pass it on."""
    providers.cerebras.completion_words, providers.cerebras.tokens_per_second = 30, 10.0  # 3 s streams
    port = free_port()
    settings = write_settings(tmp_path / "w.toml", providers, port=port, quota_backend="redis", redis_url=redis.url)
    streams: list[Outcome] = []
    async with proxy_process(nursery, ["--config", str(settings), "--workers", "2"], environment(providers), port) as proxy:
        await proxy.log.wait_for("trioproxy serving", 2)

        async def one_stream() -> None:
            async with client(proxy.root) as c:  # a connection of its own: either worker may take it
                streams.append(await request(c, proxy.root, chat(max_tokens=50), stream=True))

        async with trio.open_nursery() as streaming:
            for _ in range(STREAMS):
                streaming.start_soon(one_stream)
            await until(lambda: len(providers.cerebras.received) == STREAMS, "every stream reaches Cerebras")
            proxy.process.send_signal(signal.SIGTERM)
            await proxy.log.wait_for("received SIGTERM, shutting down", 2)  # both workers drain
            proxy.process.send_signal(signal.SIGHUP)
            await proxy.log.wait_for("received SIGHUP while the workers drain; nothing to reload")
        with trio.fail_after(30):
            assert await proxy.process.wait() == 0
    assert [stream.error for stream in streams] == [""] * STREAMS
    assert not proxy.log.matching("exited with"), proxy.log.text()
