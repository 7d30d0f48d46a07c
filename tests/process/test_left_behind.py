"""No process outlives its test: what a test started is found by the test's own directory on its
command line, even after it detached as `--daemon` does (two forks and a session of its own),
and nothing else on the machine is (conftest.py ends every test with this check)."""

import sys
from pathlib import Path

import trio

from support.leftovers import end_left_behind, kill_holding, processes_holding

# Detaches as trioproxy's --daemon does: fork, setsid, fork again; the first two exit.
DETACHING = """
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(120)
    os._exit(0)
"""
WAITING = "import time; time.sleep(120)"


async def test_a_process_that_detached_is_found_by_the_test_directory_and_killed(tmp_path: Path) -> None:
    started = await trio.run_process([sys.executable, "-c", DETACHING, str(tmp_path / "daemon.pid")])
    assert started.returncode == 0
    with trio.fail_after(10):
        while len(found := processes_holding(tmp_path)) != 1:  # the grandchild, once its parent left
            await trio.sleep(0.05)
    [command] = found.values()
    assert str(tmp_path / "daemon.pid") in command
    assert await end_left_behind(tmp_path, 0.2) == found
    assert processes_holding(tmp_path) == {}
    assert await kill_holding(tmp_path) == {}  # nothing left to kill


async def test_a_process_that_exits_by_itself_in_time_is_not_counted_as_left_behind(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.run_process, [sys.executable, "-c", "import time; time.sleep(0.5)", str(tmp_path)])
        with trio.fail_after(10):
            while not processes_holding(tmp_path):
                await trio.sleep(0.05)
        assert await end_left_behind(tmp_path, 10) == {}


async def test_processes_of_other_directories_are_left_alone(tmp_path: Path) -> None:
    """A sibling whose name starts with this one's (test_x1 and test_x10), or a parent, is another test's."""
    others = [f"{tmp_path}0/settings.toml", str(tmp_path.parent), f"--config={tmp_path}0/x"]
    process = await trio.lowlevel.open_process([sys.executable, "-c", WAITING, *others])
    try:
        with trio.fail_after(10):
            while process.pid not in processes_holding(tmp_path.parent):  # (started)
                await trio.sleep(0.05)
        assert processes_holding(tmp_path) == {}
        assert await kill_holding(tmp_path) == {}
        assert process.poll() is None
    finally:
        process.kill()
        await process.wait()


async def test_a_path_given_as_an_option_value_is_found(tmp_path: Path) -> None:
    process = await trio.lowlevel.open_process([sys.executable, "-c", WAITING, f"--pidfile={tmp_path}/trioproxy.pid"])
    try:
        with trio.fail_after(10):
            while process.pid not in processes_holding(tmp_path):
                await trio.sleep(0.05)
        assert await kill_holding(tmp_path) == {process.pid: f"{sys.executable} -c {WAITING} --pidfile={tmp_path}/trioproxy.pid"}
        assert await process.wait() == -9
    finally:
        if process.poll() is None:
            process.kill()
