"""Running in the background: detaching, the pidfile, and `trioproxy stop`.

Foreground is the default (right under systemd). `--daemon` forks twice before Trio starts
(no threads exist yet), and the first process waits until the detached one reports that it
serves, or why it cannot, so the user sees a bind error instead of a silent exit.
"""

import errno
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

READY = b"ready "
FAILED = b"failed "


class DaemonError(Exception):
    """The daemon cannot start or be stopped; the message is for the user."""


def running_pid(pidfile: Path) -> int | None:
    """The pid in `pidfile` if that process is alive; None for no file or a stale one."""
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid  # alive, someone else's
    return pid


def claim_pidfile(pidfile: Path) -> None:
    """Write our pid, atomically; raises DaemonError if another live instance holds the file."""
    other = running_pid(pidfile)
    if other is not None and other != os.getpid():
        raise DaemonError(f"trioproxy is already running (pid {other}, pidfile {pidfile})")
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    temporary = pidfile.with_name(f".{pidfile.name}.{os.getpid()}")
    temporary.write_text(f"{os.getpid()}\n")
    os.replace(temporary, pidfile)


def release_pidfile(pidfile: Path) -> None:
    """Remove the pidfile if it still names this process (another instance may have taken it)."""
    if running_pid(pidfile) == os.getpid():
        pidfile.unlink(missing_ok=True)


def detach(log_file: Path) -> Callable[[bytes], None]:
    """Fork into the background. Returns, in the detached process, a function that reports
    `READY <url>` or `FAILED <reason>` to the waiting parent, which then exits with 0 or 1."""
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        sys.exit(_wait_for_report(read_end))
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    _redirect_stdio(log_file)
    return reporter(write_end)


def reporter(write_end: int) -> Callable[[bytes], None]:
    """Report `READY <url>` or `FAILED <reason>` once on `write_end` (to a waiting daemon
    parent, or to the supervisor of `--workers`), then close it."""
    reported = False

    def report(message: bytes) -> None:
        nonlocal reported
        if not reported:
            reported = True
            os.write(write_end, message)
            os.close(write_end)

    return report


def _wait_for_report(read_end: int) -> int:
    chunks = []
    while chunk := os.read(read_end, 4096):
        chunks.append(chunk)
    message = b"".join(chunks)
    if message.startswith(READY):
        print(f"trioproxy running in the background at {message[len(READY):].decode()}")
        return 0
    reason = message[len(FAILED):].decode() if message.startswith(FAILED) else "it exited before serving"
    print(f"trioproxy: the daemon did not start: {reason}", file=sys.stderr)
    return 1


def _redirect_stdio(log_file: Path) -> None:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(os.devnull, "rb") as null:
        os.dup2(null.fileno(), 0)
    with open(log_file, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)


def stop(pidfile: Path, timeout: float) -> str:
    """SIGTERM the instance in `pidfile` and wait (bounded) until it has exited; returns the line
    to show. Raises DaemonError when none runs or it outlives `timeout`."""
    pid = running_pid(pidfile)
    if pid is None:
        raise DaemonError(f"no trioproxy is running (pidfile {pidfile})")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError as error:
            if error.errno == errno.ESRCH:
                return f"trioproxy (pid {pid}) stopped"
            raise
        time.sleep(0.05)
    raise DaemonError(f"trioproxy (pid {pid}) did not exit within {timeout:.0f} s")
