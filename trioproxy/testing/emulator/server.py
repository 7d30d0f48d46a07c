"""`serve`: listen on a local socket and serve one emulated provider until cancelled."""

from __future__ import annotations

import ssl
from functools import partial
from typing import Any

import trio

from .connection import serve_connection
from .provider import EmulatedProvider


async def serve(provider: EmulatedProvider, host: str = "127.0.0.1", port: int = 0, *,
                ssl_context: ssl.SSLContext | None = None,
                task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled. task_status.started(base_url) with base_url like
    'http://127.0.0.1:43817/v1' ('https://...' with `ssl_context`, as the real providers
    serve). Connection tasks live in a nursery owned by this call."""
    now, day = provider.clock(), provider.today
    if provider.day_started_at is not None or day.start is None:
        # The daily windows start with serving unless the day was placed.
        start = now if provider.day_started_at is None else provider.day_started_at
        day.place(now, start, provider.day_tokens_used)
    else:
        day.roll(now)  # served again: the same day goes on
    tcp_listeners = await trio.open_tcp_listeners(port, host=host)
    bound = tcp_listeners[0].socket.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    listeners: list[trio.abc.Listener[Any]] = list(tcp_listeners)
    if ssl_context is not None:
        listeners = [trio.SSLListener(listener, ssl_context, https_compatible=True) for listener in tcp_listeners]
    scheme = "http" if ssl_context is None else "https"
    task_status.started(f"{scheme}://{shown}:{bound}/v1")
    await trio.serve_listeners(partial(serve_connection, provider), listeners)
