"""Emulated Cerebras and Chutes endpoints for tests, demos and benchmarks.

Each `EmulatedProvider` is served by `serve` as a real HTTP/1.1 server on a local socket
(raw `trio` + `h11`, so faults can reach down to the TCP level: resets, stalls, resets in
the middle of a stream). The behaviour follows /work/shared/PROVIDERS.md: the error shapes,
the rate-limit headers and the token accounting of each provider.

Everything a completion contains is deterministic (see `prompt_tokens` and `completion_text`),
so tests can predict usage numbers and quota consumption exactly.
"""

from __future__ import annotations

import http
import json
import logging
import math
import socket
import ssl
import struct
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any, Literal

import attrs
import h11
import trio
from attrs import Factory, define, field, frozen

__all__ = [
    "CEREBRAS_MODEL",
    "CHUTES_MODEL",
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

log = logging.getLogger(__name__)

CEREBRAS_MODEL = "qwen-3-coder-480b"
CHUTES_MODEL = "Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8"
# What Cerebras reserves against tokens/minute when a request names no completion cap.
DEFAULT_RESERVED_COMPLETION = 8192
DAY_SECONDS = 86400.0
_MAX_READ = 65536

Flavor = Literal["cerebras", "chutes"]
Json = dict[str, Any]


# --------------------------------------------------------------------------- public model


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


@define
class _Bucket:
    """A continuously refilling bucket that refills completely in one minute.

    The capacity is passed in on every call (not stored) so a test may change a provider's
    limit at any time. A bucket starts full at its first use.
    """

    level: float | None = None
    updated: float = 0.0

    def refill(self, capacity: float, now: float) -> float:
        """Bring the level up to `now` and return it."""
        if self.level is None:
            self.level = capacity
        else:
            gained = max(0.0, now - self.updated) * capacity / 60.0
            self.level = min(capacity, self.level + gained)
        self.updated = now
        return self.level

    def wait_for(self, amount: float, capacity: float, now: float) -> float:
        """Seconds until `amount` is available (0 if it is now). An amount above the
        capacity can never be served; it gets the time of a full refill (60 s)."""
        level = self.refill(capacity, now)
        if amount > capacity or capacity <= 0:
            return 60.0
        return max(0.0, amount - level) * 60.0 / capacity

    def take(self, amount: float) -> None:
        """Remove `amount` (call `wait_for` first); the level may not drop below zero."""
        self.level = max(0.0, (self.level or 0.0) - amount)

    def give(self, amount: float, capacity: float) -> None:
        """Return an unused reservation."""
        self.level = min(capacity, (self.level or 0.0) + amount)

    def seconds_to_full(self, capacity: float) -> float:
        """Seconds until the bucket is full again at the current level."""
        if self.level is None or capacity <= 0:
            return 0.0
        return (capacity - self.level) * 60.0 / capacity


@define
class _Day:
    """Daily counters; the day restarts every 86400 s of clock time from the first roll."""

    start: float | None = None
    index: int = 0
    requests: int = 0
    tokens: int = 0

    def roll(self, now: float) -> None:
        """Reset the counters when `now` lies in a later day than the last call."""
        if self.start is None:
            self.start = now
        index = int((now - self.start) // DAY_SECONDS)
        if index != self.index:
            self.index, self.requests, self.tokens = index, 0, 0

    def place(self, now: float, start: float, tokens: int) -> None:
        """Make `start` the beginning of a day and count `tokens` as already used today."""
        self.start = start
        self.index = math.floor((now - start) / DAY_SECONDS)
        self.requests, self.tokens = 0, tokens

    def reset_in(self, now: float) -> float:
        """Seconds until the next day boundary."""
        self.roll(now)
        assert self.start is not None
        return DAY_SECONDS - ((now - self.start) % DAY_SECONDS)


@frozen
class Usage:
    """One completion as the provider counted it: settled `at` (when the day counts it),
    admitted at `admitted_at` (when the per-minute buckets took its reservation)."""

    at: float
    prompt_tokens: int
    completion_tokens: int
    admitted_at: float


@frozen
class QuotaRefusal:
    """One quota 429 (Cerebras): which limit refused and what the request needed."""

    at: float
    limit: Literal["rpm", "tpm", "rpd", "tpd"]
    prompt_tokens: int
    reserved: int  # prompt + completion cap (DEFAULT_RESERVED_COMPLETION without one)
    available: float | None  # tokens/minute bucket level (tpm) or tokens left today (tpd)
    request: int  # index of the request in `received`


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
    - A chat request naming another model than `model` gets the provider's 404.
    """

    flavor: Flavor
    api_key: str
    model: str
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
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
    usage_log: list[Usage] = Factory(list)
    quota_refusals: list[QuotaRefusal] = Factory(list)
    _rpm: _Bucket = field(init=False, factory=_Bucket, repr=False)
    _tpm: _Bucket = field(init=False, factory=_Bucket, repr=False)
    _day: _Day = field(init=False, factory=_Day, repr=False)
    _counter: int = field(init=False, default=0, repr=False)

    def next_id(self) -> int:
        """A fresh number for completion and tool-call ids."""
        self._counter += 1
        return self._counter

    def levels(self) -> dict[str, float | None]:
        """What each limit has left as of `clock()`: the per-minute buckets' levels and what
        is left today (None for a limit that is not set). Reading changes no outcome."""
        now = self.clock()
        self._day.roll(now)
        rpm, tpm, rpd, tpd = (self.requests_per_minute, self.tokens_per_minute,
                              self.requests_per_day, self.tokens_per_day)
        return {
            "rpm": None if rpm is None else self._rpm.refill(rpm, now),
            "tpm": None if tpm is None else self._tpm.refill(tpm, now),
            "rpd": None if rpd is None else rpd - self._day.requests,
            "tpd": None if tpd is None else tpd - self._day.tokens,
        }


def cerebras(api_key: str = "csk-emulated", **kw: Any) -> EmulatedProvider:
    """An emulated Cerebras serving Qwen3-Coder 480B with the paid 131,072-token window."""
    kw.setdefault("model", CEREBRAS_MODEL)
    kw.setdefault("context_window", 131072)
    return EmulatedProvider(flavor="cerebras", api_key=api_key, **kw)


def chutes(api_key: str = "cpk_emulated", **kw: Any) -> EmulatedProvider:
    """An emulated Chutes (vLLM) serving Qwen3-Coder 480B FP8."""
    kw.setdefault("model", CHUTES_MODEL)
    return EmulatedProvider(flavor="chutes", api_key=api_key, **kw)


def prompt_tokens(body: Json) -> int:
    """Deterministic prompt size: `max(1, len(J) // 4)` where J is
    `json.dumps(messages, separators=(",", ":"))`, plus the same dump of `tools` when present
    (default `ensure_ascii=True`)."""
    size = len(_compact(body.get("messages", [])))
    if body.get("tools") is not None:
        size += len(_compact(body["tools"]))
    return max(1, size // 4)


def completion_text(flavor: str) -> str:
    """The text every plain completion of `flavor` consists of (one token per word)."""
    return f"Hello from emulated {flavor}. This deterministic reply has several words."


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


# --------------------------------------------------------------------------- responses


@define
class _Reply:
    """A complete response with a JSON body."""

    status: int
    body: Json
    headers: list[tuple[str, str]] = Factory(list)
    wait: float = 0.0  # generation time before the answer leaves
    finish: Callable[[], None] | None = None  # runs after `wait`, before the answer is written


@define
class _Stream:
    """A 200 SSE response: `events` are the JSON payloads, `[DONE]` is appended."""

    events: list[Json]
    headers: list[tuple[str, str]] = Factory(list)
    delay: float = 0.0
    first_delay: float = 0.0  # before the first event (time to first token)
    reset_after_first: bool = False
    finish: Callable[[], None] | None = None  # runs before the last event (which holds usage)


@define
class _Reset:
    """Reset the connection without answering."""


@define
class _Stall:
    """Never answer; hold the connection until the client goes away."""


_Action = _Reply | _Stream | _Reset | _Stall


@define
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


def _error(flavor: str, status: int, message: str, type_: str = "invalid_request_error",
           param: str | None = None, code: str | None = None,
           headers: list[tuple[str, str]] | None = None) -> _Reply:
    """An error in the provider's own shape: Cerebras flat, Chutes FastAPI `detail`."""
    if flavor == "chutes":
        body: Json = {"detail": message}
    else:
        body = {"message": message, "type": type_, "param": param, "code": code}
    return _Reply(status, body, list(headers or []))


def _generic_error(provider: EmulatedProvider, status: int) -> _Reply:
    """The error an injected `status` fault answers with."""
    phrase = _phrase(status)
    type_ = "server_error" if status >= 500 else "invalid_request_error"
    code = phrase.lower().replace(" ", "_")
    return _error(provider.flavor, status, phrase, type_, None, code)


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# --------------------------------------------------------------------------- routing


async def _dispatch(provider: EmulatedProvider, request: _Request) -> _Action:
    """Decide the answer to one request (may sleep for an injected latency)."""
    if request.path == "/v1/chat/completions" and request.method == "POST":
        return await _chat(provider, request)
    if request.path == "/v1/models" and request.method == "GET":
        return _authorized(provider, request) or _Reply(200, _models(provider))
    if provider.flavor == "chutes":
        return _error("chutes", 404, "Not Found")
    return _error("cerebras", 404, f"Path {request.path} not found", "not_found_error", None,
                  "not_found")


def _authorized(provider: EmulatedProvider, request: _Request) -> _Reply | None:
    """None when the bearer key matches exactly, else the provider's 401."""
    if request.headers.get("authorization") == f"Bearer {provider.api_key}":
        return None
    if provider.flavor == "chutes":
        return _error("chutes", 401, "Invalid token.")
    return _error("cerebras", 401, "Wrong API Key", "invalid_request_error", "api_key",
                  "wrong_api_key")


def _models(provider: EmulatedProvider) -> Json:
    entry: Json = {"id": provider.model, "object": "model", "created": 1735689600,
                   "owned_by": "Cerebras" if provider.flavor == "cerebras" else "vllm"}
    if provider.flavor == "chutes":
        entry["supported_features"] = ["json_mode", "tools", "structured_outputs"]
    return {"object": "list", "data": [entry]}


async def _chat(provider: EmulatedProvider, request: _Request) -> _Action:
    """The chat pipeline: record, auth, faults, parse, validate, limits, completion."""
    body = _parse(request.body)
    provider.received.append(body if isinstance(body, dict) else {"_unparsed": _text(request)})
    provider.received_headers.append(dict(request.headers))
    denied = _authorized(provider, request)
    if denied:
        return _with_limit_headers(provider, denied)
    faults = _take_faults(provider)
    action = await _fault_action(provider, faults)
    if action is not None:
        return _with_limit_headers(provider, action)
    return _checked_completion(provider, body, faults)


def _text(request: _Request) -> str:
    return request.body.decode("utf-8", "replace")


def _parse(raw: bytes) -> Json | None:
    """The request body as a JSON object, or None when it is not one."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _take_faults(provider: EmulatedProvider) -> Faults:
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


async def _fault_action(provider: EmulatedProvider, faults: Faults) -> _Action | None:
    """The answer forced by a fault that precedes normal handling, or None."""
    if faults.reset_before_response:
        return _Reset()
    if faults.stall:
        return _Stall()
    if faults.latency > 0:
        await trio.sleep(faults.latency)
    if faults.status is not None:
        return _generic_error(provider, faults.status)
    if faults.no_instances:
        return _no_instances(provider)
    if faults.queue_exceeded:
        return _queue_exceeded(provider)
    return None


def _no_instances(provider: EmulatedProvider) -> _Reply:
    if provider.flavor == "chutes":
        chute_id = uuid.uuid5(uuid.NAMESPACE_URL, provider.model)
        return _error("chutes", 503, f"No instances available (yet) for chute_id={chute_id}")
    return _error("cerebras", 503, "No instances available for this model right now.",
                  "server_error", None, "service_unavailable")


def _queue_exceeded(provider: EmulatedProvider) -> _Reply:
    if provider.flavor == "chutes":
        return _error("chutes", 429, "Infrastructure is at maximum capacity, try again later")
    return _error("cerebras", 429,
                  "We're experiencing high traffic right now! Please try again soon.",
                  "too_many_requests_error", "queue", "queue_exceeded",
                  headers=[("retry-after", "1")])


# --------------------------------------------------------------------------- validation


def _checked_completion(provider: EmulatedProvider, body: Json | None,
                        faults: Faults) -> _Action:
    """Validate, apply the limits, then answer with a completion (limit headers included)."""
    if body is None:
        rejected: _Reply | None = _error(provider.flavor, 400,
                                         "Request body is not a JSON object.",
                                         "invalid_request_error", None, "wrong_api_format")
    else:
        rejected = _validate(provider, body)
    if rejected is None:
        assert body is not None
        cap, prompt = _completion_cap(body), prompt_tokens(body)
        rejected = _admit(provider, prompt, cap)
        if rejected is None:
            return _completion(provider, body, faults, prompt, cap)
    return _with_limit_headers(provider, rejected)


def _validate(provider: EmulatedProvider, body: Json) -> _Reply | None:
    """The 4xx a valid-JSON request earns before touching any quota, or None."""
    if body.get("model") != provider.model:
        return _model_not_found(provider, body.get("model"))
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return _error(provider.flavor, 400, "'messages' must be a non-empty array.",
                      "invalid_request_error", "messages", "wrong_api_format")
    for name in ("max_completion_tokens", "max_tokens"):
        cap = body.get(name)
        if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
            return _error(provider.flavor, 400, f"{name} must be a positive integer.",
                          "invalid_request_error", name, "wrong_api_format")
    if provider.flavor != "cerebras":
        return None
    return _cerebras_strict(body) or _context_check(provider, body)


def _model_not_found(provider: EmulatedProvider, model: Any) -> _Reply:
    if provider.flavor == "chutes":
        return _error("chutes", 404, f"model not found: {model}")
    return _error("cerebras", 404,
                  f"Model {model} does not exist or you do not have access to it.",
                  "not_found_error", "model", "model_not_found")


def _cerebras_strict(body: Json) -> _Reply | None:
    """Cerebras's 400 wrong_api_format for fields it does not support, or None."""
    problem = _unsupported_field(body)
    if problem is None:
        return None
    param, message = problem
    return _error("cerebras", 400, message, "invalid_request_error", param, "wrong_api_format")


def _unsupported_field(body: Json) -> tuple[str, str] | None:
    """(param, message) for the first field Cerebras rejects, or None."""
    for name in ("store", "top_k", "min_p"):
        if name in body:
            return name, f"Unsupported parameter: '{name}' is not supported by this model."
    if body.get("parallel_tool_calls") is False:
        return ("parallel_tool_calls",
                "Unsupported value: 'parallel_tool_calls=false' is not supported by this model.")
    for tool in body.get("tools") or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and function.get("strict") is True:
            return ("tools", "Unsupported value: 'strict: true' in tools[].function is not "
                             "supported by this model.")
    if "tool_choice" in body and body["tool_choice"] not in ("auto", "none", None):
        return ("tool_choice", "Unsupported value: 'tool_choice' must be 'auto' or 'none' "
                               "for this model.")
    if _has_lone_surrogate(body):
        return "messages", "Request contains invalid Unicode (lone surrogate)."
    return None


def _has_lone_surrogate(body: Json) -> bool:
    # A JSON "\ud800" escape decodes to a str that UTF-8 cannot encode.
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _context_check(provider: EmulatedProvider, body: Json) -> _Reply | None:
    """Cerebras's 400 context_length_exceeded when prompt + cap exceed the window."""
    if provider.context_window is None:
        return None
    length = prompt_tokens(body) + (_completion_cap(body) or 0)
    if length <= provider.context_window:
        return None
    return _error("cerebras", 400,
                  "Please reduce the length of the messages or completion. Current length is "
                  f"{length} while limit is {provider.context_window}",
                  "invalid_request_error", "messages", "context_length_exceeded")


def _completion_cap(body: Json) -> int | None:
    """The completion cap the client asked for (max_completion_tokens wins), or None."""
    cap = body.get("max_completion_tokens") or body.get("max_tokens")
    return cap if isinstance(cap, int) else None


# --------------------------------------------------------------------------- limits


def _admit(provider: EmulatedProvider, prompt: int, cap: int | None) -> _Reply | None:
    """Charge the request to the limits, or return the 429 when one is exhausted."""
    if provider.flavor == "chutes":
        return _admit_chutes(provider)
    reservation = prompt + (cap or DEFAULT_RESERVED_COMPLETION)
    now = provider.clock()
    refused = _day_refusal(provider, prompt, now) or _minute_refusal(provider, reservation, now)
    if refused:
        limit, reply = refused
        available = {"tpm": provider._tpm.level,
                     "tpd": None if provider.tokens_per_day is None
                     else provider.tokens_per_day - provider._day.tokens}.get(limit)
        provider.quota_refusals.append(QuotaRefusal(now, limit, prompt, reservation, available,
                                                    len(provider.received) - 1))
        return reply
    _charge(provider, reservation)
    return None


def _admit_chutes(provider: EmulatedProvider) -> _Reply | None:
    """Chutes only has a fuzzy requests/minute limit and no rate-limit headers."""
    limit = provider.requests_per_minute
    if limit is None:
        return None
    if provider._rpm.wait_for(1, limit, provider.clock()) > 0:
        return _error("chutes", 429, "Infrastructure is at maximum capacity, try again later")
    provider._rpm.take(1)
    return None


_Refused = tuple[Literal["rpm", "tpm", "rpd", "tpd"], _Reply]


def _day_refusal(provider: EmulatedProvider, prompt: int, now: float) -> _Refused | None:
    """429 when today's requests are used up or the prompt no longer fits today's tokens."""
    day = provider._day
    day.roll(now)
    retry = _retry_after(day.reset_in(now))
    if provider.requests_per_day is not None and day.requests >= provider.requests_per_day:
        return "rpd", _quota_429("Requests per day limit exceeded - too many requests sent.",
                                 "too_many_requests_error", "request_quota_exceeded", retry)
    if provider.tokens_per_day is not None and day.tokens + prompt > provider.tokens_per_day:
        return "tpd", _quota_429("Tokens per day limit exceeded - too many tokens processed.",
                                 "too_many_tokens_error", "token_quota_exceeded", retry)
    return None


def _minute_refusal(provider: EmulatedProvider, reservation: int, now: float) -> _Refused | None:
    """429 when the requests/minute or tokens/minute bucket cannot cover this request."""
    if provider.requests_per_minute is not None:
        wait = provider._rpm.wait_for(1, provider.requests_per_minute, now)
        if wait > 0:
            return "rpm", _quota_429("Requests per minute limit exceeded - too many requests sent.",
                                     "too_many_requests_error", "request_quota_exceeded",
                                     _retry_after(wait))
    if provider.tokens_per_minute is not None:
        wait = provider._tpm.wait_for(reservation, provider.tokens_per_minute, now)
        if wait > 0:
            return "tpm", _quota_429("Tokens per minute limit exceeded - too many tokens processed.",
                                     "too_many_tokens_error", "token_quota_exceeded",
                                     _retry_after(wait))
    return None


def _charge(provider: EmulatedProvider, reservation: int) -> None:
    """Take one request and the token reservation (buckets were refilled by the checks)."""
    if provider.requests_per_minute is not None:
        provider._rpm.take(1)
    if provider.tokens_per_minute is not None:
        provider._tpm.take(reservation)
    provider._day.requests += 1


def _settle(provider: EmulatedProvider, reservation: int, used: int) -> None:
    """Cerebras: refund the unused reservation and count the real usage for the day.

    The emulated model answers instantly, so this runs as soon as the completion is composed,
    before it is written: a client that has read the answer sees the settled quota.
    """
    if provider.flavor != "cerebras":
        return
    if provider.tokens_per_minute is not None:
        provider._tpm.give(max(0, reservation - used), provider.tokens_per_minute)
    provider._day.tokens += used


def _retry_after(seconds: float) -> str:
    """Whole seconds, at least 1; the epsilon keeps float noise from adding a second."""
    return str(max(1, math.ceil(seconds - 1e-6)))


def _quota_429(message: str, type_: str, code: str, retry_after: str) -> _Reply:
    return _error("cerebras", 429, message, type_, "quota", code,
                  headers=[("retry-after", retry_after)])


def _with_limit_headers(provider: EmulatedProvider, action: _Action) -> _Action:
    """Add Cerebras's rate-limit headers to an answer (Chutes sends none)."""
    if provider.flavor != "cerebras" or not isinstance(action, (_Reply, _Stream)):
        return action
    action.headers.extend(_limit_headers(provider))
    return action


def _limit_headers(provider: EmulatedProvider) -> list[tuple[str, str]]:
    """The x-ratelimit-* headers for the limits that are set, as of now."""
    now = provider.clock()
    headers: list[tuple[str, str]] = []
    if provider.requests_per_day is not None:
        day = provider._day
        reset = day.reset_in(now)
        remaining = max(0, provider.requests_per_day - day.requests)
        headers += [("x-ratelimit-limit-requests-day", str(provider.requests_per_day)),
                    ("x-ratelimit-remaining-requests-day", str(remaining)),
                    ("x-ratelimit-reset-requests-day", f"{reset:.2f}")]
    if provider.tokens_per_minute is not None:
        bucket, limit = provider._tpm, provider.tokens_per_minute
        level = bucket.refill(limit, now)
        headers += [("x-ratelimit-limit-tokens-minute", str(limit)),
                    ("x-ratelimit-remaining-tokens-minute", str(max(0, int(level)))),
                    ("x-ratelimit-reset-tokens-minute", f"{bucket.seconds_to_full(limit):.2f}")]
    return headers


# --------------------------------------------------------------------------- completions


@define
class _Call:
    name: str
    arguments: str
    id: str | None = None  # a tool call's; a legacy function call has none


@define
class _Answer:
    """What the emulated model says: text, tool calls, or one legacy function call."""

    finish_reason: str
    completion_tokens: int
    content: str | None = None
    calls: list[_Call] = Factory(list)
    legacy_function: bool = False


def _completion(provider: EmulatedProvider, body: Json, faults: Faults, prompt: int,
                cap: int | None) -> _Action:
    """Compose the completion, settle the quota and answer plain or streamed.

    With `tokens_per_second` the settling waits until the completion is generated: the
    reservation stays taken meanwhile, as at a real provider.
    """
    number, admitted_at = provider.next_id(), provider.clock()
    answer = _answer(provider, body, cap, number)
    used = prompt + answer.completion_tokens
    usage = {"prompt_tokens": prompt, "completion_tokens": answer.completion_tokens,
             "total_tokens": used}
    meta = _Meta(provider.flavor, f"chatcmpl-{number}", int(time.time()), provider.model)
    reservation = prompt + (cap or DEFAULT_RESERVED_COMPLETION)
    speed = provider.tokens_per_second
    generation = answer.completion_tokens / speed if speed else 0.0
    stream = bool(body.get("stream"))
    counted = not (stream and (faults.reset_mid_stream or faults.error_first_event))
    settled = False

    def finish() -> None:
        nonlocal settled
        if settled:
            return
        settled = True
        _settle(provider, reservation, used)
        provider.usage_log.append(Usage(provider.clock(), prompt, answer.completion_tokens,
                                        admitted_at))
        if counted:
            provider.served += 1

    if stream:
        action: _Action = _stream_action(meta, answer, usage, body, faults,
                                         provider.words_per_chunk)
        # A stream's headers leave before the model runs: they still show the reservation.
        _with_limit_headers(provider, action)
        action.first_delay = provider.first_token_seconds
        if generation > 0:
            if action.delay <= 0:  # the events after the first one spread over the generation
                action.delay = generation / max(1, len(action.events) - 1)
            action.finish = finish
        else:
            finish()
        return action
    reply = _Reply(200, _full_body(meta, answer, usage))

    def finish_reply() -> None:
        # A plain answer's headers leave after the model ran: they show the settled quota.
        finish()
        _with_limit_headers(provider, reply)

    if generation + provider.first_token_seconds > 0:
        reply.wait, reply.finish = provider.first_token_seconds + generation, finish_reply
    else:
        finish_reply()
    return reply


def _answer(provider: EmulatedProvider, body: Json, cap: int | None, number: int) -> _Answer:
    """Pick text, a tool call or a legacy function call, truncated to `cap` words."""
    messages = body["messages"]
    last_role = messages[-1].get("role") if isinstance(messages[-1], dict) else None
    tools = _chosen_tools(body)
    if tools and last_role != "tool":
        calls, finishes, total = [], set(), 0
        for i, (name, arguments) in enumerate(tools):
            text, finish, tokens = _truncate(arguments, cap, "tool_calls")
            calls.append(_Call(name, text, f"call_{number}" + (f"_{i}" if i else "")))
            finishes.add(finish)
            total += tokens
        return _Answer("length" if "length" in finishes else "tool_calls", total, calls=calls)
    function = _legacy_function(body)
    if function is not None and last_role != "function":
        name, arguments = function
        text, finish, tokens = _truncate(arguments, cap, "function_call")
        return _Answer(finish, tokens, calls=[_Call(name, text)], legacy_function=True)
    text, finish, tokens = _truncate(_plain_text(provider, body), cap, "stop")
    return _Answer(finish, tokens, content=text)


def _plain_text(provider: EmulatedProvider, body: Json) -> str:
    """`completion_text`, or as many of its words in a cycle as `completion_words` says."""
    wanted = provider.completion_words
    if wanted is None:
        return completion_text(provider.flavor)
    count = max(1, int(wanted(body) if callable(wanted) else wanted))
    words = completion_text(provider.flavor).split()
    return " ".join((words * (count // len(words) + 1))[:count])


def _truncate(text: str, cap: int | None, finish: str) -> tuple[str, str, int]:
    """(text, finish_reason, tokens) with one token per whitespace-separated word."""
    words = text.split()
    if cap is None or len(words) <= cap:
        return text, finish, len(words)
    return " ".join(words[:cap]), "length", cap


def _chosen_tools(body: Json) -> list[tuple[str, str]]:
    """(name, arguments) of each tool to call: none when tools are absent or disabled, every
    offered tool when `parallel_tool_calls` is true and no single one is forced, else one."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return []
    wanted = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    calls = [(str(function.get("name", "")), _arguments(function.get("parameters")))
             for function in (tool.get("function") or {} for tool in tools)
             if wanted is None or function.get("name") == wanted]
    return calls if wanted is None and body.get("parallel_tool_calls") is True else calls[:1]


def _legacy_function(body: Json) -> tuple[str, str] | None:
    """(name, arguments) for the pre-tools `functions` field, or None."""
    functions = body.get("functions")
    if body.get("tools") or not functions or not isinstance(functions[0], dict):
        return None
    return str(functions[0].get("name", "")), _arguments(functions[0].get("parameters"))


def _arguments(parameters: Any) -> str:
    """A JSON object giving "emulated" to every required parameter."""
    required = parameters.get("required", []) if isinstance(parameters, dict) else []
    return json.dumps({str(name): "emulated" for name in required})


@define
class _Meta:
    """The fields every body or chunk of one completion shares."""

    flavor: str
    id: str
    created: int
    model: str

    def head(self, object_: str) -> Json:
        head: Json = {"id": self.id, "object": object_, "created": self.created,
                      "model": self.model}
        if self.flavor == "cerebras":
            head["system_fingerprint"] = "fp_emulated"
        return head

    def time_info(self) -> Json:
        return {"queue_time": 0.0001, "prompt_time": 0.001, "completion_time": 0.01,
                "total_time": 0.0111, "created": self.created}


def _full_body(meta: _Meta, answer: _Answer, usage: Json) -> Json:
    message: Json = {"role": "assistant", "content": answer.content}
    if answer.calls and answer.legacy_function:
        message["function_call"] = {"name": answer.calls[0].name, "arguments": answer.calls[0].arguments}
    elif answer.calls:
        message["tool_calls"] = [{"id": call.id, "type": "function",
                                  "function": {"name": call.name, "arguments": call.arguments}}
                                 for call in answer.calls]
    body = meta.head("chat.completion")
    body["choices"] = [{"index": 0, "message": message, "finish_reason": answer.finish_reason}]
    body["usage"] = usage
    if meta.flavor == "cerebras":
        body["time_info"] = meta.time_info()
    return body


def _stream_action(meta: _Meta, answer: _Answer, usage: Json, body: Json,
                   faults: Faults, words_per_chunk: int = 1) -> _Stream:
    """The SSE events of a streamed completion (or of an injected stream error)."""
    if faults.error_first_event:
        return _Stream([_stream_error(meta.flavor)], delay=faults.chunk_delay)
    deltas = [{"role": "assistant", "content": ""}, *_deltas(answer, words_per_chunk)]
    events = [_chunk(meta, delta, None) for delta in deltas]
    final = _chunk(meta, {}, answer.finish_reason)
    events.append(final)
    if meta.flavor == "cerebras":
        final["usage"] = usage  # Cerebras: always, on the final chunk
        final["time_info"] = meta.time_info()
    elif (body.get("stream_options") or {}).get("include_usage"):
        events.append({**meta.head("chat.completion.chunk"), "choices": [], "usage": usage})
    return _Stream(events, delay=faults.chunk_delay, reset_after_first=faults.reset_mid_stream)


def _stream_error(flavor: str) -> Json:
    return {"error": {"message": f"Emulated {flavor} failed while generating.",
                      "type": "server_error", "param": None, "code": "internal_error"}}


def _chunk(meta: _Meta, delta: Json, finish_reason: str | None) -> Json:
    chunk = meta.head("chat.completion.chunk")
    chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    return chunk


def _deltas(answer: _Answer, words_per_chunk: int = 1) -> list[Json]:
    """The content or call deltas after the role delta (text: `words_per_chunk` words each)."""
    if not answer.calls:
        words = (answer.content or "").split(" ")
        step = max(1, words_per_chunk)
        pieces = [" ".join(words[i:i + step]) for i in range(0, len(words), step)]
        return [{"content": piece if i == 0 else " " + piece} for i, piece in enumerate(pieces)]
    if answer.legacy_function:
        call = answer.calls[0]
        return [{"function_call": {"name": call.name, "arguments": ""}},
                *({"function_call": {"arguments": piece}} for piece in _split(call.arguments))]
    deltas: list[Json] = []
    for index, call in enumerate(answer.calls):  # one call after the other, as OpenAI streams them
        first = {"index": index, "id": call.id, "type": "function",
                 "function": {"name": call.name, "arguments": ""}}
        deltas.append({"tool_calls": [first]})
        deltas += ({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                   for piece in _split(call.arguments))
    return deltas


def _split(text: str) -> list[str]:
    """Split into pieces of at most 8 characters, at least two when the text allows."""
    size = max(1, min(8, len(text) // 2))
    return [text[i:i + size] for i in range(0, len(text), size)]


# --------------------------------------------------------------------------- HTTP server


# Errors meaning the client went away or broke the protocol: close quietly.
_CLIENT_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError,
                ConnectionError)


@define
class _Http:
    """One client connection: the trio stream and its h11 state machine."""

    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
    conn: h11.Connection = Factory(lambda: h11.Connection(h11.SERVER))

    async def _event(self) -> Any:
        """The next h11 event, reading from the socket as needed."""
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.conn.receive_data(await self.stream.receive_some(_MAX_READ))

    async def read_request(self) -> _Request | None:
        """The next complete request, or None when the client closed the connection."""
        event = await self._event()
        if not isinstance(event, h11.Request):
            return None
        body = bytearray()
        while isinstance(part := await self._event(), h11.Data):
            body += part.data
        if not isinstance(part, h11.EndOfMessage):
            return None
        return _Request(event.method.decode(), event.target.decode().split("?")[0],
                        _header_dict(event.headers), bytes(body))

    async def _send(self, event: Any) -> None:
        data = self.conn.send(event)
        if data:
            await self.stream.send_all(data)

    async def respond(self, reply: _Reply) -> None:
        payload = json.dumps(reply.body).encode()
        headers = [("content-type", "application/json"),
                   ("content-length", str(len(payload))), *reply.headers]
        await self._send(h11.Response(status_code=reply.status, headers=headers,
                                      reason=_phrase(reply.status)))
        await self._send(h11.Data(data=payload))
        await self._send(h11.EndOfMessage())

    async def stream_events(self, stream: _Stream) -> bool:
        """Send an SSE response; False when it ended in a reset (connection gone)."""
        headers = [("content-type", "text/event-stream"), ("cache-control", "no-cache"),
                   ("transfer-encoding", "chunked"), *stream.headers]
        await self._send(h11.Response(status_code=200, headers=headers, reason=b"OK"))
        payloads = [json.dumps(event) for event in stream.events] + ["[DONE]"]
        last_event = len(stream.events) - 1
        try:
            for i, payload in enumerate(payloads):
                # A generated stream's [DONE] follows its last event at once.
                paced = stream.finish is None or i <= last_event
                if i and stream.delay > 0 and paced:
                    await trio.sleep(stream.delay)
                if i == 0 and stream.first_delay > 0:
                    await trio.sleep(stream.first_delay)
                if i == last_event and stream.finish is not None:
                    stream.finish()
                await self._send(h11.Data(data=f"data: {payload}\n\n".encode()))
                if stream.reset_after_first:
                    await self.reset()
                    return False
            await self._send(h11.EndOfMessage())
            return True
        finally:
            if stream.finish is not None:
                stream.finish()  # the model ran even if the client left; idempotent

    async def reset(self) -> None:
        """Abort the connection with a TCP RST instead of an orderly FIN."""
        tcp = self.stream.transport_stream if isinstance(self.stream, trio.SSLStream) else self.stream
        tcp.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                      struct.pack("ii", 1, 0))
        await self.stream.aclose()

    async def wait_until_gone(self) -> None:
        """Read and discard until the client closes its side."""
        while await self.stream.receive_some(_MAX_READ):
            pass

    def next_cycle(self) -> bool:
        """Prepare for the next request on this connection; False if it must close."""
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
            return True
        return False


def _header_dict(headers: Any) -> dict[str, str]:
    """Lower-cased header names (h11 already lower-cases) joined like HTTP would."""
    result: dict[str, str] = {}
    for name, value in headers:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        result[key] = f"{result[key]}, {text}" if key in result else text
    return result


async def _perform(http_: _Http, action: _Action) -> bool:
    """Carry out an answer; True when the connection may serve another request."""
    if isinstance(action, _Reset):
        await http_.reset()
        return False
    if isinstance(action, _Stall):
        await http_.wait_until_gone()
        return False
    if isinstance(action, _Stream):
        return await http_.stream_events(action)
    if action.wait > 0:
        await trio.sleep(action.wait)
    if action.finish is not None:
        action.finish()
    await http_.respond(action)
    return True


async def _serve_connection(provider: EmulatedProvider,
                            stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]) -> None:
    """Serve keep-alive requests on one connection; never raises for client misbehaviour."""
    provider.connections += 1
    http_ = _Http(stream)
    try:
        while (request := await http_.read_request()) is not None:
            action = await _dispatch(provider, request)
            if not await _perform(http_, action) or not http_.next_cycle():
                break
    except _CLIENT_GONE:
        pass  # the client left or reset: nothing to answer
    except Exception:  # a bug here must not take the whole emulated server down
        log.exception("emulated %s failed on a connection", provider.flavor)
    finally:
        await stream.aclose()


async def serve(provider: EmulatedProvider, host: str = "127.0.0.1", port: int = 0, *,
                ssl_context: ssl.SSLContext | None = None,
                task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled. task_status.started(base_url) with base_url like
    'http://127.0.0.1:43817/v1' ('https://...' with `ssl_context`, as the real providers
    serve). Connection tasks live in a nursery owned by this call."""
    now, day = provider.clock(), provider._day
    if provider.day_started_at is not None or day.start is None:
        # The daily windows start with serving unless the day was placed.
        start = now if provider.day_started_at is None else provider.day_started_at
        day.place(now, start, provider.day_tokens_used)
    else:
        day.roll(now)  # served again: the same day goes on
    tcp_listeners = await trio.open_tcp_listeners(port, host=host)
    bound = tcp_listeners[0].socket.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    listeners: list[trio.abc.Listener[Any]] = list(tcp_listeners)
    if ssl_context is not None:
        listeners = [trio.SSLListener(listener, ssl_context, https_compatible=True) for listener in tcp_listeners]
    scheme = "http" if ssl_context is None else "https"
    task_status.started(f"{scheme}://{shown}:{bound}/v1")
    await trio.serve_listeners(partial(_serve_connection, provider), listeners)
