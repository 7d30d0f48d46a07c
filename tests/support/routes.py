"""Two model routes on one Cerebras key, as tests and the dashboard's browser tests use them."""

from typing import Any

from trioproxy.config import ModelRoute, RouteProvider


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
