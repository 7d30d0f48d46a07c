"""The health prober: a cheap `GET /models` per provider, so dead providers and missing models
are skipped without spending chat requests (or quota) on them."""

import logging

import trio
from attrs import define

from .upstream import Upstream, UpstreamFailure

log = logging.getLogger("trioproxy.health")


@define
class ProviderHealth:
    """What the prober last learned of one provider. Until a probe says otherwise, it is up."""

    up: bool = True
    model_offered: bool | None = None  # None: not known yet
    consecutive_failures: int = 0
    last_error: str = ""

    @property
    def usable(self) -> bool:
        return self.up and self.model_offered is not False

    @property
    def why_not(self) -> str:
        return "down" if not self.up else "model_missing"


class HealthProber:
    """Probes every provider each `interval` seconds; `failures_to_down` failures in a row mark it down."""

    def __init__(self, upstreams: list[Upstream], health: dict[str, ProviderHealth], interval: float, failures_to_down: int) -> None:
        self._upstreams = upstreams
        self._health = health
        self._interval = interval
        self._failures_to_down = failures_to_down

    async def run(self) -> None:
        while True:
            async with trio.open_nursery() as nursery:
                for upstream in self._upstreams:
                    nursery.start_soon(self._probe, upstream)
            await trio.sleep(self._interval)

    async def _probe(self, upstream: Upstream) -> None:
        health = self._health[upstream.name]
        try:
            models = await upstream.list_models()
        except UpstreamFailure as failure:
            health.consecutive_failures += 1
            health.last_error = f"{failure.label}: {failure.error.message}"
            if health.up and health.consecutive_failures >= self._failures_to_down:
                health.up = False
                log.warning("%s marked down after %d failed probes: %s", upstream.name, health.consecutive_failures, health.last_error)
            return
        offered = upstream.config.model in models
        if not health.up:
            log.info("%s is up again", upstream.name)
        if offered != health.model_offered and (health.model_offered is not None or not offered):
            log.warning("%s %s model %s", upstream.name, "offers" if offered else "does not offer", upstream.config.model)
        health.up, health.model_offered = True, offered
        health.consecutive_failures, health.last_error = 0, "" if offered else f"model {upstream.config.model} not listed"
