"""Settling one reservation: from the provider's usage when it comes, from an estimate when not."""

from collections.abc import Callable
from typing import Any

from attrs import define, frozen

from ..quota.contract import Ledger, Reservation
from .fair_share import ShareTicket
from .tokens import PromptEstimator


def usage_tokens(document: dict[str, Any]) -> tuple[int, int] | None:
    """(prompt, completion) tokens of a chat answer or chunk that carries usage."""
    usage = document.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if _count(prompt) and _count(completion):
        return prompt, completion
    return None


def cached_tokens(document: dict[str, Any], prompt_tokens: int) -> int:
    """Prompt tokens the provider served from its cache (`prompt_tokens_details.cached_tokens`),
    within 0..prompt_tokens: a figure that is absent or nonsense counts as none cached, and one
    above the prompt as all of it."""
    details = document["usage"].get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return min(prompt_tokens, cached) if _count(cached) else 0


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@frozen
class Reported:
    """The tokens a provider's usage block gave for one answer."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int  # of the prompt, what the provider's cache held


@define
class Settlement:
    """Books one attempt's reservation once; what it booked is `settled`, what the provider
    reported is `reported` (read by the router for the request's outcome)."""

    ledger: Ledger
    estimator: PromptEstimator
    reservation: Reservation
    prompt_estimate: int  # the raw estimate of the prompt, so usage can teach the estimator
    on_usage: Callable[[int], None] | None = None  # told the completion tokens, to learn speeds
    on_prompt: Callable[[int], None] | None = None  # told the prompt tokens the provider saw (its cache has them now)
    share: ShareTicket | None = None  # the client's fair share of the provider, settled likewise
    settled: tuple[int, int] | None = None  # the (prompt, completion) tokens booked, once settled
    usage: dict[str, Any] | None = None  # the provider's usage block, when it sent one
    reported: Reported | None = None  # its figures (the last block's, should several come)

    async def from_usage(self, document: dict[str, Any]) -> bool:
        """Settle and teach the estimator if `document` carries usage; whether it did."""
        usage = usage_tokens(document)
        if usage is None:
            return False
        self.usage = document["usage"]
        cached = cached_tokens(document, usage[0])
        self.reported = Reported(usage[0], usage[1], cached)
        await self.ledger.settle(self.reservation, sum(usage), usage[0] - cached)
        if self.share is not None:
            self.share.settle(sum(usage))
        self.estimator.learn(self.prompt_estimate, usage[0])
        if self.on_usage is not None:
            self.on_usage(usage[1])
        if self.on_prompt is not None:
            self.on_prompt(usage[0])
        self.settled = usage
        return True

    async def abandon(self, cancelled: bool) -> None:
        """The attempt ended without an answer for the client: unless usage settled it already,
        book the estimated prompt when the client left (the provider had it), nothing when our
        own failure stopped it."""
        if self.settled is not None:
            return
        if cancelled:
            await self.from_estimate(0)
        else:
            await self.ledger.settle(self.reservation, 0)
            if self.share is not None:
                self.share.settle(0)
            self.settled = (0, 0)

    async def from_estimate(self, completion_tokens: int) -> tuple[int, int]:
        """Without usage, settle the estimated prompt plus what was seen of the completion; the
        (prompt, completion) tokens booked either way."""
        if self.settled is None:
            prompt = round(self.prompt_estimate * self.estimator.ratio)
            await self.ledger.settle(self.reservation, prompt + completion_tokens)
            if self.share is not None:
                self.share.settle(prompt + completion_tokens)
            self.settled = (prompt, completion_tokens)
        return self.settled
