"""A proxy whose settings a test reloads, as SIGHUP does, through a channel."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing

from support.proxies import Proxy
from trioproxy.config.schema import Config
from trioproxy.process.supervisor import run_proxy


@asynccontextmanager
async def reloadable_proxy(config: Config) -> AsyncIterator[tuple[Proxy, trio.MemorySendChannel[Config]]]:
    """A proxy serving `config`, and the channel that reloads it; stopped on the way out."""
    send_reloads, receive_reloads = trio.open_memory_channel[Config](1)
    async with trio.open_nursery() as nursery:
        shutdown = trio.Event()
        yield Proxy(await nursery.start(run_proxy, config, shutdown, receive_reloads), config, shutdown), send_reloads
        shutdown.set()
