"""Processes a test left running, found by a path only that test uses (its tmp_path): a daemon
detaches into a session of its own and its workers into groups of their own, so neither a
process group nor the pidfile (written late, or never, when the test gave up first) finds them
all, but each holds the test's path on its command line (its pidfile, log or settings).

Matching only paths under one test's own directory keeps this away from every other process on
the machine, other test runs included (each run has its own numbered temporary root)."""

import os
import signal
from pathlib import Path

import trio

PROC = Path("/proc")
GONE_SECONDS = 10.0  # for killed processes to be gone, or for exiting ones to finish by themselves


def processes_holding(directory: Path) -> dict[int, str]:
    """The live processes (this one aside) with `directory` or a path under it on their command
    line: pid -> the command line, arguments joined by spaces. A zombie has no command line left."""
    marker = str(directory).encode()
    found = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if any(argument == marker or argument.startswith(marker + b"/") or b"=" + marker + b"/" in argument
               for argument in arguments):
            found[int(entry.name)] = b" ".join(arguments).decode(errors="replace").strip()
    return found


async def gone_by_themselves(directory: Path, seconds: float = GONE_SECONDS) -> dict[int, str]:
    """Wait up to `seconds` for the processes holding `directory` to exit (one that is stopping
    may still be finishing); those still running then."""
    with trio.move_on_after(seconds):
        while processes_holding(directory):
            await trio.sleep(0.05)
    return processes_holding(directory)


async def kill_holding(directory: Path, seconds: float = GONE_SECONDS) -> dict[int, str]:
    """SIGKILL every process holding `directory` and wait until none is left: scanned again
    after each round, so a child forked meanwhile (a daemon detaching late) is found too, with
    its parent's command line. Returns what was killed; raises TooSlowError if some still run
    after `seconds`."""
    killed: dict[int, str] = {}
    with trio.fail_after(seconds):
        while found := processes_holding(directory):
            for pid, command in found.items():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                killed.setdefault(pid, command)
            await trio.sleep(0.05)
    return killed


async def end_left_behind(directory: Path, grace: float = GONE_SECONDS) -> dict[int, str]:
    """What a test left running under `directory`, once exiting processes had `grace` seconds to
    finish: killed, and returned (pid -> command line) for the test to fail on."""
    if not await gone_by_themselves(directory, grace):
        return {}
    return await kill_holding(directory)
