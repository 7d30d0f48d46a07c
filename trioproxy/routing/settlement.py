"""Settling one reservation: from the provider's usage when it comes, from an estimate when not."""

from collections.abc import Callable
from typing import Any

from attrs import define

from ..quota.contract import Ledger, Reservation
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


@define
class Settlement:
    ledger: Ledger
    estimator: PromptEstimator
    reservation: Reservation
    record: RouteRecord
    on_usage: Callable[[int], None] | None = None  # told the completion tokens, to learn speeds
    settled: tuple[int, int] | None = None  # the (prompt, completion) tokens booked, once settled
    usage: dict[str, Any] | None = None  # the provider's usage block, when it sent one

    async def from_usage(self, document: dict[str, Any]) -> bool:
        """Settle and teach the estimator if `document` carries usage; whether it did."""
        usage = usage_tokens(document)
        if usage is None:
            return False
        self.usage = document["usage"]
        self.record.prompt_tokens, self.record.completion_tokens = usage
        await self.ledger.settle(self.reservation, sum(usage))
        self.estimator.learn(self.record.prompt_estimate, usage[0])
        if self.on_usage is not None:
            self.on_usage(usage[1])
        self.settled = usage
        return True

    async def from_estimate(self, completion_tokens: int) -> tuple[int, int]:
        """Without usage, settle the estimated prompt plus what was seen of the completion; the
        (prompt, completion) tokens booked either way."""
        if self.settled is None:
            prompt = round(self.record.prompt_estimate * self.estimator.ratio)
            await self.ledger.settle(self.reservation, prompt + completion_tokens)
            self.settled = (prompt, completion_tokens)
        return self.settled
