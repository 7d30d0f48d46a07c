"""A real redis-server of its own (Debian's package), for tests and benchmarks: a free port on
127.0.0.1, its own folder, no persistence, killed at the end."""

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs

from .ports import free_port


@attrs.define
class RedisServer:
    port: int
    folder: Path
    password: str | None = None
    prefix: tuple[str, ...] = ()  # e.g. ("taskset", "-c", "1") to pin it to a core
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (again, on the same port) and wait until it answers, at most 10 s."""
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is missing: ./scripts/test installs Debian's redis-server"
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        command += ["--dir", str(self.folder)] + (["--requirepass", self.password] if self.password else [])
        self.process = subprocess.Popen([*self.prefix, *command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused server cannot die otherwise
            self.process.kill()
            self.process.wait(10)

    def pause(self) -> None:
        """Freeze the server (a network pause): connections stay open, nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


@contextmanager
def running_redis(folder: Path, password: str | None = None, prefix: tuple[str, ...] = ()) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), folder, password, prefix)
    server.start()
    try:
        yield server
    finally:
        server.stop()
