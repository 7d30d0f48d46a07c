"""The settings as records (attrs): every key, its default and its own check. Built by `load.py`;
checks across keys are `checks.py`'s."""

from collections.abc import Iterable
from typing import NewType

import attrs
from attrs import field, frozen

from ..logs import FORMATS
from ..plans import PLANS
from .checks import check_settings
from .derived import key_digest
from .validators import (
    between,
    distinct_windows,
    http_url,
    known_log_level,
    model_ids,
    no_braces,
    normalize_level,
    one_of,
    parsable_redis_url,
    port_number,
    positive,
    window_seconds,
)


CONTINUATIONS = ("prefill-vllm", "prefix", "restart", "off")  # how a provider finishes a broken stream


# Model ids in order of preference; a setting may give one id (a string) or a list.
Candidates = NewType("Candidates", tuple[str, ...])


def candidates(value: str | Iterable[str]) -> Candidates:
    """A model setting as candidates in order of preference: one id, or a list of ids."""
    return Candidates((value,) if isinstance(value, str) else tuple(value))


def _optional_candidates(value: str | Iterable[str] | None) -> Candidates | None:
    return None if value is None else candidates(value)


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


@frozen(kw_only=True)
class QuotaWindow:
    """A quota window of any length: at most `limit` requests or tokens per `seconds`, counted
    as the provider meters it: "rolling" (what the last `seconds` booked, as Chutes's plans),
    "bucket" (refills continuously, as Cerebras's per-minute limits) or "fixed" (empties at
    each boundary, multiples of `seconds` since the Unix epoch, as a daily quota at UTC midnight)."""

    kind: str = field(validator=one_of(*WINDOW_KINDS))
    seconds: int = field(validator=window_seconds)
    limit: int = field(validator=positive)
    metering: str = field(default="rolling", validator=one_of(*WINDOW_METERINGS))

    @property
    def name(self) -> str:
        """Its name in the ledger, status and metrics, e.g. `requests_4h`, `tokens_30d_fixed`:
        one per kind, length and metering, so the names stay as few as the settings."""
        length = next(f"{self.seconds // size}{unit}" for unit, size in _UNITS if self.seconds % size == 0)
        suffix = "" if self.metering == "rolling" else f"_{self.metering}"
        return f"{self.kind}_{length}{suffix}"


@frozen
class PerModel:
    """Settings a provider may have per model: quota limits, completion cap, context window.

    On a provider, None means "none"; on a route's provider, "the provider's value".
    """

    requests_per_minute: int | None = field(default=None, validator=positive)
    # Every token of a request: its whole prompt and completion (Cerebras's total bucket).
    tokens_per_minute: int | None = field(default=None, validator=positive)
    # Prompt tokens the provider's prompt cache did not hold (Cerebras's uncached bucket).
    uncached_tokens_per_minute: int | None = field(default=None, validator=positive)
    requests_per_day: int | None = field(default=None, validator=positive)
    tokens_per_day: int | None = field(default=None, validator=positive)
    # Windows of other lengths (4 hours, 30 days, ...), as the provider meters each one.
    windows: tuple[QuotaWindow, ...] | None = field(default=None, validator=distinct_windows)
    # Cerebras books max_completion_tokens against tokens/minute before running a request, so
    # a cap on what is sent saves most of the quota (absent in the request = the cap is sent).
    max_completion_tokens_cap: int | None = field(default=None, validator=positive)
    # Requests whose estimated prompt plus completion budget exceed this skip the provider.
    context_window: int | None = field(default=None, validator=positive)
    # A plan preset (plans.PLANS) gives the starting figures of the limits not set above, until
    # the provider's x-ratelimit-limit-* headers state its own; set limits stay ceilings.
    plan: str | None = field(default=None, validator=attrs.validators.optional(one_of(*PLANS)))


