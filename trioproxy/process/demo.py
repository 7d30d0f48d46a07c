"""Demo mode: emulated Cerebras and Chutes inside the proxy's own process, so it runs with no keys."""

import logging
import os

import attrs
import trio

from ..testing import emulator
from ..config.schema import Config

log = logging.getLogger("trioproxy")

# The emulated Cerebras has a Code Pro key: it enforces that plan's limits and states them in
# its headers, so the proxy's learned limits are exercised against a provider that says 429.
DEMO_CEREBRAS_PLAN = "code-pro"
# Cerebras counts uncached prompt tokens in a bucket of their own, whose figure no header states:
# the demo's Cerebras keeps one of a third of the plan's tokens a minute (one summary says the
# total is typically about 3x the uncached, unconfirmed), and the demo's settings name it, so
# both buckets and the prompt cache's share show in the status and the dashboard.
DEMO_UNCACHED_TOKENS_PER_MINUTE = 55_000
# Set to n, the demo's Cerebras breaks every n-th stream off mid-answer (continuation at work).
CUT_EVERY_ENV = "TRIOPROXY_DEMO_CUT_EVERY"


@attrs.frozen
class DemoProviders:
    """Where the demo's emulators listen; `apply` points any settings at them (also on reload)."""

    cerebras_url: str
    cerebras_key: str
    chutes_url: str
    chutes_key: str

    def apply(self, config: Config) -> Config:
        """`config` pointed at the emulators (a new Config), with nothing saved to a state file."""
        return attrs.evolve(
            config,
            state_file="",  # the emulators' quota is not the real one: never save it
            cerebras=attrs.evolve(config.cerebras, base_url=self.cerebras_url, api_key=self.cerebras_key,
                                  uncached_tokens_per_minute=config.cerebras.uncached_tokens_per_minute
                                  or DEMO_UNCACHED_TOKENS_PER_MINUTE),
            chutes=attrs.evolve(config.chutes, base_url=self.chutes_url, api_key=self.chutes_key),
        )


async def start_demo_providers(nursery: trio.Nursery, config: Config) -> DemoProviders:
    """Start both emulators in `nursery`, listing today's catalogues (and the models `config` asks for)."""
    listed = demo_catalogues(config)
    cerebras = emulator.cerebras(model=listed["cerebras"][0], more_models=listed["cerebras"][1:],
                                 plan=DEMO_CEREBRAS_PLAN, uncached_tokens_per_minute=DEMO_UNCACHED_TOKENS_PER_MINUTE)
    chutes = emulator.chutes(model=listed["chutes"][0], more_models=listed["chutes"][1:])
    cut_every = os.environ.get(CUT_EVERY_ENV, "")
    if cut_every.isdigit() and int(cut_every) > 0:
        # Cerebras breaks every n-th stream off after a few events; Chutes answers Cerebras's
        # text, as one model on two providers would, so it can finish what Cerebras broke off.
        cerebras.break_every_nth_stream = int(cut_every)
        chutes.speaks_as = "cerebras"
        log.warning("demo: the emulated Cerebras breaks every %s. stream off (%s)", cut_every, CUT_EVERY_ENV)
    cerebras_url = await nursery.start(emulator.serve, cerebras)
    chutes_url = await nursery.start(emulator.serve, chutes)
    return DemoProviders(cerebras_url, cerebras.api_key, chutes_url, chutes.api_key)


def demo_catalogues(config: Config) -> dict[str, list[str]]:
    """What each demo emulator's `GET /models` lists: today's catalogue, plus the first candidate
    of every list of `config` that names none of it, so a route of one's own works in the demo."""
    listed = {"cerebras": list(emulator.CEREBRAS_MODELS), "chutes": list(emulator.CHUTES_MODELS)}
    for provider, candidates in _candidate_lists(config):
        if provider in listed and not set(candidates) & set(listed[provider]):
            listed[provider].append(candidates[0])
    return listed


def demo_choices(config: Config) -> str:
    """Which model serves the routes in the demo, e.g. `cerebras gpt-oss-120b, chutes Qwen/...`."""
    listed = demo_catalogues(config)
    chosen = (f"{provider} {next(m for m in candidates if m in listed[provider])}"
              for provider, candidates in _candidate_lists(config) if provider in listed)
    return ", ".join(dict.fromkeys(chosen))


def _candidate_lists(config: Config) -> list[tuple[str, tuple[str, ...]]]:
    """(provider, candidates) of every route entry, in route order."""
    everyone = {p.name: p for p in config.providers}
    return [(entry.provider, entry.applied_to(everyone[entry.provider]).model)
            for route in config.routes for entry in route.providers]


def show_demo_banner(base_url: str, model: str, served_by: str, stop: str, as_log: bool) -> None:
    """What the demo is and a request to try: printed for a terminal, one log line otherwise.

    `served_by` says which provider model serves `model` (see `demo_choices`)."""
    body = f'{{"model":"{model}","messages":[{{"role":"user","content":"Hello"}}]}}'
    curl = f"curl -s {base_url}/chat/completions -H 'content-type: application/json' -d '{body}'"
    if as_log:
        log.info("demo: emulated Cerebras and Chutes run inside this process, no keys needed; base URL %s, model %s (served by %s), any API key; try: %s; stop: %s", base_url, model, served_by, curl, stop)
        return
    print(
        "\ntrioproxy demo: emulated Cerebras and Chutes run inside this process; no keys needed.\n"
        f"  base URL: {base_url}   model: {model}   API key: any non-empty string\n"
        f"  served by: {served_by} (the first candidate each emulated catalogue lists)\n"
        f"  try:  {curl}\n"
        f"  stop: {stop}\n",
        flush=True,
    )
