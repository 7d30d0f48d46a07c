"""Demo mode: emulated Cerebras and Chutes inside the proxy's own process, so it runs with no keys."""

import logging

import attrs
import trio

from .testing import emulator
from .config import Config

log = logging.getLogger("trioproxy")

# The emulated Cerebras enforces the real paid-plan limits, so the proxy's 80 % defaults
# (or whatever is configured) are exercised against a provider that really says 429.
REAL_CEREBRAS_LIMITS = {"requests_per_minute": 15, "tokens_per_minute": 165_000, "tokens_per_day": 24_000_000}


@attrs.frozen
class DemoProviders:
    """Where the demo's emulators listen; `apply` points any settings at them (also on reload)."""

    cerebras_url: str
    cerebras_key: str
    chutes_url: str
    chutes_key: str

    def apply(self, config: Config) -> Config:
        return attrs.evolve(
            config,
            state_file="",  # the emulators' quota is not the real one: never save it
            cerebras=attrs.evolve(config.cerebras, base_url=self.cerebras_url, api_key=self.cerebras_key),
            chutes=attrs.evolve(config.chutes, base_url=self.chutes_url, api_key=self.chutes_key),
        )


async def start_demo_providers(nursery: trio.Nursery, config: Config) -> DemoProviders:
    """Start both emulators in `nursery`, serving the models `config` names."""
    cerebras = emulator.cerebras(model=config.cerebras.model, more_models=_route_models(config, "cerebras"),
                                 **REAL_CEREBRAS_LIMITS)
    chutes = emulator.chutes(model=config.chutes.model, more_models=_route_models(config, "chutes"))
    cerebras_url = await nursery.start(emulator.serve, cerebras)
    chutes_url = await nursery.start(emulator.serve, chutes)
    return DemoProviders(cerebras_url, cerebras.api_key, chutes_url, chutes.api_key)


def _route_models(config: Config, provider: str) -> list[str]:
    """The other models the routes ask of `provider`, so its emulator serves them too."""
    own = getattr(config, provider).model
    wanted = (entry.model for route in config.routes for entry in route.providers if entry.provider == provider)
    return list(dict.fromkeys(model for model in wanted if model is not None and model != own))


def show_demo_banner(base_url: str, model: str, stop: str, as_log: bool) -> None:
    """What the demo is and a request to try: printed for a terminal, one log line otherwise."""
    body = f'{{"model":"{model}","messages":[{{"role":"user","content":"Hello"}}]}}'
    curl = f"curl -s {base_url}/chat/completions -H 'content-type: application/json' -d '{body}'"
    if as_log:
        log.info("demo: emulated Cerebras and Chutes run inside this process, no keys needed; base URL %s, model %s, any API key; try: %s; stop: %s", base_url, model, curl, stop)
        return
    print(
        "\ntrioproxy demo: emulated Cerebras and Chutes run inside this process; no keys needed.\n"
        f"  base URL: {base_url}   model: {model}   API key: any non-empty string\n"
        f"  try:  {curl}\n"
        f"  stop: {stop}\n",
        flush=True,
    )
