"""Settings: attrs classes built with cattrs from a TOML file, then environment overrides.

Precedence, lowest first: built-in defaults, the TOML file, a `.env` file in the working
directory, the process environment. Every refusal names the key and where its value came from.
"""

import hashlib
import os
import re
import tomllib
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NewType

import attrs
import cattrs
from attrs import field, frozen
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from .logs import FORMATS, LEVELS
from .plans import PLANS, WINDOW_SETTINGS
from .redis_target import TlsFileError, parse_redis_url, tls_context


CONTINUATIONS = ("prefill-vllm", "prefix", "restart", "off")  # how a provider finishes a broken stream


class ConfigError(Exception):
    """A setting is wrong; the message is one line naming the key and its source."""


class _InvalidValue(ValueError):
    """Raised by field validators; carries the field name so the error can name the key."""

    def __init__(self, attribute: attrs.Attribute, reason: str) -> None:
        super().__init__(reason)
        self.key = attribute.name


class _InvalidKey(_InvalidValue):
    """A check across fields, reported against one key."""

    def __init__(self, key: str, reason: str) -> None:
        ValueError.__init__(self, reason)
        self.key = key


def _positive(instance: object, attribute: attrs.Attribute, value: float | int | None) -> None:
    if value is not None and value <= 0:
        raise _InvalidValue(attribute, f"must be greater than 0, got {value}")


def _between(low: float, high: float) -> Callable[[object, attrs.Attribute, float | int], None]:
    def check(instance: object, attribute: attrs.Attribute, value: float | int) -> None:
        if not low <= value <= high:
            raise _InvalidValue(attribute, f"must be between {low:g} and {high:g}, got {value}")

    return check


