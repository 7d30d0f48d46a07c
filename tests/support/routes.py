"""Two model routes on one Cerebras key, as tests and the dashboard's browser tests use them, and
emulators that list the original Qwen3-Coder ids as the providers' own models."""

from typing import Any

from trioproxy.config.schema import ModelRoute, RouteProvider
from trioproxy.testing import emulator


def on(provider: str, model: str | None = None, **overrides: Any) -> RouteProvider:
    return RouteProvider(provider=provider, model=model, **overrides)


QWEN = "qwen-3-coder"
OSS = "gpt-oss-120b"
CEREBRAS_OSS = "gpt-oss-120b"
CHUTES_OSS = "openai/gpt-oss-120b"
ROUTES = (
    ModelRoute(QWEN, (on("cerebras"), on("chutes")), aliases=("claude-*",)),
    ModelRoute(OSS, (on("cerebras", CEREBRAS_OSS), on("chutes", CHUTES_OSS)), aliases=("oss", "gpt-oss-*")),
)


# These tests route between two models of one catalogue: the original Qwen3-Coder ids as the
# providers' own models (one candidate each) and gpt-oss. Today's catalogues are
# tests/routing/test_catalogues.py's business.
CEREBRAS_QWEN = "qwen-3-coder-480b"
CHUTES_QWEN = "Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8"


def list_only(provider: emulator.EmulatedProvider, model: str, *more: str) -> None:
    """Make an emulator list (and serve) exactly these models."""
    provider.model, provider.more_models = model, list(more)


def qwen_settings(**overrides: Any) -> dict[str, Any]:
    """`proxy_config` overrides with the Qwen3-Coder ids as the providers' own models."""
    for name, model in (("cerebras", CEREBRAS_QWEN), ("chutes", CHUTES_QWEN)):
        overrides[name] = {"model": model, **overrides.get(name, {})}
    return overrides
