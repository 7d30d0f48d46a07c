"""The records the fixtures hand out (emulated providers, a running proxy) and the settings that
point a proxy at the emulators."""

from collections.abc import Callable
from typing import Any

import attrs
import trio

from trioproxy.config.schema import Config
from trioproxy.testing import emulator


@attrs.define
class Providers:
    cerebras: emulator.EmulatedProvider
    chutes: emulator.EmulatedProvider
    cerebras_url: str
    chutes_url: str


@attrs.define
class Proxy:
    base_url: str
    config: Config
    shutdown: trio.Event


def proxy_config(providers: Providers, **overrides: Any) -> Config:
    """Settings pointing at the emulators, port 0; `cerebras`/`chutes` dicts override provider keys."""
    # Tests never touch the user's state directory; patience is off unless a test turns it on,
    # so every other test sees the immediate fallback it was written for.
    base = Config(port=0, state_file="", max_wait_ms=0)
    cerebras = attrs.evolve(
        base.cerebras,
        **{"base_url": providers.cerebras_url, "api_key": providers.cerebras.api_key, **overrides.pop("cerebras", {})},
    )
    chutes = attrs.evolve(
        base.chutes,
        **{"base_url": providers.chutes_url, "api_key": providers.chutes.api_key, **overrides.pop("chutes", {})},
    )
    return attrs.evolve(base, cerebras=cerebras, chutes=chutes, **overrides)


StartProxy = Callable[..., Any]
