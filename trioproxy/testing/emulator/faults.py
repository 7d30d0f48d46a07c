"""Fault injection: what a test switches on, and the answers faults force."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import trio
from attrs import define

from . import errors
from .actions import Action, Reset, Stall

if TYPE_CHECKING:
    from .provider import EmulatedProvider


@define
class Faults:
    """Fault injection a test switches on by mutating provider.faults at any time.

    Faults act on chat requests only, after auth, in this precedence: reset_before_response,
    stall, latency (then continue), status, no_instances, queue_exceeded; then normal handling,
    where reset_mid_stream, error_first_event and chunk_delay act on streams. Requests answered
    by a fault consume no quota. When `remaining` runs out, `provider.faults` is replaced by a
    fresh `Faults()` (every fault off).
    """

    latency: float = 0.0
    chunk_delay: float = 0.0
    status: int | None = None
    no_instances: bool = False
    queue_exceeded: bool = False  # chutes answers its own capacity 429 instead
    reset_before_response: bool = False
    reset_mid_stream: bool = False
    stall: bool = False
    error_first_event: bool = False
    remaining: int | None = None


def take_faults(provider: EmulatedProvider) -> Faults:
    """This request's faults; counts `remaining` down and switches faults off at zero."""
    faults = provider.faults
    if faults.remaining is None:
        return attrs.evolve(faults)
    if faults.remaining <= 0:
        provider.faults = Faults()
        return Faults()
    snapshot = attrs.evolve(faults)
    faults.remaining -= 1
    if faults.remaining == 0:
        provider.faults = Faults()
    return snapshot


async def fault_action(provider: EmulatedProvider, faults: Faults) -> Action | None:
    """The answer forced by a fault that precedes normal handling, or None."""
    if faults.reset_before_response:
        return Reset()
    if faults.stall:
        return Stall()
    if faults.latency > 0:
        await trio.sleep(faults.latency)
    if faults.status is not None:
        return errors.generic_error(provider.flavor, faults.status)
    if faults.no_instances:
        return errors.no_instances(provider.flavor, provider.model)
    if faults.queue_exceeded:
        return errors.queue_exceeded(provider.flavor)
    return None
