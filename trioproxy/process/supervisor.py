"""The root of the task tree: HTTP clients, quota ledger, cooldown timers and the server."""

import functools
import logging
import signal
from collections.abc import Callable

import attrs
import trio

from ..server.app import ProxyApp
from ..server.connections import ServerConfig, serve
from ..server.auth import is_loopback
from ..server.edges import HttpEdges
from ..config.schema import Config
from ..config.validators import ConfigError
from ..config.checks import keyless_route
from .demo import DemoProviders, start_demo_providers
from ..server.drain import Drain
from ..logs import LEVELS, redact_with
from ..quota.persist import StatePersister, resolve_state_path
from ..errors import found_in
from ..quota.redis.client import QuotaStoreError
from ..runtime import ClientPool, build_runtime, serving_providers

log = logging.getLogger("trioproxy")


def _hypercorn_config(config: Config, listen_fd: int | None) -> ServerConfig:
    hyper = ServerConfig()
    hyper.graceful_timeout = config.shutdown_grace_ms / 1000
    hyper.client_stall_seconds = config.client_stall_timeout_ms / 1000
    host = f"[{config.host}]" if ":" in config.host else config.host
    # A worker of --workers serves the socket its supervisor bound.
    hyper.bind = [f"fd://{listen_fd}"] if listen_fd is not None else [f"{host}:{config.port}"]
    hyper.accesslog = None  # one line per request comes from the app, with routing facts
    hyper.errorlog = logging.getLogger("hypercorn.error")
    return hyper


