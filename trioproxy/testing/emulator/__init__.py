"""Emulated Cerebras and Chutes endpoints for tests, demos and benchmarks.

Each `EmulatedProvider` is served by `serve` as a real HTTP/1.1 server on a local socket
(raw `trio` + `h11`, so faults can reach down to the TCP level: resets, stalls, resets in
the middle of a stream). The behaviour follows /work/shared/PROVIDERS.md: the error shapes,
the rate-limit headers and the token accounting of each provider.

Everything a completion contains is deterministic (see `prompt_tokens` and `completion_text`),
so tests can predict usage numbers and quota consumption exactly.

Modules, by job: `provider` (the emulated provider and its records), `windows` (refilling
buckets, daily counters), `limits` (admitting, settling, rate-limit headers), `faults`,
`validation`, `errors` (each provider's error shapes), `answers` (what the model says),
`bodies` (completion bodies and stream chunks), `completion` (one completion, settled and
answered), `chat` (the request pipeline), `actions` (what the server does with a request),
`connection` and `server` (HTTP over trio and h11).
"""

from .answers import completion_text, prompt_tokens
from .faults import Faults
from .provider import (
    CEREBRAS_MODEL,
    CEREBRAS_MODELS,
    CEREBRAS_RETIRED,
    CHUTES_MODEL,
    CHUTES_MODELS,
    DEFAULT_RESERVED_COMPLETION,
    EmulatedProvider,
    QuotaRefusal,
    Usage,
    cerebras,
    chutes,
)
from .server import serve
from .windows import DAY_SECONDS

__all__ = [
    "CEREBRAS_MODEL",
    "CEREBRAS_MODELS",
    "CEREBRAS_RETIRED",
    "CHUTES_MODEL",
    "CHUTES_MODELS",
    "DAY_SECONDS",
    "DEFAULT_RESERVED_COMPLETION",
    "EmulatedProvider",
    "Faults",
    "QuotaRefusal",
    "Usage",
    "cerebras",
    "chutes",
    "completion_text",
    "prompt_tokens",
    "serve",
]
