"""Fault injection: what a test switches on, and the answers faults force."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import trio
from attrs import define

from . import errors
from .actions import Action, Reset, Stall
from .errors import StreamErrorKind

if TYPE_CHECKING:
    from .provider import EmulatedProvider


@define
class Faults:
    """Fault injection a test switches on by mutating provider.faults at any time.

    Faults act on chat requests only, after auth, in this precedence: reset_before_response,
    stall, latency (then continue), status, no_instances, queue_exceeded, refuse_prefill (a 400
    for a request that asks to continue a final assistant message); then normal handling, where
    the stream faults act: reset_mid_stream (a reset after the first event), break_after_events
    (a reset after that many events), break_after_argument_bytes (a reset once that many bytes
    of tool-call arguments went out, the last fragment cut to fit), error_first_event and
    error_after_events (an error event, of the kind `stream_error` names, in place of the first
    event or after that many events), chunk_delay. Requests answered by a fault consume no
    quota. When `remaining` runs out, `provider.faults` is replaced by a fresh `Faults()`
    (every fault off).
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
    error_after_events: int | None = None
    stream_error: StreamErrorKind = "server"
    break_after_events: int | None = None
    break_after_argument_bytes: int | None = None
    refuse_prefill: bool = False
    remaining: int | None = None

    def cuts_stream(self) -> bool:
        """Whether a stream answered under these faults never completes."""
        return bool(self.reset_mid_stream or self.error_first_event or self.error_after_events is not None
                    or self.break_after_events is not None or self.break_after_argument_bytes is not None)


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


def streams_faults(provider: EmulatedProvider, faults: Faults) -> Faults:
    """A stream's faults, with the provider's every-n-th-stream break added when its turn comes."""
    provider.streams += 1
    every = provider.break_every_nth_stream
    if every and provider.streams % every == 0 and faults.break_after_events is None:
        return attrs.evolve(faults, break_after_events=provider.break_stream_after_events)
    return faults