async def run_proxy(
    config: Config,
    shutdown: trio.Event,
    reloads: trio.MemoryReceiveChannel[Config] | None = None,
    *,
    listen_fd: int | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until `shutdown` is set; report the base URL (e.g. http://127.0.0.1:3000/v1) once bound.

    Each Config received on `reloads` replaces the running one without dropping connections.
    Only providers with an API key take part. Everything started here ends before this returns.
    Raises ValueError when no provider has a key or a route has none that does, and
    QuotaStoreError when the Redis ledger cannot start.
    """
    if not serving_providers(config):
        raise ValueError("no provider has an API key")
    if (keyless := keyless_route(config)) is not None:
        raise ValueError(keyless)
    _warn_if_open(config)
    pool = ClientPool()
    try:
        async with trio.open_nursery() as nursery:
            runtime = await build_runtime(config, pool, nursery)
            redact_with(runtime.sanitizer)
            app = ProxyApp(runtime)

            async def serve_then_stop(task_status: trio.TaskStatus[list[str]]) -> None:
                await serve(HttpEdges(app), _hypercorn_config(config, listen_fd), shutdown_trigger=shutdown.wait,
                            task_status=task_status)
                nursery.cancel_scope.cancel()  # the server is done: end timers, prober, persister

            state_path = resolve_state_path(config.state_file)
            if state_path is not None and config.quota_backend == "memory":  # Redis keeps its own
                persister = StatePersister(lambda: app.runtime.ledger, state_path, config.state_save_interval_ms / 1000,
                                           clients=runtime.clients)
                await persister.load()
                nursery.start_soon(persister.run)  # saves once more when the nursery is cancelled
            nursery.start_soon(_end_streams_at_grace_end, shutdown, app.drain, config.shutdown_grace_ms / 1000)
            if reloads is not None:
                nursery.start_soon(_apply_reloads, reloads, app, pool, nursery)
            bound = await nursery.start(serve_then_stop)
            base_url = bound[0].rstrip("/") + "/v1"
            log.info("trioproxy serving at %s: %s", base_url, _describe(config))
            task_status.started(base_url)
    finally:
        await pool.aclose()


def _describe(config: Config) -> str:
    """Each route and its providers with their candidate models, e.g.
    `qwen-3-coder via cerebras (gpt-oss-120b | qwen-3.8-27b at https://...), chutes (...)`."""
    return "; ".join(
        f"{route.name} via " + ", ".join(f"{p.name} ({' | '.join(p.model)} at {p.base_url})" for p in config.route_providers(route))
        for route in config.routes
    )


def _warn_if_open(config: Config) -> None:
    if not config.client_api_keys and not config.clients and not is_loopback(config.host):
        log.warning(
            "LISTENING ON %s WITHOUT CLIENT KEYS: anyone who can reach this address can spend your "
            "provider quota. Set PROXY_API_KEYS (comma-separated) to require a key.",
            config.host,
        )


async def _apply_reloads(
    reloads: trio.MemoryReceiveChannel[Config], app: ProxyApp, pool: ClientPool, nursery: trio.Nursery
) -> None:
    """Swap in each new configuration; what cannot change without a restart is said so."""
    async for config in reloads:
        current = app.runtime
        if not serving_providers(config):
            log.error("reload refused: no provider has an API key; keeping the running configuration")
            continue
        if (keyless := keyless_route(config)) is not None:
            log.error("reload refused: %s; keeping the running configuration", keyless)
            continue
        bound = current.config.host, current.config.port  # a reload keeps them (below)
        restart = ""
        if (config.host, config.port) != bound:
            restart = (f"; host and port need a restart: still listening on {bound[0]}:{bound[1]}, "
                       f"not {config.host}:{config.port}")
            log.warning("reload: host and port changes take effect only after a restart (still listening on %s:%s)",
                        *bound)
            config = attrs.evolve(config, host=bound[0], port=bound[1])  # what runs says where it listens
        _warn_if_open(config)
        try:
            app.runtime = await build_runtime(config, pool, nursery, previous=current)
        except (QuotaStoreError, BaseExceptionGroup) as error:  # a new Redis store that cannot start
            if (refused := found_in(error, QuotaStoreError)) is None:
                raise
            log.error("reload refused: %s; keeping the running configuration", refused)
            continue
        current.background_scope.cancel()
        logging.getLogger().setLevel(LEVELS[config.log_level])
        redact_with(app.runtime.sanitizer)
        log.info("configuration reloaded: %s%s", _describe(config), restart)


async def _end_streams_at_grace_end(shutdown: trio.Event, drain: Drain, grace: float) -> None:
    """Just before Hypercorn cuts what is left, end the remaining streams with a proper event."""
    await shutdown.wait()
    log.info("draining: %d requests in flight (%d of them streams), %.0f s to finish", drain.requests, drain.streams, grace)
    await trio.sleep(grace - min(1.0, grace / 10))
    ended = drain.cut()
    if ended:
        log.warning("grace period over: ended %d streams early", ended)


async def handle_signals(
    shutdown: trio.Event,
    reload: Callable[[], Config] | None,
    reloads: trio.MemorySendChannel[Config],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """SIGINT/SIGTERM set `shutdown`; SIGHUP re-reads the settings and sends them on `reloads`.

    After the first stop signal the default handlers return, so a second Ctrl-C ends at once.
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        task_status.started()
        async for signum in signals:
            if signum == signal.SIGHUP:
                await _reload(reload, reloads)
                continue
            log.info("received %s, shutting down", signal.Signals(signum).name)
            shutdown.set()
            return


async def _reload(reload: Callable[[], Config] | None, reloads: trio.MemorySendChannel[Config]) -> None:
    if reload is None:
        log.warning("received SIGHUP, but there are no settings to re-read")
        return
    log.info("received SIGHUP, re-reading the settings")
    try:
        config = reload()
    except ConfigError as error:
        log.error("reload refused: %s; keeping the running configuration", error)
        return
    await reloads.send(config)


def _still_on(demo_providers: DemoProviders, reload: Callable[[], Config]) -> Callable[[], Config]:
    """Re-read settings that keep pointing at the demo's emulators."""

    def reload_demo() -> Config:
        return demo_providers.apply(reload())

    return reload_demo


async def supervise(
    config: Config,
    demo: bool,
    on_ready: Callable[[str], None] | None = None,
    reload: Callable[[], Config] | None = None,
    listen_fd: int | None = None,
) -> None:
    """The whole process: signals, the demo's emulated providers if asked, and the proxy.

    `on_ready(base_url)` is called once the proxy serves; `reload()` re-reads the settings on SIGHUP.
    Returns once the proxy has drained after SIGTERM or SIGINT; raises what `run_proxy` raises.
    """
    shutdown = trio.Event()
    send_reloads, receive_reloads = trio.open_memory_channel[Config](1)
    async with trio.open_nursery() as nursery:
        if demo:
            demo_providers = await start_demo_providers(nursery, config)
            config = demo_providers.apply(config)
            if reload is not None:
                reload = _still_on(demo_providers, reload)
        await nursery.start(handle_signals, shutdown, reload, send_reloads)
        async with trio.open_nursery() as proxy_nursery:
            base_url = await proxy_nursery.start(
                functools.partial(run_proxy, config, shutdown, receive_reloads, listen_fd=listen_fd)
            )
            if on_ready is not None:
                on_ready(base_url)
        # The proxy has drained and stopped; the emulators and the signal watcher may go.
        nursery.cancel_scope.cancel()
