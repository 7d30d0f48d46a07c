"""A trioproxy and its emulated providers on a Trio thread, and Debian's chromium under Playwright.

For tests and scripts that drive a real browser: Playwright's sync API wants the main thread,
so the proxy's Trio loop runs on another one (test code only; the product has no threads).
"""

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import attrs
import trio
from playwright.sync_api import Browser, BrowserContext, sync_playwright

from support.proxies import Providers, proxy_config
from trioproxy.process.supervisor import run_proxy
from trioproxy.testing import emulator

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
T = TypeVar("T")


@attrs.define
class LiveProxy:
    root_url: str  # http://127.0.0.1:PORT
    providers: Providers
    _token: trio.lowlevel.TrioToken
    _shutdown: trio.Event

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the proxy's Trio thread (e.g. to change an emulator's faults)."""
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def stop(self) -> None:
        self.call(self._shutdown.set)


@contextmanager
def live_proxy(**overrides: Any) -> Iterator[LiveProxy]:
    """Emulated Cerebras and Chutes plus a trioproxy on port 0, settings as in `proxy_config`."""
    ready: queue.Queue[LiveProxy | BaseException] = queue.Queue()

    async def main() -> None:
        try:
            async with trio.open_nursery() as nursery:
                cerebras, chutes = emulator.cerebras(), emulator.chutes()
                providers = Providers(
                    cerebras, chutes, await nursery.start(emulator.serve, cerebras), await nursery.start(emulator.serve, chutes)
                )
                shutdown = trio.Event()
                async with trio.open_nursery() as proxy_nursery:  # left once run_proxy has drained
                    base_url = await proxy_nursery.start(run_proxy, proxy_config(providers, **overrides), shutdown)
                    token = trio.lowlevel.current_trio_token()
                    ready.put(LiveProxy(base_url.removesuffix("/v1"), providers, token, shutdown))
                nursery.cancel_scope.cancel()  # then the emulators go
        except BaseException as error:
            ready.put(error)
            raise

    failure: list[BaseException] = []

    def run() -> None:
        try:
            trio.run(main)
        except BaseException as error:  # reported by the caller's thread
            failure.append(error)

    thread = threading.Thread(target=run, name="trioproxy-live", daemon=True)
    thread.start()
    started = ready.get(timeout=30)
    if isinstance(started, BaseException):
        thread.join(10)
        raise started
    try:
        yield started
    finally:
        started.stop()
        thread.join(30)
        assert not thread.is_alive(), "the proxy's thread did not stop"
        if failure:
            raise failure[0]


@contextmanager
def chromium_browser(*extra_args: str) -> Iterator[Browser]:
    """Debian's headless chromium with `extra_args` on its command line, launched once for many
    pages; never downloads a browser."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_ARGS, *extra_args])
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def browser_context(browser: Browser, **context_options: Any) -> Iterator[BrowserContext]:
    """A fresh context (its own cookies, storage and network state) in a running browser."""
    context = browser.new_context(**context_options)
    try:
        yield context
    finally:
        context.close()


@contextmanager
def chromium(*extra_args: str, **context_options: Any) -> Iterator[BrowserContext]:
    """A headless chromium of its own (`extra_args` on its command line) with one fresh context."""
    with chromium_browser(*extra_args) as browser, browser_context(browser, **context_options) as context:
        yield context