@frozen(kw_only=True)
class ProviderConfig(PerModel):
    """One provider: where it is, its keys, the models it may serve, and how it is spoken to."""

    name: str
    base_url: str = field(validator=http_url)
    # Candidates in order of preference: the first one the provider's `GET /models` lists serves.
    model: Candidates = field(converter=candidates, validator=model_ids)
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
    output_tokens_per_second: float = field(default=100.0, validator=between(0.1, 100_000))
    time_to_first_token_ms: int = field(default=1_000, validator=between(0, 600_000))
    # The provider's prompt cache, as admission predicts it: how long a prefix it saw stays
    # cached (0 = no prediction: every prompt token is booked as uncached), the most it may
    # miss of a remembered prefix (its cache works in blocks), and how many prefixes each
    # key's memory holds (the oldest leave first).
    prompt_cache_seconds: float = field(default=0.0, validator=between(0, 86_400))
    prompt_cache_block_tokens: int = field(default=600, validator=between(0, 100_000))
    prompt_cache_entries: int = field(default=4096, validator=between(1, 1_000_000))
    # How this provider finishes an answer another provider broke off mid-stream: given the
    # partial answer as a final assistant message it continues it ("prefill-vllm": vLLM/SGLang's
    # continue_final_message; "prefix": DeepSeek/Mistral's prefix flag), it answers again and
    # only what extends the sent text passes ("restart"), or it does not ("off").
    continuation: str = field(default="restart", validator=one_of(*CONTINUATIONS))

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
    model: Candidates | None = field(default=None, converter=_optional_candidates, validator=model_ids)
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
    context_window: int | None = field(default=None, validator=positive)
    max_output_tokens: int | None = field(default=None, validator=positive)


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
    """Every setting, frozen. Built by `load.load_config`; building one directly checks each key
    and the keys together too (InvalidValue, InvalidKey), so a Config that exists is valid."""

    host: str = "127.0.0.1"
    port: int = field(default=3000, validator=port_number)
    log_level: str = field(default="INFO", converter=normalize_level, validator=known_log_level)
    # "text" lines for people, "json" lines for log collectors.
    log_format: str = field(default="text", validator=one_of(*FORMATS))
    proxy_model_name: str = "qwen-3-coder"
    # Other model names clients may ask for, served as proxy_model_name: exact names or globs
    # such as "claude-*" (Claude Code asks for its own model names unless told otherwise).
    model_aliases: tuple[str, ...] = ()
    # The one route's context window and output limit as the model lists give them (a
    # [[models]] route has its own `context_window` and `max_output_tokens`); unset: derived
    # from the providers' `context_window` and `max_completion_tokens_cap`.
    model_context_window: int | None = field(default=None, validator=positive)
    model_max_output_tokens: int | None = field(default=None, validator=positive)
    request_timeout_ms: int = field(default=30_000, validator=positive)
    # request_timeout_ms bounds each wait for bytes; a provider that trickles bytes passes it.
    # These bound the whole: from sending to the status line and a stream's first event (a
    # provider that misses it is failed over), to a non-streamed answer's last byte, and the
    # time between two stream events while bytes that complete none arrive.
    first_event_timeout_ms: int = field(default=60_000, validator=positive)
    answer_timeout_ms: int = field(default=600_000, validator=positive)
    stream_idle_timeout_ms: int = field(default=60_000, validator=positive)
    # How many times one stream may be finished by another provider after its own broke off
    # with content already sent (0: never; the stream ends with the door's error event).
    max_continuations: int = field(default=2, validator=between(0, 10))
    cooldown_period_ms: int = field(default=300_000, validator=positive)
    # Backoff after a "busy right now" refusal (Cerebras queue_exceeded, Chutes at capacity or
    # without instances) that names no time of its own: not a quota matter, so short.
    capacity_backoff_ms: int = field(default=5_000, validator=positive)
    # Cool down for the time a 429 names (Retry-After, reset headers); false restores the
    # original fixed cooldown_period_ms after every 429.
    honour_retry_after: bool = True
    # The prober's `GET /models` per provider: every this many milliseconds, and this many
    # failures in a row mark a provider down (skipped while another can serve).
    health_check_interval_ms: int = field(default=60_000, validator=positive)
    health_check_failures: int = field(default=3, validator=positive)
    # Where the quota ledger is saved so a restart remembers today's spending: "auto" is
    # $XDG_STATE_HOME/trioproxy/state.json (~/.local/state/...), "" turns saving off.
    state_file: str = "auto"
    state_save_interval_ms: int = field(default=5_000, validator=positive)
    max_body_bytes: int = field(default=10 * 1024 * 1024, validator=positive)
    # Bounds on what a provider sends: a successful non-streamed answer (past it the next
    # provider is tried, then a 502) and one event of a stream (past it the stream fails).
    max_answer_bytes: int = field(default=32 * 1024 * 1024, validator=positive)
    max_stream_event_bytes: int = field(default=4 * 1024 * 1024, validator=positive)
    # A client that leaves bytes we sent unread (unacknowledged) this long has stopped reading:
    # its connection ends and with it the provider's stream (needs a restart, like host and port).
    client_stall_timeout_ms: int = field(default=60_000, validator=positive)
    # Tools only OpenAI's own service runs (web_search, file_search, ...) in a Responses request:
    # "drop" leaves them out (named in the x-trioproxy-dropped-tools header), "refuse" answers 400.
    hosted_tools: str = field(default="drop", validator=one_of("drop", "refuse"))
    # On SIGTERM/SIGINT, requests and streams in flight get this long to finish; streams still
    # running then end with an SSE error event and [DONE].
    shutdown_grace_ms: int = field(default=30_000, validator=positive)
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
    max_wait_ms: int = field(default=10_000, validator=between(0, 300_000))
    # Further OpenAI-compatible providers, added by configuration alone ([[extra_providers]]).
    extra_providers: tuple[ProviderConfig, ...] = ()
    # Order of preference by name; providers it does not name follow, in file order.
    provider_order: tuple[str, ...] = ("cerebras", "chutes")
    # Several processes and machines (docs/scaling.md): "memory" keeps quota in this process (saved to
    # state_file); "redis" shares it through redis_url between every worker and replica.
    quota_backend: str = field(default="memory", validator=one_of("memory", "redis"))
    redis_url: str = field(default="", validator=parsable_redis_url, repr=False)  # may hold a password
    redis_timeout_ms: int = field(default=250, validator=positive)  # no request waits longer on Redis
    # While Redis is unreachable: "local" serves on this process's own buckets at limit / replicas;
    # "refuse" treats every provider with limits as out of quota until Redis is back.
    redis_outage: str = field(default="local", validator=one_of("local", "refuse"))
    replicas: int = field(default=1, validator=positive)  # processes sharing the quota, for "local"
    # rediss:// only: the PEM file of a private CA that signed the server's certificate (else the
    # system's CAs), and a client certificate and key for servers that ask for one.
    redis_tls_ca: str = ""
    redis_tls_cert: str = ""
    redis_tls_key: str = ""
    # redis+sentinel:// only: the sentinels' own password (requirepass); the URL's is the data nodes'.
    redis_sentinel_password: str = field(default="", repr=False)
    redis_key_prefix: str = field(default="trioproxy:", validator=no_braces)
    # An unsettled reservation (its process died) gives back all but its prompt after this long.
    redis_lease_ttl_ms: int = field(default=120_000, validator=positive)
    # Far from the limits, each process admits from a share booked ahead (no round trip per
    # request); false books every request in Redis before it is sent.
    redis_shares: bool = True
    workers: int = field(default=1, validator=positive)  # processes serving the one port
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
        check_settings(self)

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
