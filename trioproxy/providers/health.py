"""The health prober: a cheap `GET /models` per provider, so dead providers and missing models
are skipped without spending chat requests (or quota) on them.

One probe per provider serves every route: the provider's list is checked for each model the
routes ask of it.
"""

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import trio
from attrs import define, field

from .upstream import Upstream, UpstreamFailure

log = logging.getLogger("trioproxy.health")


@define
class ProviderHealth:
    """What the prober last learned of one provider. Until a probe says otherwise, it is up."""

    up: bool = True
    consecutive_failures: int = 0
    last_error: str = ""
    listed: frozenset[str] | None = None  # the model ids of the last good probe; None: not known yet
    # Models a chat answer said do not exist (Cerebras answers retired ids with 503): skipped
    # at once, until a probe lists them again.
    missing: set[str] = field(factory=set)
    next_probe_at: float | None = None  # clock time of the next probe, once the prober runs

    def offers(self, model: str) -> bool | None:
        """Whether the provider offers `model`; None while no probe has answered."""
        if model in self.missing:
            return False
        return None if self.listed is None else model in self.listed

    def usable_for(self, model: str) -> bool:
        return self.up and self.offers(model) is not False

    def why_not(self, model: str) -> str:
        return "model_missing" if self.offers(model) is False else "down"

    def mark_missing(self, provider: str, model: str) -> None:
        if model not in self.missing:
            self.missing.add(model)
            log.warning("%s says model %s does not exist; skipped until its model list shows it", provider, model)

    def view(self, model: str) -> dict[str, Any]:
        """The state operators see for one model of this provider."""
        offered = self.offers(model)
        error = self.last_error
        if not error and offered is False:
            error = f"model {model} not listed" if model not in self.missing else f"model {model} does not exist"
        return {"up": self.up, "model_offered": offered, "consecutive_failures": self.consecutive_failures,
                "last_error": error}


class HealthProber:
    """Probes every provider each `interval` seconds; `failures_to_down` failures in a row mark it down.

    `models` names, per provider, the models the routes want of it (for logging what changed).
    """

    def __init__(
        self,
        upstreams: Sequence[Upstream],
        models: Mapping[str, Sequence[str]],
        health: dict[str, ProviderHealth],
        interval: float,
        failures_to_down: int,
    ) -> None:
        self._upstreams = upstreams
        self._models = models
        self._health = health
        self._interval = interval
        self._failures_to_down = failures_to_down

    async def run(self) -> None:
        while True:
            async with trio.open_nursery() as nursery:
                for upstream in self._upstreams:
                    nursery.start_soon(self._probe, upstream)
            next_probe_at = trio.current_time() + self._interval
            for upstream in self._upstreams:
                self._health[upstream.name].next_probe_at = next_probe_at
            await trio.sleep(self._interval)

    async def _probe(self, upstream: Upstream) -> None:
        health = self._health[upstream.name]
        try:
            listed = frozenset(await upstream.list_models())
        except UpstreamFailure as failure:
            health.consecutive_failures += 1
            health.last_error = f"{failure.label}: {failure.error.message}"
            if health.up and health.consecutive_failures >= self._failures_to_down:
                health.up = False
                log.warning("%s marked down after %d failed probes: %s", upstream.name, health.consecutive_failures, health.last_error)
            return
        if not health.up:
            log.info("%s is up again", upstream.name)
        for model in self._models.get(upstream.name, ()):
            before, offered = health.offers(model), model in listed
            if offered != before and (before is not None or not offered):
                log.warning("%s %s model %s", upstream.name, "offers" if offered else "does not offer", model)
        health.up, health.listed = True, listed
        health.missing -= listed
        health.consecutive_failures, health.last_error = 0, ""
