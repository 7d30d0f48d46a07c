"""Saving the quota ledger to a state file, so a restart does not forget today's spending.

Times are stored as wall-clock timestamps (Trio's clock restarts with the process) and the
file is replaced atomically, so a crash mid-write leaves the previous state intact.
"""

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import trio

from .clients import ClientBook
from .ledger import QuotaLedger
from .state_file import StateFileError, decode_state, encode_state

log = logging.getLogger("trioproxy.state")


def default_state_path(environ: dict[str, str] | None = None) -> Path:
    """`$XDG_STATE_HOME/trioproxy/state.json`, else `~/.local/state/trioproxy/state.json`."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "trioproxy" / "state.json"


def resolve_state_path(setting: str) -> Path | None:
    """The file a `state_file` setting names: "auto" for the default, "" for none."""
    if setting == "":
        return None
    return default_state_path() if setting == "auto" else Path(setting).expanduser()


def _temporary_path(path: Path, pid: int) -> Path:
    return path.with_name(f".{path.name}.{pid}.tmp")


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_path(path, os.getpid())
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete what writers killed mid-write left behind (a live writer's file is left alone)."""
    removed = []
    for temporary in path.parent.glob(f".{path.name}.*.tmp"):
        pid = temporary.name[len(path.name) + 2 : -len(".tmp")]
        if pid.isdigit() and int(pid) != os.getpid() and _process_alive(int(pid)):
            continue
        try:
            temporary.unlink()
        except OSError:
            continue
        removed.append(temporary)
    return removed


class StatePersister:
    """Loads the ledger (and the clients' book) at start, saves them every `interval` seconds and once
    more at the end."""

    def __init__(
        self,
        ledger: QuotaLedger | Callable[[], QuotaLedger],
        path: Path,
        interval: float,
        wall_clock: Callable[[], float] = time.time,
        clients: ClientBook | None = None,
    ) -> None:
        # A callable follows the ledger a reload swaps in.
        self._current = ledger if callable(ledger) else (lambda: ledger)
        self._clients = clients  # one book for the process's life: a reload keeps it
        self._path = path
        self._interval = interval
        self._wall_clock = wall_clock

    def _wall_offset(self) -> float:
        """Add to a Trio time to get a wall-clock time."""
        return self._wall_clock() - self._current().now()

    async def load(self) -> None:
        """Restore saved state. A missing file is a fresh start; a file that cannot be read or
        trusted is moved aside with a warning and the ledger starts fresh: never a failed start."""
        for temporary in await trio.to_thread.run_sync(remove_stale_temporaries, self._path):
            log.info("removed %s, left by a write that did not finish", temporary)
        try:
            raw = await trio.Path(self._path).read_bytes()
        except FileNotFoundError:
            return
        except OSError as error:
            log.warning("cannot read state file %s (%s); starting with a fresh quota ledger", self._path, error.strerror)
            return
        try:
            ledger_state, clients_state = decode_state(raw, self._wall_clock())
            restored = self._current().import_state(ledger_state, -self._wall_offset())
            if self._clients is not None and clients_state is not None:
                self._clients.import_state(clients_state, -self._wall_offset())
        except StateFileError as error:
            await self._move_aside(str(error))
            return
        log.info("quota state restored from %s (%d accounts)", self._path, restored)

    async def _move_aside(self, reason: str) -> None:
        aside = self._path.with_name(f"{self._path.name}.corrupt-{int(self._wall_clock())}")
        try:
            await trio.Path(self._path).rename(aside)
        except OSError as error:
            log.warning("state file %s is unreadable (%s) and cannot be moved aside (%s); starting fresh", self._path, reason, error.strerror)
            return
        log.warning("state file %s is unreadable (%s); kept as %s, starting fresh", self._path, reason, aside)

    async def save(self) -> None:
        """Write the ledger's (and the clients') state, replacing the file atomically; a write
        that fails is logged, never raised: the proxy serves on and the next save tries again."""
        offset = self._wall_offset()
        clients = self._clients.export_state(offset) if self._clients is not None else None
        data = encode_state(self._current().export_state(offset), clients)
        try:
            await trio.to_thread.run_sync(_write_atomically, self._path, data)
        except OSError as error:
            log.warning("cannot save quota state to %s: %s", self._path, error.strerror)

    async def run(self) -> None:
        """Save periodically until cancelled, then save a last time."""
        try:
            while True:
                await trio.sleep(self._interval)
                await self.save()
        finally:
            with trio.CancelScope(shield=True):
                await self.save()
