"""Settling one reservation: from the provider's usage when it comes, from an estimate when not."""

from collections.abc import Callable
from typing import Any

from attrs import define

from ..quota.contract import Ledger, Reservation
from .fair_share import ShareTicket
from .request import RouteRecord
from .tokens import PromptEstimator


def usage_tokens(document: dict[str, Any]) -> tuple[int, int] | None:
    """(prompt, completion) tokens of a chat answer or chunk that carries usage."""
    usage = document.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        return prompt, completion
    return None


def cached_tokens(document: dict[str, Any]) -> int | None:
    """The cached part of the prompt, where the usage states it (`prompt_tokens_details`)."""
    details = document["usage"].get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return cached if isinstance(cached, int) else None


@define
class Settlement:
    ledger: Ledger
    estimator: PromptEstimator
    reservation: Reservation
    record: RouteRecord
    on_usage: Callable[[int], None] | None = None  # told the completion tokens, to learn speeds
    share: ShareTicket | None = None  # the client's fair share of the provider, settled likewise
    settled: bool = False

    async def from_usage(self, document: dict[str, Any]) -> bool:
        """Settle and teach the estimator if `document` carries usage; whether it did."""
        usage = usage_tokens(document)
        if usage is None:
            return False
        self.record.prompt_tokens, self.record.completion_tokens = usage
        self.record.cached_tokens = cached_tokens(document)
        await self.ledger.settle(self.reservation, sum(usage))
        if self.share is not None:
            self.share.settle(sum(usage))
        self.estimator.learn(self.record.prompt_estimate, usage[0])
        if self.on_usage is not None:
            self.on_usage(usage[1])
        self.settled = True
        return True

    async def from_estimate(self, completion_tokens: int) -> None:
        """Without usage, settle the estimated prompt plus what was seen of the completion."""
        if not self.settled:
            prompt = round(self.record.prompt_estimate * self.estimator.ratio)
            await self.ledger.settle(self.reservation, prompt + completion_tokens)
            if self.share is not None:
                self.share.settle(prompt + completion_tokens)
            self.settled = True
