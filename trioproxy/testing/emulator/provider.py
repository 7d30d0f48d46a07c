"""The emulated provider: its settings, limits, faults and the records tests read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import trio
from attrs import Factory, define, field, frozen

from ...plans import PLANS, WINDOW_SETTINGS
from .actions import Json
from .faults import Faults
from .prompt_cache import PromptCache
from .windows import Bucket, Day, RollingCount

# Today's catalogues (PROVIDERS.md, late 2026): what `GET /models` lists by default. The first
# id is `model`, the others `more_models`.
CEREBRAS_MODELS = ("gpt-oss-120b", "qwen-3.8-27b")
CHUTES_MODELS = ("Qwen/Qwen3-Coder-Next-TEE", "Qwen/Qwen3.5-397B-A17B-TEE", "Qwen/Qwen3.8-27B-TEE")
CEREBRAS_MODEL, CHUTES_MODEL = CEREBRAS_MODELS[0], CHUTES_MODELS[0]
# Ids Cerebras retired (its deprecation pages): a request naming one gets 503, not 404.
CEREBRAS_RETIRED = ("qwen-3-coder-480b", "zai-glm-4.6", "llama-3.3-70b", "qwen-3-32b",
                    "qwen-3-235b-a22b-instruct-2507", "llama3.1-8b", "zai-glm-4.7")
# What Cerebras reserves against tokens/minute when a request names no completion cap.
DEFAULT_RESERVED_COMPLETION = 8192

Flavor = Literal["cerebras", "chutes"]


@frozen
class Usage:
    """One completion as the provider counted it: settled `at` (when the day counts it),
    admitted at `admitted_at` (when the per-minute buckets took its reservation)."""

    at: float
    prompt_tokens: int
    completion_tokens: int
    admitted_at: float
    cached_tokens: int = 0


@frozen
class QuotaRefusal:
    """One quota 429 (Cerebras): which limit refused and what the request needed."""

    at: float
    limit: Literal["rpm", "tpm", "utpm", "rpd", "tpd"]
    prompt_tokens: int
    reserved: int  # prompt + completion cap (DEFAULT_RESERVED_COMPLETION without one)
    available: float | None  # the refusing bucket's level (tpm, utpm) or tokens left today (tpd)
    request: int  # index of the request in `received`
    cached_tokens: int = 0  # of the prompt, what the prompt cache held


@define
class EmulatedProvider:
    """One emulated upstream. Tests read the records and mutate `faults` or the limits at
    any time.

    - `received` / `received_headers`: every POST to /v1/chat/completions, in order, before
      auth (401s and other rejections included); a body that is not a JSON object is recorded
      as `{"_unparsed": <text>}`.
    - `served`: chat requests answered 200 with a completion (streams with an injected
      reset_mid_stream / error_first_event excluded); counted before the answer is written,
      so a client that has read it sees the count. `connections`: TCP connections accepted.
    - Limits (Cerebras; Chutes only has requests_per_minute, with no headers): per-minute
      limits are buckets refilling continuously; a request reserves prompt tokens + its cap
      (`DEFAULT_RESERVED_COMPLETION` without one) and gets the unused part back once the
      completion is composed. Daily counters restart every 86400 s of `clock` time from when
      `serve` starts; tokens/day refuses a request whose prompt no longer fits. Requests
      rejected by validation or answered by a fault consume nothing.
    - Cerebras's two token buckets: `tokens_per_minute` is the total one (every prompt token
      plus the completion reservation), `uncached_tokens_per_minute` takes the prompt tokens
      the key's `prompt_cache` did not hold (see `prompt_cache.PromptCache`: prefix blocks, a
      TTL on `clock`; `prompt_cache.ttl = 0` turns it off). Usage reports the cached part as
      `prompt_tokens_details.cached_tokens`; a 429 of the uncached bucket says "uncached".
      The x-ratelimit-*-tokens-minute headers report the total bucket.
    - Simulation knobs, for benchmarks: `day_started_at` places the day on `clock` (the next
      boundary is 86400 s after it; None = the day starts when `serve` starts) and
      `day_tokens_used` counts tokens as already used that day when `serve` starts.
      `completion_words` sets the length of plain-text completions in words (= tokens), as a
      number or a function of the request body (None = `completion_text`); a cap still
      truncates. `words_per_chunk` groups the words of a streamed text answer into chunks.
      `tokens_per_second` makes the model take time: the reservation stays taken while the
      completion is generated (a plain answer comes after that time, a stream's chunks are
      spread over it) and is settled just before the answer's usage is sent; None = instant.
      `first_token_seconds` delays the first token too (a plain answer waits it as well).
    - `usage_log`: every completion's usage when it was settled (streams with injected faults
      included: the quota counted them). `quota_refusals`: every quota 429 (Cerebras).
    - `speaks_as` makes it answer another flavor's text (two providers serving one model, so one
      can continue the other's answer); `break_every_nth_stream` resets every n-th stream it
      begins after `break_stream_after_events` events (a provider that cuts streams now and then).
    - A chat request naming another model than `model` or one of `more_models` gets the
      provider's 404, or 503 when it names one of `retired_models` (Cerebras). `/models`
      lists exactly `model` and `more_models`; tests change either at run time (a model the
      provider retires, or adds). The limits are shared by every model.
    """

    flavor: Flavor
    api_key: str
    model: str
    more_models: list[str] = Factory(list)
    retired_models: tuple[str, ...] = ()
    # Chutes: its plans' rolling request windows (PROVIDERS.md: 4 hours and a month), off by
    # default; `chutes(plan_windows={4 * 3600: 500, 30 * 86400: 5000})` turns them on.
    plan_windows: list[RollingCount] = Factory(list)
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    uncached_tokens_per_minute: int | None = None
    prompt_cache: PromptCache = Factory(PromptCache)
    tokens_per_day: int | None = None
    requests_per_day: int | None = None
    context_window: int | None = None
    clock: Callable[[], float] = trio.current_time
    faults: Faults = Factory(Faults)
    received: list[dict] = Factory(list)
    received_headers: list[dict[str, str]] = Factory(list)
    served: int = 0
    connections: int = 0  # TCP connections accepted (lets tests check keep-alive)
    day_started_at: float | None = None
    day_tokens_used: int = 0
    completion_words: int | Callable[[Json], int] | None = None
    words_per_chunk: int = 1
    tokens_per_second: float | None = None
    first_token_seconds: float = 0.0  # a completion's first token comes this long after admission
    echo_key_in_401: bool = False  # say the wrong key back, as OpenAI-style providers do
    parallel_tool_calls_by_default: bool = False  # call every tool offered when the request does not say
    speaks_as: Flavor | None = None  # whose deterministic text it answers (one model on two providers)
    break_every_nth_stream: int | None = None  # reset every n-th stream ...
    break_stream_after_events: int = 3  # ... once this many of its events went out
    streams: int = 0  # streamed completions begun
    usage_log: list[Usage] = Factory(list)
    quota_refusals: list[QuotaRefusal] = Factory(list)
    # Live quota state, kept by `limits` and `serve`.
    rpm_bucket: Bucket = field(init=False, factory=Bucket, repr=False)
    tpm_bucket: Bucket = field(init=False, factory=Bucket, repr=False)
    utpm_bucket: Bucket = field(init=False, factory=Bucket, repr=False)
    today: Day = field(init=False, factory=Day, repr=False)
    _counter: int = field(init=False, default=0, repr=False)

    def models(self) -> list[str]:
        """Every model id it serves and lists."""
        return [self.model, *self.more_models]

    def next_id(self) -> int:
        """A fresh number for completion and tool-call ids."""
        self._counter += 1
        return self._counter

    def levels(self) -> dict[str, float | None]:
        """What each limit has left as of `clock()`: the per-minute buckets' levels and what
        is left today (None for a limit that is not set). Reading changes no outcome."""
        now = self.clock()
        self.today.roll(now)
        rpm, tpm, rpd, tpd = (self.requests_per_minute, self.tokens_per_minute,
                              self.requests_per_day, self.tokens_per_day)
        utpm = self.uncached_tokens_per_minute
        return {
            "rpm": None if rpm is None else self.rpm_bucket.refill(rpm, now),
            "tpm": None if tpm is None else self.tpm_bucket.refill(tpm, now),
            "utpm": None if utpm is None else self.utpm_bucket.refill(utpm, now),
            "rpd": None if rpd is None else rpd - self.today.requests,
            "tpd": None if tpd is None else tpd - self.today.tokens,
        }


def cerebras(api_key: str = "csk-emulated", plan: str | None = None, **kw: Any) -> EmulatedProvider:
    """An emulated Cerebras with today's catalogue (retired ids answer 503) and the paid
    131,072-token window. Given `model` alone, it lists only that model. `plan` (a name in
    `trioproxy.plans.PLANS`) sets the limits a key of that plan has (limits given win), and so
    the `x-ratelimit-limit-*` headers it states."""
    for window, figure in (PLANS[plan] if plan is not None else {}).items():
        kw.setdefault(WINDOW_SETTINGS[window], figure)
    if "model" not in kw:
        kw.setdefault("more_models", list(CEREBRAS_MODELS[1:]))
    kw.setdefault("model", CEREBRAS_MODEL)
    kw.setdefault("retired_models", CEREBRAS_RETIRED)
    kw.setdefault("context_window", 131072)
    return EmulatedProvider(flavor="cerebras", api_key=api_key, **kw)


def chutes(api_key: str = "cpk_emulated", plan_windows: dict[float, int] | None = None, **kw: Any) -> EmulatedProvider:
    """An emulated Chutes (vLLM) with today's catalogue; unknown ids answer 404. Given `model`
    alone, it lists only that model. `plan_windows` `{seconds: requests}` enables its plan's
    rolling windows (a 429 without a reset time once one is full)."""
    kw["plan_windows"] = [RollingCount(span, limit) for span, limit in (plan_windows or {}).items()]
    if "model" not in kw:
        kw.setdefault("more_models", list(CHUTES_MODELS[1:]))
    kw.setdefault("model", CHUTES_MODEL)
    return EmulatedProvider(flavor="chutes", api_key=api_key, **kw)
