"""One admitted completion: compose it, settle the quota and answer plain or streamed."""

from __future__ import annotations

import time

from .actions import Action, Json, Reply
from .answers import answer as compose_answer
from .bodies import Meta, full_body, stream_action
from .faults import Faults, streams_faults
from .limits import settle, with_limit_headers
from .prefill import continued_answer, prefill_of
from .provider import DEFAULT_RESERVED_COMPLETION, EmulatedProvider, Usage


def completion(provider: EmulatedProvider, body: Json, faults: Faults, prompt: int,
               cap: int | None, cached: int = 0) -> Action:
    """Compose the completion, settle the quota and answer plain or streamed.

    With `tokens_per_second` the settling waits until the completion is generated: the
    reservation stays taken meanwhile, as at a real provider.
    """
    number, admitted_at = provider.next_id(), provider.clock()
    prefill = prefill_of(body)
    continued = None if prefill is None else continued_answer(provider, body, prefill, number)
    answer = continued or compose_answer(provider, body, cap, number)
    used = prompt + answer.completion_tokens
    usage: Json = {"prompt_tokens": prompt, "completion_tokens": answer.completion_tokens,
                   "total_tokens": used}
    if provider.flavor == "cerebras" and provider.prompt_cache.ttl > 0:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    meta = Meta(provider.flavor, f"chatcmpl-{number}", int(time.time()), body["model"])
    reservation = prompt + (cap or DEFAULT_RESERVED_COMPLETION)
    speed = provider.tokens_per_second
    generation = answer.completion_tokens / speed if speed else 0.0
    stream = bool(body.get("stream"))
    if stream:
        faults = streams_faults(provider, faults)
    counted = not (stream and faults.cuts_stream())
    settled = False

    def finish() -> None:
        nonlocal settled
        if settled:
            return
        settled = True
        settle(provider, reservation, used)
        provider.usage_log.append(Usage(provider.clock(), prompt, answer.completion_tokens,
                                        admitted_at, cached))
        if counted:
            provider.served += 1

    if stream:
        action = stream_action(meta, answer, usage, body, faults, provider.words_per_chunk)
        # A stream's headers leave before the model runs: they still show the reservation.
        with_limit_headers(provider, action)
        action.first_delay = provider.first_token_seconds
        if generation > 0:
            if action.delay <= 0:  # the events after the first one spread over the generation
                action.delay = generation / max(1, len(action.events) - 1)
            action.finish = finish
        else:
            finish()
        return action
    reply = Reply(200, full_body(meta, answer, usage))

    def finish_reply() -> None:
        # A plain answer's headers leave after the model ran: they show the settled quota.
        finish()
        with_limit_headers(provider, reply)

    if generation + provider.first_token_seconds > 0:
        reply.wait, reply.finish = provider.first_token_seconds + generation, finish_reply
    else:
        finish_reply()
    return reply
