"""`--workers N`: one supervisor process, N worker processes serving one listening socket.

The supervisor binds the port once and hands the socket to each worker (hypercorn's
`fd://`), so the kernel spreads connections over them and a restarted worker serves the same
port at once. SIGTERM/SIGINT drain every worker, SIGHUP makes each re-read the settings, and a
worker that dies is started again. The workers share quota through the Redis ledger.

Each worker reports on a pipe of its own, as a daemon reports to its parent, that it serves or
why it cannot: the supervisor is ready once every worker serves, and settings that stop the
first workers (Redis refusing them, say) stop the supervisor with that reason instead of a
restart loop. A worker also holds the read end of a pipe its supervisor keeps open: when
the supervisor is gone (kill -9), the worker drains and exits instead of serving on, orphaned.
"""

import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import trio

from ..config.schema import Config
from .daemon import FAILED, READY

log = logging.getLogger("trioproxy")

RESTART_BACKOFF_MAX = 10.0  # seconds between restarts of a worker that keeps dying at once
STEADY_SECONDS = 10.0  # a worker that ran this long died of something passing: restart at once


def bind_listener(config: Config) -> socket.socket:
    """The one listening socket, bound as the single-process server would bind it; the caller
    owns it (and closes it). Raises OSError when the address cannot be bound."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((config.host, config.port))
    listener.listen(1024)
    listener.set_inheritable(True)
    return listener


class WorkerStartError(Exception):
    """The first workers could not start: the message is for the user, `exit_code` theirs."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def worker_command(listen_fd: int, config_path: str | None) -> list[str]:
    """The command line of one worker: this Python running trioproxy on the inherited socket."""
    command = [sys.executable, "-m", "trioproxy", "--listen-fd", str(listen_fd)]
    return command + (["--config", config_path] if config_path else [])


class WorkerPool:
    """The worker processes: started, watched, restarted, signalled, and drained."""

    def __init__(self, count: int, command: Sequence[str], listen_fd: int) -> None:
        self._count = count
        self._command = list(command)
        self._listen_fd = listen_fd
        self._processes: dict[int, trio.Process] = {}
        self._serving: set[int] = set()  # the workers whose process has said it serves
        self._reload_when_serving: set[int] = set()  # still starting when a reload was asked
        self._stopped = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep `count` workers alive until `stop()`; ready once each serves; returns when the
        last one has exited. Raises WorkerStartError if a first worker cannot serve."""
        async with trio.open_nursery() as nursery:
            serving = [trio.Event() for _ in range(self._count)]
            for number, event in enumerate(serving, 1):  # spawned in order, started side by side
                await nursery.start(self._keep_alive, number, event)
            for event in serving:
                await event.wait()
            task_status.started()

    async def _keep_alive(self, number: int, serving: trio.Event, *, task_status: trio.TaskStatus[None]) -> None:
        backoff = 0.5
        while True:
            started = trio.current_time()
            pid, report, code = await self._run_worker(number, serving, task_status)
            task_status = trio.TASK_STATUS_IGNORED
            if self._stopped.is_set():
                log.info("worker %d (pid %d) stopped", number, pid)
                serving.set()  # stopped before it served, maybe: the pool need not wait for it
                return
            reason = report.removeprefix(FAILED).decode(errors="replace") if report.startswith(FAILED) else ""
            if not serving.is_set():  # its first start: settings it cannot serve stop everything
                raise WorkerStartError(
                    reason or f"worker {number} exited with {_exit_text(code)} before serving", 2 if code == 2 else 1
                )
            ran = trio.current_time() - started
            backoff = 0.5 if ran >= STEADY_SECONDS else min(backoff * 2, RESTART_BACKOFF_MAX)
            pause = 0.0 if ran >= STEADY_SECONDS else backoff
            log.error(
                "worker %d (pid %d) exited with %s%s; restarting in %.1f s",
                number, pid, _exit_text(code), f" ({reason})" if reason else "", pause,
            )
            with trio.move_on_after(pause):
                await self._stopped.wait()  # a stop during the pause: no new worker
            if self._stopped.is_set():
                return

    async def _run_worker(
        self, number: int, serving: trio.Event, task_status: trio.TaskStatus[None]
    ) -> tuple[int, bytes, int]:
        """One worker process from start to exit (`serving` is set when it says it serves): its
        pid, its report (READY/FAILED, or b"" if it died first) and its exit code. A cancelled
        supervisor stops it by signal, never orphans it."""
        read_end, write_end = os.pipe()
        lifeline, held_here = os.pipe()  # held_here closes with this process, however it ends
        try:
            # Its own process group: a terminal's Ctrl-C reaches the supervisor only, which
            # then stops each worker once (a second signal would cut its drain short).
            process = await trio.lowlevel.open_process(
                [*self._command, "--report-fd", str(write_end), "--lifeline-fd", str(lifeline)],
                pass_fds=(self._listen_fd, write_end, lifeline), process_group=0,
            )
        except BaseException:
            os.close(read_end)
            os.close(held_here)
            raise
        finally:
            os.close(write_end)
            os.close(lifeline)
        self._processes[number] = process
        log.info("worker %d started (pid %d)", number, process.pid)
        task_status.started()
        try:
            async with trio.lowlevel.FdStream(read_end) as reports:
                report = b""
                while chunk := await reports.receive_some():  # until it reports or exits
                    report += chunk
            if report.startswith(READY):
                self._serving.add(number)
                serving.set()
                if number in self._reload_when_serving:
                    self._reload_when_serving.discard(number)
                    self._hang_up(process)
            return process.pid, report, await process.wait()
        except BaseException:
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                await process.wait()
            raise
        finally:
            os.close(held_here)
            del self._processes[number]
            self._serving.discard(number)
            self._reload_when_serving.discard(number)  # its successor reads the settings afresh

    def signal_all(self, signum: int) -> None:
        """Send `signum` to every worker process alive."""
        for process in self._processes.values():
            process.send_signal(signum)

    def reload(self) -> None:
        """SIGHUP to each worker that serves. One still starting may have read the settings
        before they changed, but SIGHUP before its handler is in place would end it: it gets
        its SIGHUP once it says it serves."""
        for number, process in self._processes.items():
            if number in self._serving:
                self._hang_up(process)
            else:
                self._reload_when_serving.add(number)

    def _hang_up(self, process: trio.Process) -> None:
        """SIGHUP, unless the workers drain: a draining worker no longer handles it and would die of it."""
        if not self._stopped.is_set():
            process.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        """Drain: each worker finishes its requests and streams, then exits."""
        self._stopped.set()
        self.signal_all(signal.SIGTERM)


async def serve_as_worker(serve: Callable[[], Awaitable[None]], lifeline_fd: int) -> None:
    """A worker's whole run: `serve`, and a drain (SIGTERM to itself) if its supervisor dies."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_drain_when_orphaned, lifeline_fd)
        await serve()
        nursery.cancel_scope.cancel()


