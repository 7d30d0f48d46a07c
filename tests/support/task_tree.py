"""The task tree of a running Trio program, read from a test: which tasks run under the proxy or
an emulator, how many connections a server holds, and what is left after the work is done."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

import trio

from trioproxy.testing.emulator import EmulatedProvider, serve


def _children(task: trio.lowlevel.Task) -> Iterator[trio.lowlevel.Task]:
    for nursery in task.child_nurseries:
        yield from nursery.child_tasks


def all_tasks() -> Iterator[trio.lowlevel.Task]:
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        if task is None:
            continue
        yield task
        stack.extend(_children(task))


def descendants(task: trio.lowlevel.Task) -> list[trio.lowlevel.Task]:
    found, stack = [], list(_children(task))
    while stack:
        task = stack.pop()
        found.append(task)
        stack.extend(_children(task))
    return found


def local_variable(task: trio.lowlevel.Task, name: str) -> Any:
    frame = getattr(task.coro, "cr_frame", None)
    return frame.f_locals.get(name) if frame is not None else None


def emulator_task(provider: EmulatedProvider) -> trio.lowlevel.Task:
    """The task running `emulator.serve(provider)`."""
    for task in all_tasks():
        running = getattr(task.coro, "cr_code", None)
        if running is serve.__code__ and local_variable(task, "provider") is provider:
            return task
    raise LookupError("emulator task not found")


def open_connections(server_task: trio.lowlevel.Task) -> int:
    """Connection handler tasks alive under a server task (trio.serve_listeners' handlers)."""
    return sum(1 for task in descendants(server_task) if task.name.endswith("_run_handler"))


# Tasks that come and go by design: cooldown timers, the health prober, and Hypercorn's
# keep-alive timer, which outlives a closed connection by up to keep_alive_timeout (5 s) when
# the connection never produced a request (e.g. protocol junk); shutdown ends those at once.
TIMERS = ("CooldownTimers", "HealthProber", "TCPServer._idle_timeout", "_run_handler")


def busy_tasks(proxy_task: trio.lowlevel.Task) -> list[str]:
    """Names of the tasks under run_proxy that do work: everything but the timers above."""
    return sorted(t.name for t in descendants(proxy_task) if not any(timer in t.name for timer in TIMERS))


def idle_connections_only(proxy_task: trio.lowlevel.Task) -> bool:
    """Every connection Hypercorn still holds is only waiting out its keep-alive timer."""
    names = [t.name for t in descendants(proxy_task)]
    handlers = sum(name.endswith("_run_handler") for name in names)
    return handlers <= sum(name.endswith("TCPServer._idle_timeout") for name in names)


def serving_no_request(proxy_task: trio.lowlevel.Task) -> bool:
    """No request is being handled: Hypercorn's handler task of the last one has ended too (it
    can outlive the response its client has already read)."""
    return not any(t.name.endswith("._handle") for t in descendants(proxy_task))


def task_difference(before: list[str], after: list[str]) -> dict[str, int]:
    """Tasks by name that are more (or fewer, negative) now than before."""
    counts = collections.Counter(after)
    counts.subtract(collections.Counter(before))
    return {name: n for name, n in counts.items() if n}


def proxy_task(shutdown: trio.Event) -> trio.lowlevel.Task:
    """The task running `run_proxy(config, shutdown)` for this `shutdown` event."""
    return next(t for t in all_tasks() if t.name.endswith("run_proxy") and local_variable(t, "shutdown") is shutdown)


async def wait_for_exit(nursery: trio.Nursery) -> None:
    """Until every task of `nursery` has ended (bound it with trio.fail_after)."""
    while nursery.child_tasks:
        await trio.sleep(0.01)
