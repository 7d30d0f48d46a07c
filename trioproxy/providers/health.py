"""The health prober: a cheap `GET /models` per provider, so dead providers and missing models
are skipped without spending chat requests (or quota) on them.

One probe per provider serves every route: the provider's list is checked for each model the
routes ask of it. A route asks for candidates in order of preference; the first one the list
offers serves (`ProviderHealth.choose`), so the choice moves when the provider's catalogue does.
"""

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import trio
from attrs import define, field

from .failures import UpstreamFailure
from .upstream import Upstream

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
    # What `choose` gave for each candidate list when the prober last looked: to log changes.
    chosen: dict[tuple[str, ...], str | None] = field(factory=dict)

    def choose(self, candidates: Sequence[str]) -> str | None:
        """The first of `candidates` the provider offers; None when it offers none of them.

        Until a probe has answered, the first candidate not known to be missing: a provider
        that says it does not exist moves the choice to the next one at once.
        """
        for model in candidates:
            if self.offers(model) is not False:
                return model
        return None

    def offers(self, model: str) -> bool | None:
        """Whether the provider offers `model`; None while no probe has answered."""
        if model in self.missing:
            return False
        return None if self.listed is None else model in self.listed

    def usable_for(self, candidates: Sequence[str]) -> bool:
        return self.up and self.choose(candidates) is not None

    def why_not(self, candidates: Sequence[str]) -> str:
        return "model_missing" if self.choose(candidates) is None else "down"

    def mark_missing(self, provider: str, model: str) -> None:
        if model not in self.missing:
            self.missing.add(model)
            log.warning("%s says model %s does not exist; skipped until its model list shows it", provider, model)

    def view(self, candidates: Sequence[str]) -> dict[str, Any]:
        """The state operators see for one candidate list of this provider: the model chosen
        (None when none is offered), whether the provider's list shows it, and the candidates."""
        model = self.choose(candidates)
        offered = False if model is None else self.offers(model)
        error = self.last_error
        if not error and model is None:
            error = "; ".join(f"model {m} does not exist" if m in self.missing else f"model {m} not listed" for m in candidates)
        return {"up": self.up, "model": model, "model_offered": offered, "candidates": list(candidates),
                "consecutive_failures": self.consecutive_failures, "last_error": error}


class HealthProber:
    """Probes every provider each `interval` seconds; `failures_to_down` failures in a row mark it down.

    `models` names, per provider, the candidate lists the routes want of it (to log each
    list's choice when it is first known and whenever it changes).
    """

    def __init__(
        self,
        upstreams: Sequence[Upstream],
        models: Mapping[str, Sequence[tuple[str, ...]]],
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
        """Probe every provider each interval, until cancelled (the runtime's prober scope ends
        it when a reload replaces the runtime); a failed probe is recorded, never raised."""
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
            health.last_error = f"{failure.label}: {failure.message}"
            if health.up and health.consecutive_failures >= self._failures_to_down:
                health.up = False
                log.warning("%s marked down after %d failed probes: %s", upstream.name, health.consecutive_failures, health.last_error)
            return
        if not health.up:
            log.info("%s is up again", upstream.name)
        health.up, health.listed = True, listed
        health.missing -= listed
        health.consecutive_failures, health.last_error = 0, ""
        for candidates in self._models.get(upstream.name, ()):
            _log_choice(upstream.name, candidates, health)


def _log_choice(provider: str, candidates: tuple[str, ...], health: ProviderHealth) -> None:
    """Say which model serves a candidate list, the first time it is known and when it moves."""
    chosen = health.choose(candidates)
    if candidates in health.chosen and health.chosen[candidates] == chosen:
        return
    health.chosen[candidates] = chosen
    if chosen is None:
        log.warning("%s offers none of the models %s: requests skip it", provider, ", ".join(candidates))
    else:
        rank = candidates.index(chosen) + 1
        log.info("%s serves model %s (candidate %d of %d: %s)", provider, chosen, rank, len(candidates),
                 ", ".join(candidates))