def _port(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if not 0 <= value <= 65535:
        raise _InvalidValue(attribute, f"must be a port number 0-65535, got {value}")


def _log_level(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if value not in LEVELS:
        raise _InvalidValue(attribute, f"must be one of {', '.join(LEVELS)}, got {value!r}")


def _one_of(*choices: str) -> Callable[[object, attrs.Attribute, str], None]:
    def check(instance: object, attribute: attrs.Attribute, value: str) -> None:
        if value not in choices:
            raise _InvalidValue(attribute, f"must be one of {', '.join(choices)}, got {value!r}")

    return check


def _normalize_level(value: str) -> str:
    """`info`, `Warning` and `WARN` are all accepted, from the file as from the environment."""
    level = value.upper() if isinstance(value, str) else value
    return "WARN" if level == "WARNING" else level


def _redis_url(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if value == "":
        return  # checked against quota_backend in Config
    try:
        parse_redis_url(value)
    except ValueError as error:
        raise _InvalidValue(attribute, str(error)) from None


def _no_braces(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if "{" in value or "}" in value:
        raise _InvalidValue(attribute, "must not contain { or }: each key's {provider} is its Redis Cluster hash tag")


def _url(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if not value.startswith(("http://", "https://")):
        raise _InvalidValue(attribute, f"must start with http:// or https://, got {value!r}")


# Model ids in order of preference; a setting may give one id (a string) or a list.
Candidates = NewType("Candidates", tuple[str, ...])


def candidates(value: str | Iterable[str]) -> Candidates:
    """A model setting as candidates in order of preference: one id, or a list of ids."""
    return Candidates((value,) if isinstance(value, str) else tuple(value))


def _optional_candidates(value: str | Iterable[str] | None) -> Candidates | None:
    return None if value is None else candidates(value)


def _model_ids(instance: object, attribute: attrs.Attribute, value: Candidates | None) -> None:
    if value is not None and (not value or not all(value)):
        raise _InvalidValue(attribute, "must name at least one model, and no empty id")


@frozen
class Adaptation:
    """Rewrites a request needs before this provider accepts it (Cerebras is strict)."""

    drop_fields: tuple[str, ...] = ()
    # `parallel_tool_calls: false` is refused by Cerebras; `true` is its behaviour anyway.
    drop_false_parallel_tool_calls: bool = False
    strip_tool_strict: bool = False
    # tool_choice values the provider accepts; others make the router skip this provider
    # for the request rather than silently change what the client asked for.
    allowed_tool_choice: tuple[str, ...] | None = None


@frozen
class RateLimitHeaders:
    """Names of the response headers that carry a provider's own quota figures.

    Each pair is (remaining, seconds until reset); a reset may be seconds (`11.38`) or a
    duration (`1m30s`). Defaults are Cerebras's; a pair left empty is not read.
    Stated limits are read from every header `limit_prefix` + `{requests,tokens}-{minute,day}`
    (Cerebras's `x-ratelimit-limit-tokens-minute`); an empty prefix reads none.
    """

    limit_prefix: str = "x-ratelimit-limit-"

    remaining_requests_minute: str = ""
    reset_requests_minute: str = ""
    remaining_tokens_minute: str = "x-ratelimit-remaining-tokens-minute"
    reset_tokens_minute: str = "x-ratelimit-reset-tokens-minute"
    remaining_requests_day: str = "x-ratelimit-remaining-requests-day"
    reset_requests_day: str = "x-ratelimit-reset-requests-day"
    remaining_tokens_day: str = ""
    reset_tokens_day: str = ""

    def pairs(self) -> dict[str, tuple[str, str]]:
        """`{window: (remaining header, reset header)}` for the pairs that are set."""
        pairs = {
            "rpm": (self.remaining_requests_minute, self.reset_requests_minute),
            "tpm": (self.remaining_tokens_minute, self.reset_tokens_minute),
            "rpd": (self.remaining_requests_day, self.reset_requests_day),
            "tpd": (self.remaining_tokens_day, self.reset_tokens_day),
        }
        return {name: pair for name, pair in pairs.items() if all(pair)}


WINDOW_KINDS = ("requests", "tokens", "uncached_tokens")
WINDOW_METERINGS = ("rolling", "bucket", "fixed")
_UNITS = (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1))


def _window_seconds(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if not 1 <= value <= 366 * 86_400:
        raise _InvalidValue(attribute, f"must be between 1 and {366 * 86_400} (a year), got {value}")


@frozen(kw_only=True)
class QuotaWindow:
    """A quota window of any length: at most `limit` requests or tokens per `seconds`, counted
    as the provider meters it: "rolling" (what the last `seconds` booked, as Chutes's plans),
    "bucket" (refills continuously, as Cerebras's per-minute limits) or "fixed" (empties at
    each boundary, multiples of `seconds` since the Unix epoch, as a daily quota at UTC midnight)."""

    kind: str = field(validator=_one_of(*WINDOW_KINDS))
    seconds: int = field(validator=_window_seconds)
    limit: int = field(validator=_positive)
    metering: str = field(default="rolling", validator=_one_of(*WINDOW_METERINGS))

    @property
    def name(self) -> str:
        """Its name in the ledger, status and metrics, e.g. `requests_4h`, `tokens_30d_fixed`:
        one per kind, length and metering, so the names stay as few as the settings."""
        length = next(f"{self.seconds // size}{unit}" for unit, size in _UNITS if self.seconds % size == 0)
        suffix = "" if self.metering == "rolling" else f"_{self.metering}"
        return f"{self.kind}_{length}{suffix}"


def _distinct_windows(instance: object, attribute: attrs.Attribute, value: "tuple[QuotaWindow, ...] | None") -> None:
    seen = set()
    for window in value or ():
        if (window.kind, window.seconds) in seen:
            raise _InvalidValue(attribute, f"two {window.kind} windows of {window.seconds} s; one figure per window")
        seen.add((window.kind, window.seconds))


@frozen
class PerModel:
    """Settings a provider may have per model: quota limits, completion cap, context window.

    On a provider, None means "none"; on a route's provider, "the provider's value".
    """

    requests_per_minute: int | None = field(default=None, validator=_positive)
    # Every token of a request: its whole prompt and completion (Cerebras's total bucket).
    tokens_per_minute: int | None = field(default=None, validator=_positive)
    # Prompt tokens the provider's prompt cache did not hold (Cerebras's uncached bucket).
    uncached_tokens_per_minute: int | None = field(default=None, validator=_positive)
    requests_per_day: int | None = field(default=None, validator=_positive)
    tokens_per_day: int | None = field(default=None, validator=_positive)
    # Windows of other lengths (4 hours, 30 days, ...), as the provider meters each one.
    windows: tuple[QuotaWindow, ...] | None = field(default=None, validator=_distinct_windows)
    # Cerebras books max_completion_tokens against tokens/minute before running a request, so
    # a cap on what is sent saves most of the quota (absent in the request = the cap is sent).
    max_completion_tokens_cap: int | None = field(default=None, validator=_positive)
    # Requests whose estimated prompt plus completion budget exceed this skip the provider.
    context_window: int | None = field(default=None, validator=_positive)
    # A plan preset (plans.PLANS) gives the starting figures of the limits not set above, until
    # the provider's x-ratelimit-limit-* headers state its own; set limits stay ceilings.
    plan: str | None = field(default=None, validator=attrs.validators.optional(_one_of(*PLANS)))


@frozen(kw_only=True)
class ProviderConfig(PerModel):
    name: str
    base_url: str = field(validator=_url)
    # Candidates in order of preference: the first one the provider's `GET /models` lists serves.
    model: Candidates = field(converter=candidates, validator=_model_ids)
    api_key: str = field(default="", repr=False)
    # Several keys of one provider: each has its own quota; the one with most headroom is used.
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    # Correct the ledger from the provider's x-ratelimit-* headers on every response.
    sync_rate_limit_headers: bool = True
    rate_limit_headers: RateLimitHeaders = RateLimitHeaders()
    # Ask the provider for a usage chunk on streams, so the ledger learns the real figures.
    request_stream_usage: bool = False
    adaptation: Adaptation = Adaptation()
    # Starting values of what patience learns from real answers (moving averages): how fast
    # the provider writes a completion, and how long until its first token arrives.
    output_tokens_per_second: float = field(default=100.0, validator=_between(0.1, 100_000))
    time_to_first_token_ms: int = field(default=1_000, validator=_between(0, 600_000))
    # The provider's prompt cache, as admission predicts it: how long a prefix it saw stays
    # cached (0 = no prediction: every prompt token is booked as uncached), the most it may
    # miss of a remembered prefix (its cache works in blocks), and how many prefixes each
    # key's memory holds (the oldest leave first).
    prompt_cache_seconds: float = field(default=0.0, validator=_between(0, 86_400))
    prompt_cache_block_tokens: int = field(default=600, validator=_between(0, 100_000))
    prompt_cache_entries: int = field(default=4096, validator=_between(1, 1_000_000))
    # How this provider finishes an answer another provider broke off mid-stream: given the
    # partial answer as a final assistant message it continues it ("prefill-vllm": vLLM/SGLang's
    # continue_final_message; "prefix": DeepSeek/Mistral's prefix flag), it answers again and
    # only what extends the sent text passes ("restart"), or it does not ("off").
    continuation: str = field(default="restart", validator=_one_of(*CONTINUATIONS))

    @property
    def keys(self) -> tuple[str, ...]:
        """Every API key of this provider, `api_key` first, without repeats."""
        return tuple(dict.fromkeys(key for key in (self.api_key, *self.api_keys) if key))


@frozen(kw_only=True)
class RouteProvider(PerModel):
    """One provider of a model route: which provider, its model id there, and per-model overrides.

    Unset overrides inherit the provider table's values (Cerebras's limits are per model, so a
    route on another model usually names its own).
    """

    provider: str
    # Candidates as for a provider's `model`; the provider's own list when unset.
    model: Candidates | None = field(default=None, converter=_optional_candidates, validator=_model_ids)
    adaptation: Adaptation | None = None

    def applied_to(self, provider: ProviderConfig) -> ProviderConfig:
        """The provider's settings as this route uses them: its model and overrides in place."""
        names = ("model", "adaptation", *(a.name for a in attrs.fields(PerModel)))
        overrides = {name: value for name in names if (value := getattr(self, name)) is not None}
        return attrs.evolve(provider, **overrides)


@frozen
class ModelRoute:
    """A model clients may ask for (by `name` or an alias), served by `providers` in order."""

    name: str
    providers: tuple[RouteProvider, ...]
    # Exact names or globs (`claude-*`) that also select this route.
    aliases: tuple[str, ...] = ()
    # What the model lists tell agents of the model's size (they compact and size answers by it);
    # unset: derived from the route's providers' `context_window` and `max_completion_tokens_cap`
    # (routing/limits.py).
    context_window: int | None = field(default=None, validator=_positive)
    max_output_tokens: int | None = field(default=None, validator=_positive)


@frozen(kw_only=True)
class Budget:
    """A client's own limits (None: none), counted over every provider it is served by."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    requests_per_day: int | None = None
    tokens_per_day: int | None = None

    def limits(self) -> dict[str, int]:
        """`{window: limit}` of the limits that are set, windows named as the ledger names them."""
        figures = {"rpm": self.requests_per_minute, "tpm": self.tokens_per_minute,
                   "rpd": self.requests_per_day, "tpd": self.tokens_per_day}
        return {window: limit for window, limit in figures.items() if limit is not None}


_CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_KEY_HASH = re.compile(r"sha256:[0-9a-f]{64}")


@frozen(kw_only=True)
class ClientConfig:
    """One caller of the proxy ([[clients]]): its name in logs and views, how it proves who it is,
    its weight in the fast provider's fair share, its own budgets and the routes it may use."""

    name: str
    # Plain keys (secrets, redacted everywhere) or their SHA-256 (`sha256:<64 hex>`), so the
    # file holds no secret: `printf %s "$KEY" | sha256sum`.
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    key_hashes: tuple[str, ...] = ()
    weight: float = 1.0
    routes: tuple[str, ...] = ()  # empty: every route
    budget: Budget = Budget()  # over all its routes together
    route_budgets: dict[str, Budget] = field(factory=dict)  # by route name, each on its own

    def digests(self) -> tuple[str, ...]:
        """Every key of this client as `sha256:<hex>`."""
        return tuple(dict.fromkeys((*(key_digest(key) for key in self.api_keys), *self.key_hashes)))


def key_digest(key: str) -> str:
    """A client key as `[[clients]]` may list it instead of the key: `sha256:<hex>`."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def quota_name(provider: ProviderConfig, models: tuple[str, ...]) -> str:
    """The ledger's name for a provider's quota on the candidates `models` (limits are per model).

    The provider's own candidates keep the plain provider name, so settings without routes keep
    their account names (and saved state); other lists add their first id: `cerebras:gpt-oss-120b`.
    One name per list, not per chosen model: the account stays put when the choice moves.
    """
    return provider.name if models == provider.model else f"{provider.name}:{models[0]}"


# The default candidates: the best coding models each provider offers, in order of preference.
# Catalogues move every few months, so these are only where the prober starts looking: the
# first id a key's `GET /models` lists serves. Today's ids come first, best for coding first;
# ids seen in earlier catalogues follow; the original Qwen3-Coder ids stay last, for accounts
# that still list them.
CEREBRAS_MODELS = (
    "gpt-oss-120b",  # listed in every 2026 snapshot; the largest, with a 131k context
    "qwen-3.8-27b",  # listed since October 2026; a 65k context
    "zai-glm-4.7",  # Cerebras's named replacement for Qwen3-Coder 480B; reported retired
    "gemma-4-31b",  # listed mid-2026
    "qwen-3-coder-480b",  # retired 2025-11-05
)
CHUTES_MODELS = (
    "Qwen/Qwen3-Coder-Next-TEE",  # Qwen's coder, 262k context
    "Qwen/Qwen3.5-397B-A17B-TEE",  # exact id unconfirmed: a larger general Qwen
    "Qwen/Qwen3.8-27B-TEE",  # exact id unconfirmed
    "Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8",  # the original; no longer listed
)


def _default_cerebras() -> ProviderConfig:
    return ProviderConfig(
        name="cerebras",
        base_url="https://api.cerebras.ai/v1",
        model=CEREBRAS_MODELS,
        # Starting figures until Cerebras states its own limits (in every answer's headers).
        plan="code-pro",
        prompt_cache_seconds=300.0,
        max_completion_tokens_cap=16_384,
        context_window=131_072,
        # Cerebras serves its large models at about 2,000 tokens/s or more; first tokens come in
        # well under a second.
        output_tokens_per_second=2_000.0,
        time_to_first_token_ms=300,
        adaptation=Adaptation(
            drop_fields=("store", "top_k", "min_p"),
            drop_false_parallel_tool_calls=True,
            strip_tool_strict=True,
            allowed_tool_choice=("auto", "none"),
        ),
    )


def _default_chutes() -> ProviderConfig:
    return ProviderConfig(
        name="chutes",
        base_url="https://llm.chutes.ai/v1",
        model=CHUTES_MODELS,
        request_stream_usage=True,
        # A GPU deployment shared by many users: tens of tokens/s, first tokens after seconds.
        output_tokens_per_second=50.0,
        time_to_first_token_ms=2_000,
    )


@frozen
class Config:
    host: str = "127.0.0.1"
    port: int = field(default=3000, validator=_port)
    log_level: str = field(default="INFO", converter=_normalize_level, validator=_log_level)
    # "text" lines for people, "json" lines for log collectors.
    log_format: str = field(default="text", validator=_one_of(*FORMATS))
    proxy_model_name: str = "qwen-3-coder"
    # Other model names clients may ask for, served as proxy_model_name: exact names or globs
    # such as "claude-*" (Claude Code asks for its own model names unless told otherwise).
    model_aliases: tuple[str, ...] = ()
    # The one route's context window and output limit as the model lists give them (a
    # [[models]] route has its own `context_window` and `max_output_tokens`); unset: derived
    # from the providers' `context_window` and `max_completion_tokens_cap`.
    model_context_window: int | None = field(default=None, validator=_positive)
    model_max_output_tokens: int | None = field(default=None, validator=_positive)
    request_timeout_ms: int = field(default=30_000, validator=_positive)
    # request_timeout_ms bounds each wait for bytes; a provider that trickles bytes passes it.
    # These bound the whole: from sending to the status line and a stream's first event (a
    # provider that misses it is failed over), to a non-streamed answer's last byte, and the
    # time between two stream events while bytes that complete none arrive.
    first_event_timeout_ms: int = field(default=60_000, validator=_positive)
    answer_timeout_ms: int = field(default=600_000, validator=_positive)
    stream_idle_timeout_ms: int = field(default=60_000, validator=_positive)
    # How many times one stream may be finished by another provider after its own broke off
    # with content already sent (0: never; the stream ends with the door's error event).
    max_continuations: int = field(default=2, validator=_between(0, 10))
    cooldown_period_ms: int = field(default=300_000, validator=_positive)
    # Backoff after a "busy right now" refusal (Cerebras queue_exceeded, Chutes at capacity or
    # without instances) that names no time of its own: not a quota matter, so short.
    capacity_backoff_ms: int = field(default=5_000, validator=_positive)
    # Cool down for the time a 429 names (Retry-After, reset headers); false restores the
    # original fixed cooldown_period_ms after every 429.
    honour_retry_after: bool = True
    # The prober's `GET /models` per provider: every this many milliseconds, and this many
    # failures in a row mark a provider down (skipped while another can serve).
    health_check_interval_ms: int = field(default=60_000, validator=_positive)
    health_check_failures: int = field(default=3, validator=_positive)
    # Where the quota ledger is saved so a restart remembers today's spending: "auto" is
    # $XDG_STATE_HOME/trioproxy/state.json (~/.local/state/...), "" turns saving off.
    state_file: str = "auto"
    state_save_interval_ms: int = field(default=5_000, validator=_positive)
    max_body_bytes: int = field(default=10 * 1024 * 1024, validator=_positive)
    # Bounds on what a provider sends: a successful non-streamed answer (past it the next
    # provider is tried, then a 502) and one event of a stream (past it the stream fails).
    max_answer_bytes: int = field(default=32 * 1024 * 1024, validator=_positive)
    max_stream_event_bytes: int = field(default=4 * 1024 * 1024, validator=_positive)
    # A client that leaves bytes we sent unread (unacknowledged) this long has stopped reading:
    # its connection ends and with it the provider's stream (needs a restart, like host and port).
    client_stall_timeout_ms: int = field(default=60_000, validator=_positive)
    # Tools only OpenAI's own service runs (web_search, file_search, ...) in a Responses request:
    # "drop" leaves them out (named in the x-trioproxy-dropped-tools header), "refuse" answers 400.
    hosted_tools: str = field(default="drop", validator=_one_of("drop", "refuse"))
    # On SIGTERM/SIGINT, requests and streams in flight get this long to finish; streams still
    # running then end with an SSE error event and [DONE].
    shutdown_grace_ms: int = field(default=30_000, validator=_positive)
    # Keys clients must present (Authorization: Bearer); empty accepts any, as the original did.
    client_api_keys: tuple[str, ...] = field(default=(), repr=False)
    # Keys for the operator views (/healthz details, /v1/status, /metrics); empty: the client
    # keys serve, and with those empty too the views are open (fine on 127.0.0.1).
    operator_api_keys: tuple[str, ...] = field(default=(), repr=False)
    # Web pages: Host names served besides localhost, IP addresses and `host` (".example.com"
    # adds its subdomains, "*" any: against DNS rebinding), and origins (globs) of pages that
    # may call the proxy from a browser, with CORS headers; a page of any other origin is refused.
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    cerebras: ProviderConfig = field(factory=_default_cerebras)
    chutes: ProviderConfig = field(factory=_default_chutes)
    # Patience: a request the preferred provider has no quota for right now waits for it, in
    # arrival order, when that is expected to finish sooner than the next provider's answer,
    # but never longer than this. 0 turns patience off (fall back at once, as before).
    max_wait_ms: int = field(default=10_000, validator=_between(0, 300_000))
    # Further OpenAI-compatible providers, added by configuration alone ([[extra_providers]]).
    extra_providers: tuple[ProviderConfig, ...] = ()
    # Order of preference by name; providers it does not name follow, in file order.
    provider_order: tuple[str, ...] = ("cerebras", "chutes")
    # Several processes and machines (README): "memory" keeps quota in this process (saved to
    # state_file); "redis" shares it through redis_url between every worker and replica.
    quota_backend: str = field(default="memory", validator=_one_of("memory", "redis"))
    redis_url: str = field(default="", validator=_redis_url, repr=False)  # may hold a password
    redis_timeout_ms: int = field(default=250, validator=_positive)  # no request waits longer on Redis
    # While Redis is unreachable: "local" serves on this process's own buckets at limit / replicas;
    # "refuse" treats every provider with limits as out of quota until Redis is back.
    redis_outage: str = field(default="local", validator=_one_of("local", "refuse"))
    replicas: int = field(default=1, validator=_positive)  # processes sharing the quota, for "local"
    # rediss:// only: the PEM file of a private CA that signed the server's certificate (else the
    # system's CAs), and a client certificate and key for servers that ask for one.
    redis_tls_ca: str = ""
    redis_tls_cert: str = ""
    redis_tls_key: str = ""
    # redis+sentinel:// only: the sentinels' own password (requirepass); the URL's is the data nodes'.
    redis_sentinel_password: str = field(default="", repr=False)
    redis_key_prefix: str = field(default="trioproxy:", validator=_no_braces)
    # An unsettled reservation (its process died) gives back all but its prompt after this long.
    redis_lease_ttl_ms: int = field(default=120_000, validator=_positive)
    # Far from the limits, each process admits from a share booked ahead (no round trip per
    # request); false books every request in Redis before it is sent.
    redis_shares: bool = True
    workers: int = field(default=1, validator=_positive)  # processes serving the one port
    # Model routes ([[models]]). Without any, one route serves proxy_model_name (and
    # model_aliases) from every provider in provider_order, as the original design did.
    models: tuple[ModelRoute, ...] = ()
    # Named clients ([[clients]]): keys, weights, budgets, allowed routes. `client_api_keys`
    # are clients too, anonymous ones of weight 1.
    clients: tuple[ClientConfig, ...] = ()
    # While demand for a provider with a fallback (Cerebras) exceeds its quota, each client
    # active in the last minute gets a part of it in proportion to its weight; false: first
    # come, first served.
    fair_share: bool = True

    def __attrs_post_init__(self) -> None:
        if self.quota_backend == "redis" and not self.redis_url:
            raise _InvalidKey("redis_url", "must be set when quota_backend is \"redis\" (e.g. redis://127.0.0.1:6379/0)")
        _check_redis_tls(self)
        if self.redis_sentinel_password and (not self.redis_url or parse_redis_url(self.redis_url).topology != "sentinel"):
            raise _InvalidKey("redis_sentinel_password", "is only read with a sentinel redis_url (redis+sentinel://, rediss+sentinel://)")
        names = [p.name for p in (self.cerebras, self.chutes, *self.extra_providers)]
        if self.cerebras.name != "cerebras" or self.chutes.name != "chutes":
            raise _InvalidKey("cerebras.name", "the [cerebras] and [chutes] tables keep their own names")
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise _InvalidKey("extra_providers", f"provider name {duplicates[0]!r} is used twice")
        unknown = [name for name in self.provider_order if name not in names]
        if unknown:
            raise _InvalidKey("provider_order", f"names no provider called {unknown[0]!r}")
        _check_routes(self)
        _check_clients(self)

    @property
    def providers(self) -> tuple[ProviderConfig, ...]:
        """Providers in order of preference."""
        everyone = {p.name: p for p in (self.cerebras, self.chutes, *self.extra_providers)}
        named = [everyone[name] for name in dict.fromkeys(self.provider_order)]
        return tuple(named + [p for name, p in everyone.items() if name not in self.provider_order])

    @property
    def routes(self) -> tuple[ModelRoute, ...]:
        """The [[models]] routes, or the one route the original settings describe."""
        if self.models:
            return self.models
        providers = tuple(RouteProvider(provider=p.name) for p in self.providers)
        return (ModelRoute(self.proxy_model_name, providers, self.model_aliases, self.model_context_window,
                           self.model_max_output_tokens),)

    def route_providers(self, route: ModelRoute) -> list[ProviderConfig]:
        """The route's providers that have a key, in its order, with its model and overrides."""
        everyone = {p.name: p for p in self.providers}
        return [entry.applied_to(everyone[entry.provider]) for entry in route.providers if everyone[entry.provider].keys]


def _check_redis_tls(config: Config) -> None:
    """TLS files are for rediss:// URLs, come as a certificate with its key, and must load."""
    given = [name for name in ("redis_tls_ca", "redis_tls_cert", "redis_tls_key") if getattr(config, name)]
    if not given:
        return
    if not config.redis_url or not parse_redis_url(config.redis_url).tls:
        raise _InvalidKey(given[0], "is only read with a TLS redis_url (rediss://, rediss+cluster://, rediss+sentinel://)")
    if bool(config.redis_tls_cert) != bool(config.redis_tls_key):
        raise _InvalidKey("redis_tls_key" if config.redis_tls_cert else "redis_tls_cert",
                          "must be set too: a client certificate goes with its private key")
    try:
        tls_context(config.redis_tls_ca, config.redis_tls_cert, config.redis_tls_key)
    except TlsFileError as error:
        raise _InvalidKey(error.setting, str(error)) from None


def _check_routes(config: Config) -> None:
    """Route mistakes the types cannot catch: unknown providers, names used twice, clashing limits."""
    if config.models and config.model_aliases:
        raise _InvalidKey("model_aliases", "is not used with [[models]] routes; give each route its own `aliases`")
    providers = {p.name: p for p in (config.cerebras, config.chutes, *config.extra_providers)}
    names: dict[str, int] = {}
    limits: dict[str, tuple[int, ProviderConfig]] = {}
    for index, route in enumerate(config.models):
        if not route.name or not all(route.aliases):
            raise _InvalidKey(f"models.{index}.name" if not route.name else f"models.{index}.aliases", "must not be empty")
        if not route.providers:
            raise _InvalidKey(f"models.{index}.providers", f"route {route.name!r} names no provider")
        for alias_index, name in enumerate((route.name, *route.aliases)):
            key = f"models.{index}.name" if alias_index == 0 else f"models.{index}.aliases"
            if name in names:
                raise _InvalidKey(key, f"{name!r} is already used by route {config.models[names[name]].name!r}")
            names[name] = index
        for entry_index, entry in enumerate(route.providers):
            key = f"models.{index}.providers.{entry_index}"
            if entry.provider not in providers:
                raise _InvalidKey(f"{key}.provider", f"names no provider called {entry.provider!r}")
            used = entry.applied_to(providers[entry.provider])
            quota = quota_name(providers[entry.provider], used.model)
            earlier = limits.setdefault(quota, (index, used))
            if _quota_settings(earlier[1]) != _quota_settings(used):
                raise _InvalidKey(key, f"{entry.provider} model {', '.join(used.model)!r} has other limits in route "
                                       f"{config.models[earlier[0]].name!r}; one model has one quota")


def _check_clients(config: Config) -> None:
    """Client mistakes, each reported against the client's entry naming the client."""
    routes = {route.name: route for route in config.routes}
    owners: dict[str, str] = {key_digest(key): "client_api_keys" for key in config.client_api_keys}
    names: set[str] = set()
    for index, client in enumerate(config.clients):
        def refuse(key: str, reason: str) -> _InvalidKey:
            return _InvalidKey(f"clients.{index}.{key}", f"client {client.name!r} {reason}")

        if not _CLIENT_NAME.fullmatch(client.name):
            raise refuse("name", "must be 1-64 letters, digits, '.', '_' or '-' (it names the client in logs and metrics)")
        if client.name in names:
            raise refuse("name", "is listed twice")
        names.add(client.name)
        if client.weight <= 0:
            raise refuse("weight", f"must be greater than 0, got {client.weight:g}")
        if not client.api_keys and not client.key_hashes:
            raise refuse("api_keys", "has no key: give api_keys or key_hashes")
        for hashed in client.key_hashes:
            if not _KEY_HASH.fullmatch(hashed):
                raise refuse("key_hashes", "must list keys as sha256:<64 lowercase hex digits>")
        for digest in client.digests():
            field_ = "key_hashes" if digest in client.key_hashes else "api_keys"
            if owners.setdefault(digest, client.name) != client.name:
                raise refuse(field_, f"has a key that {owners[digest]} lists too")
        for route in client.routes:
            if route not in routes:
                raise refuse("routes", f"names no route called {route!r}")
        usable = [routes[name] for name in client.routes or routes]
        _check_budget(config, client, client.budget, usable, f"clients.{index}.budget")
        for route_name, budget in client.route_budgets.items():
            if route_name not in routes:
                raise refuse("route_budgets", f"names no route called {route_name!r}")
            _check_budget(config, client, budget, [routes[route_name]], f"clients.{index}.route_budgets.{route_name}")


def _check_budget(config: Config, client: ClientConfig, budget: Budget, routes: list[ModelRoute], key: str) -> None:
    """A budget is a positive figure no larger than what the routes' providers allow together,
    as configured or as their plans start (a window some provider does not limit allows any)."""
    everyone = {p.name: p for p in (config.cerebras, config.chutes, *config.extra_providers)}
    for window, limit in budget.limits().items():
        name = WINDOW_SETTINGS[window]
        if limit <= 0:
            raise _InvalidKey(f"{key}.{name}", f"client {client.name!r} must be greater than 0, got {limit}")
        for route in routes:
            figures = [starting_limits(entry.applied_to(everyone[entry.provider]))[window][0] for entry in route.providers]
            if all(figure is not None for figure in figures) and limit > sum(figures):
                raise _InvalidKey(f"{key}.{name}", f"client {client.name!r} has {limit}, above what the providers "
                                                   f"of route {route.name!r} allow together ({sum(figures)})")


def _quota_settings(provider: ProviderConfig) -> tuple[int | str | None, ...]:
    return (
        provider.requests_per_minute, provider.tokens_per_minute, provider.uncached_tokens_per_minute,
        provider.requests_per_day, provider.tokens_per_day, provider.plan, provider.windows,
    )


def configured_limits(provider: ProviderConfig) -> dict[str, int | None]:
    """`{window: the configured figure}`: the operator's ceilings (None: none set), the
    windows of other lengths (`QuotaWindow.name`) after the five named ones."""
    limits = {window: getattr(provider, name) for window, name in WINDOW_SETTINGS.items()}
    return limits | {window.name: window.limit for window in provider.windows or ()}


def extra_windows(provider: ProviderConfig) -> dict[str, QuotaWindow]:
    """`{name: window}` of the windows declared beyond rpm, tpm, utpm, rpd and tpd."""
    return {window.name: window for window in provider.windows or ()}


def starting_limits(provider: ProviderConfig) -> dict[str, tuple[int | None, str]]:
    """`{window: (limit, source)}` before the provider states any: the configured figure
    ("configured"), else the plan's ("preset"), else none (None, "")."""
    preset = PLANS.get(provider.plan or "", {})
    starting: dict[str, tuple[int | None, str]] = {}
    for window, configured in configured_limits(provider).items():
        if configured is not None:
            starting[window] = (configured, "configured")
        elif window in preset:
            starting[window] = (preset[window], "preset")
        else:
            starting[window] = (None, "")
    return starting


def keyless_route(config: Config) -> str | None:
    """One line naming the first route none of whose providers has a key, or None if all can serve.

    Checked only when serving: settings without any key are fine to inspect (--check-config).
    """
    for index, route in enumerate(config.routes):
        if not config.route_providers(route):
            first = route.providers[0].provider
            variable = f"{env_prefix(first)}_API_KEY"
            return (f"models.{index}.providers: none of the providers of route {route.name!r} "
                    f"({', '.join(entry.provider for entry in route.providers)}) has an API key; "
                    f"set {variable} (in the environment or .env) or {first}.api_key")
    return None


# Environment variable -> (path in the settings tree, type). Names of the original design.
ENV_VARS: Mapping[str, tuple[tuple[str, ...], type]] = {
    "HOST": (("host",), str),
    "PORT": (("port",), int),
    "LOG_LEVEL": (("log_level",), str),
    "LOG_FORMAT": (("log_format",), str),
    "PROXY_MODEL_NAME": (("proxy_model_name",), str),
    "MODEL_ALIASES": (("model_aliases",), tuple),
    "MODEL_CONTEXT_WINDOW": (("model_context_window",), int),
    "MODEL_MAX_OUTPUT_TOKENS": (("model_max_output_tokens",), int),
    "REQUEST_TIMEOUT": (("request_timeout_ms",), int),
    "FIRST_EVENT_TIMEOUT": (("first_event_timeout_ms",), int),
    "ANSWER_TIMEOUT": (("answer_timeout_ms",), int),
    "STREAM_IDLE_TIMEOUT": (("stream_idle_timeout_ms",), int),
    "COOLDOWN_PERIOD": (("cooldown_period_ms",), int),
    "MAX_BODY_BYTES": (("max_body_bytes",), int),
    "STATE_FILE": (("state_file",), str),
    "QUOTA_BACKEND": (("quota_backend",), str),
    "REDIS_URL": (("redis_url",), str),
    "REDIS_SENTINEL_PASSWORD": (("redis_sentinel_password",), str),
    "REDIS_OUTAGE": (("redis_outage",), str),
    "MAX_WAIT_MS": (("max_wait_ms",), int),
    "HOSTED_TOOLS": (("hosted_tools",), str),
    "PROXY_API_KEYS": (("client_api_keys",), tuple),
    "ALLOWED_HOSTS": (("allowed_hosts",), tuple),
    "ALLOWED_ORIGINS": (("allowed_origins",), tuple),
    "OPERATOR_API_KEYS": (("operator_api_keys",), tuple),
    "CEREBRAS_API_KEY": (("cerebras", "api_key"), str),
    "CEREBRAS_API_KEYS": (("cerebras", "api_keys"), tuple),
    "CEREBRAS_BASE_URL": (("cerebras", "base_url"), str),
    "CEREBRAS_MODEL_NAME": (("cerebras", "model"), tuple),  # one id or a comma list of candidates
    "CEREBRAS_REQUESTS_PER_MINUTE": (("cerebras", "requests_per_minute"), int),
    "CEREBRAS_TOKENS_PER_MINUTE": (("cerebras", "tokens_per_minute"), int),
    "CEREBRAS_UNCACHED_TOKENS_PER_MINUTE": (("cerebras", "uncached_tokens_per_minute"), int),
    "CEREBRAS_TOKENS_PER_DAY": (("cerebras", "tokens_per_day"), int),
    "CEREBRAS_PLAN": (("cerebras", "plan"), str),
    "CHUTES_API_KEY": (("chutes", "api_key"), str),
    "CHUTES_API_KEYS": (("chutes", "api_keys"), tuple),
    "CHUTES_BASE_URL": (("chutes", "base_url"), str),
    "CHUTES_MODEL_NAME": (("chutes", "model"), tuple),
}

SECRET_KEYS = frozenset({"api_key", "api_keys", "client_api_keys", "operator_api_keys", "redis_url", "redis_sentinel_password"})


def _strict_converter() -> cattrs.Converter:
    """A converter that refuses wrong types instead of coercing them ("12" is not an int)."""
    converter = cattrs.Converter(forbid_extra_keys=True)

    def exact(kind: type) -> Any:
        def structure(value: Any, _: type) -> Any:
            # bool is an int subclass; `port = true` is a mistake, not port 1.
            if type(value) is not kind and not (kind is float and type(value) is int):
                raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
            return kind(value)

        return structure

    for kind in (int, float, str, bool):
        converter.register_structure_hook(kind, exact(kind))
    converter.register_structure_hook_func(
        lambda kind: kind == tuple[str, ...], lambda value, _: _string_tuple(value)
    )
    converter.register_structure_hook(Candidates, lambda value, _: _model_setting(value))
    return converter


def _string_tuple(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TypeError("expected a list of strings")
    return tuple(value)


def _model_setting(value: Any) -> Candidates:
    if isinstance(value, str):
        return candidates(value)
    try:
        return candidates(_string_tuple(value))
    except TypeError:
        raise TypeError("expected a model id or a list of model ids") from None


_CONVERTER = _strict_converter()


def _set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        node = tree.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{'.'.join(path[:-1])}: expected a table")
        tree = node
    tree[path[-1]] = value


def _parse_env_value(name: str, raw: str, kind: type, origin: str) -> Any:
    if kind is int:
        try:
            return int(raw.strip().replace("_", ""))
        except ValueError:
            raise ConfigError(f"{name}: expected a whole number, got {raw!r} (from {origin})") from None
    if kind is tuple:
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw.strip()


def _env_overrides(environ: Mapping[str, str], dotenv_names: frozenset[str] = frozenset()) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings tree the environment sets, and the source of each dotted key."""
    tree: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, (path, kind) in ENV_VARS.items():
        raw = environ.get(name)
        if raw is None or raw.strip() == "":
            continue
        origin = ".env" if name in dotenv_names else "the environment"
        value = _parse_env_value(name, raw, kind, origin)
        _set_path(tree, path, value)
        sources[".".join(path)] = f"{name} in .env" if name in dotenv_names else f"environment variable {name}"
    return tree, sources


def env_prefix(provider_name: str) -> str:
    """`my-groq` -> `MY_GROQ`: the prefix of a provider's `<PREFIX>_API_KEY(S)` variables."""
    return "".join(ch if ch.isalnum() else "_" for ch in provider_name).upper()


def _extra_provider_keys_from_env(tree: dict[str, Any], env: Mapping[str, str]) -> None:
    """Keys of [[extra_providers]] come from `<NAME>_API_KEY` / `<NAME>_API_KEYS`, like the others'."""
    extras = tree.get("extra_providers")
    if not isinstance(extras, list):
        return
    for entry in extras:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            continue
        prefix = env_prefix(entry["name"])
        if env.get(f"{prefix}_API_KEY", "").strip():
            entry["api_key"] = env[f"{prefix}_API_KEY"].strip()
        if env.get(f"{prefix}_API_KEYS", "").strip():
            entry["api_keys"] = _parse_env_value(f"{prefix}_API_KEYS", env[f"{prefix}_API_KEYS"], tuple, "the environment")


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _default_tree() -> dict[str, Any]:
    return _CONVERTER.unstructure(Config())


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def _first_error(exc: BaseException, path: tuple[str, ...] = ()) -> tuple[tuple[str, ...], str]:
    """Dig the first leaf error out of cattrs' exception groups, with the key path to it."""
    if isinstance(exc, ForbiddenExtraKeysError):
        return path + (sorted(exc.extra_fields)[0],), "unknown key"
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        for sub in exc.exceptions:
            note = next((n for n in getattr(sub, "__notes__", []) if "attribute" in n or "index" in n), "")
            attr = getattr(note, "name", None) or _attribute_from_note(note)
            return _first_error(sub, path + ((attr,) if attr else ()))
    if isinstance(exc, _InvalidValue):
        return path + (exc.key,), str(exc)
    if isinstance(exc, AttributeError) and exc.name == "keys":  # cattrs read a table's keys from a non-table
        return path, f"expected a table, got {_TOML_NAMES.get(type(exc.obj), type(exc.obj).__name__)}"
    if isinstance(exc, KeyError):
        key = str(exc.args[0])
        return (path if path[-1:] == (key,) else path + (key,)), "missing required value"
    return path, str(exc)


_TOML_NAMES = {str: "a string", int: "a number", float: "a number", bool: "a boolean", list: "an array"}


def _attribute_from_note(note: str) -> str | None:
    # cattrs notes read "Structuring class Config @ attribute port" or "... @ index 0".
    for marker in ("@ attribute ", "@ index "):
        if marker in note:
            return note.split(marker, 1)[1].strip()
    return None


def load_config(
    path: Path | None,
    environ: Mapping[str, str] | None = None,
    dotenv_path: Path | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Build the effective settings, or raise ConfigError with one line naming the key.

    `flags` are command-line settings (`{"port": 3005}`); they win over everything else.
    """
    from dotenv import dotenv_values  # handles quoting, `export`, comments the way users expect

    process_env = os.environ if environ is None else environ
    dotenv_file = dotenv_path if dotenv_path is not None else Path.cwd() / ".env"
    from_dotenv: dict[str, str] = {}
    if dotenv_file.is_file():
        from_dotenv = {k: v for k, v in dotenv_values(dotenv_file).items() if v is not None}
    env = {**from_dotenv, **process_env}
    dotenv_names = frozenset(name for name in from_dotenv if name not in process_env)

    file_tree = _read_toml(path) if path is not None else {}
    _extra_provider_keys_from_env(file_tree, env)
    env_tree, sources = _env_overrides(env, dotenv_names)
    flag_tree = {key: value for key, value in (flags or {}).items() if value is not None}
    sources.update({key: f"--{key}" for key in flag_tree})
    file_label = str(path) if path is not None else "defaults"
    effective = _structure(_merge(_merge(_merge(_default_tree(), file_tree), env_tree), flag_tree), sources, file_label)
    # A value in the file that the environment overrides is still wrong: check the file's values
    # winning over the rest too (the rest fills what the file leaves out, e.g. REDIS_URL).
    _structure(_merge(_merge(_merge(_default_tree(), env_tree), flag_tree), file_tree), {}, file_label)
    return effective


def _structure(tree: dict[str, Any], sources: Mapping[str, str], file_label: str) -> Config:
    try:
        return _CONVERTER.structure(tree, Config)
    except Exception as exc:  # cattrs raises groups of many kinds; reduce them to one line
        key_path, reason = _first_error(exc)
        dotted = ".".join(key_path) or "(top level)"
        source = sources.get(dotted, file_label)
        raise ConfigError(f"{dotted}: {reason} (from {source})") from None


def redacted(config: Config) -> dict[str, Any]:
    """The effective settings as a tree, secrets replaced, for --check-config."""

    def scrub(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                key: ("<set>" if value else "<not set>") if key in SECRET_KEYS else scrub(value)
                for key, value in node.items()
            }
        if isinstance(node, list):
            return [scrub(item) for item in node]
        return node

    return scrub(_CONVERTER.unstructure(config))


def secrets(config: Config) -> tuple[str, ...]:
    """Every secret value in the settings, for the log redaction filter."""
    provider_keys = tuple(key for provider in config.providers for key in provider.keys)
    redis_password = urllib.parse.urlsplit(config.redis_url).password if config.redis_url else None
    redis_passwords = tuple(password for password in (redis_password, config.redis_sentinel_password) if password)
    named_client_keys = tuple(key for client in config.clients for key in client.api_keys)
    return provider_keys + config.client_api_keys + named_client_keys + config.operator_api_keys + redis_passwords