async def _drain_when_orphaned(lifeline_fd: int) -> None:
    async with trio.lowlevel.FdStream(lifeline_fd) as lifeline:
        while await lifeline.receive_some():  # the supervisor never writes: this waits for EOF
            pass
    log.warning("the supervisor is gone; this worker drains and exits")
    os.kill(os.getpid(), signal.SIGTERM)


def _exit_text(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}"


async def supervise_workers(
    config: Config, count: int, config_path: str | None, on_ready: Callable[[str], None] | None = None
) -> None:
    """Bind, start `count` workers, and relay signals to them until they have all drained.
    Raises OSError when the address cannot be bound, WorkerStartError when the first workers
    cannot start (with their reason)."""
    listener = bind_listener(config)
    host, port = listener.getsockname()[:2]
    base_url = f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"
    pool = WorkerPool(count, worker_command(listener.fileno(), config_path), listener.fileno())
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:

                async def run_pool(task_status: trio.TaskStatus[None]) -> None:
                    await pool.run(task_status=task_status)
                    nursery.cancel_scope.cancel()  # every worker has drained and exited

                nursery.start_soon(_relay_signals, signals, pool)  # a stop may come while they start
                await nursery.start(run_pool)
                log.info("trioproxy supervising %d workers at %s", count, base_url)
                if on_ready is not None:
                    on_ready(base_url)
    finally:
        listener.close()


async def _relay_signals(signals: AsyncIterator[int], pool: WorkerPool) -> None:
    """SIGHUP reloads every worker; a stop signal drains them; a second one ends them at once."""
    stops = 0
    async for signum in signals:
        if signum == signal.SIGHUP:
            if stops:
                log.info("received SIGHUP while the workers drain; nothing to reload")
                continue
            log.info("received SIGHUP, reloading every worker")
            pool.reload()
            continue
        stops += 1
        if stops == 1:
            log.info("received %s, draining the workers", signal.Signals(signum).name)
            pool.stop()
        else:
            log.warning("received %s again, ending the workers now", signal.Signals(signum).name)
            pool.signal_all(signal.SIGKILL)
