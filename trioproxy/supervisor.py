"""The root of the task tree: HTTP clients, quota ledger, cooldown timers and the server."""

import logging
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from .app import ProxyApp
from .auth import ClientKeys, is_loopback
from .config import Config
from .cooldown import CooldownTimers
from .demo import print_demo_banner, start_demo_providers
from .drain import Drain
from .health import HealthProber, ProviderHealth
from .persist import StatePersister, resolve_state_path
from .quota import QuotaLedger
from .router import Router
from .upstream import Upstream

log = logging.getLogger("trioproxy")


def _hypercorn_config(config: Config) -> HypercornConfig:
    hyper = HypercornConfig()
    hyper.graceful_timeout = config.shutdown_grace_ms / 1000
    host = f"[{config.host}]" if ":" in config.host else config.host
    hyper.bind = [f"{host}:{config.port}"]
    hyper.accesslog = None  # one line per request comes from the app, with routing facts
    hyper.errorlog = logging.getLogger("hypercorn.error")
    return hyper


async def run_proxy(
    config: Config,
    shutdown: trio.Event,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until `shutdown` is set; report the base URL (e.g. http://127.0.0.1:3000/v1) once bound.

    Only providers with an API key take part. Everything started here ends before this returns.
    """
    providers = [p for p in config.providers if p.keys]
    if not providers:
        raise ValueError("no provider has an API key")
    if not config.client_api_keys and not is_loopback(config.host):
        log.warning(
            "LISTENING ON %s WITHOUT CLIENT KEYS: anyone who can reach this address can spend your "
            "provider quota. Set PROXY_API_KEYS (comma-separated) to require a key.",
            config.host,
        )
    ledger = QuotaLedger(providers)
    timeout = config.request_timeout_ms / 1000
    async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
        upstreams = [
            Upstream(p, await stack.enter_async_context(Upstream.client_for(p, timeout))) for p in providers
        ]
        health = {p.name: ProviderHealth() for p in providers}
        router = Router(
            config.proxy_model_name,
            upstreams,
            ledger,
            CooldownTimers(nursery, ledger),
            config.cooldown_period_ms / 1000,
            config.capacity_backoff_ms / 1000,
            config.honour_retry_after,
            health,
        )
        app = ProxyApp(
            config.proxy_model_name, router, ledger, config.max_body_bytes, ClientKeys(config.client_api_keys)
        )

        async def serve_then_stop(task_status: trio.TaskStatus[list[str]]) -> None:
            await serve(app, _hypercorn_config(config), shutdown_trigger=shutdown.wait, task_status=task_status)
            nursery.cancel_scope.cancel()  # the server is done: end cooldown timers too

        state_path = resolve_state_path(config.state_file)
        if state_path is not None:
            persister = StatePersister(ledger, state_path, config.state_save_interval_ms / 1000)
            await persister.load()
            nursery.start_soon(persister.run)  # saves once more when the nursery is cancelled
        prober = HealthProber(upstreams, health, config.health_check_interval_ms / 1000, config.health_check_failures)
        nursery.start_soon(prober.run)
        nursery.start_soon(_end_streams_at_grace_end, shutdown, app.drain, config.shutdown_grace_ms / 1000)
        bound = await nursery.start(serve_then_stop)
        base_url = bound[0].rstrip("/") + "/v1"
        log.info(
            "trioproxy serving %s at %s; providers: %s",
            config.proxy_model_name,
            base_url,
            ", ".join(f"{p.name} ({p.model} at {p.base_url})" for p in providers),
        )
        task_status.started(base_url)


async def _end_streams_at_grace_end(shutdown: trio.Event, drain: Drain, grace: float) -> None:
    """Just before Hypercorn cuts what is left, end the remaining streams with a proper event."""
    await shutdown.wait()
    log.info("draining: %d streams in flight, %.0f s to finish", drain.in_flight, grace)
    await trio.sleep(grace - min(1.0, grace / 10))
    ended = drain.cut()
    if ended:
        log.warning("grace period over: ended %d streams early", ended)


async def stop_on_signals(shutdown: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Set `shutdown` on SIGINT or SIGTERM."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            shutdown.set()
            return


async def supervise(config: Config, demo: bool, on_ready: Callable[[str], None] | None = None) -> None:
    """The whole process: signals, the demo's emulated providers if asked, and the proxy.

    `on_ready(base_url)` is called once the proxy serves.
    """
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(stop_on_signals, shutdown)
        if demo:
            config = await start_demo_providers(nursery, config)
        async with trio.open_nursery() as proxy_nursery:
            base_url = await proxy_nursery.start(run_proxy, config, shutdown)
            if demo:
                print_demo_banner(base_url, config.proxy_model_name)
            if on_ready is not None:
                on_ready(base_url)
        # The proxy has drained and stopped; the emulators and the signal watcher may go.
        nursery.cancel_scope.cancel()
