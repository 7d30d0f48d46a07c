"""What the proxy did, as Prometheus metrics: prometheus_client writes the exposition format.

Each proxy has a registry of its own (never the library's global default one), so several
proxies in one process, as in the tests, count separately. Quota and provider state are not
counted but read when scraped, through a collector that asks the proxy for them.
"""

from collections.abc import Callable, Iterable

from attrs import frozen
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from prometheus_client.metrics_core import Metric

# Seconds. Latency of chat answers spans milliseconds (Cerebras) to minutes (long streams).
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# The proxy's own time: well under a millisecond when all is well.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)
CONTENT_TYPE = CONTENT_TYPE_LATEST
_CLIENT_TOKEN_KINDS = ("prompt", "cached", "completion")


@frozen
class _ServedSeries:
    """The series one request adds to, for one route, provider, stream flag and status."""

    requests: Counter
    route_requests: Counter
    tokens: tuple[Counter, Counter, Counter, Counter]  # the provider's prompt and completion, then the route's
    latency: Histogram


class _LiveState(Collector):
    """Families computed at scrape time (quota remaining, cooldowns, provider up)."""

    def __init__(self, families: Callable[[], Iterable[Metric]]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families()


class Metrics:
    """Counters and histograms of one proxy, plus its live state, in one registry."""

    def __init__(self, live: Callable[[], Iterable[Metric]] = tuple) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "trioproxy_requests", "Chat requests by provider, stream and status.",
            ("provider", "stream", "status"), registry=self.registry,
        )
        self._tokens = Counter(
            "trioproxy_tokens", "Tokens by provider and kind, from usage.", ("provider", "kind"), registry=self.registry
        )
        self._route_requests = Counter(
            "trioproxy_route_requests", "Requests by model route (the client's model), provider and status.",
            ("route", "provider", "status"), registry=self.registry,
        )
        self._route_tokens = Counter(
            "trioproxy_route_tokens", "Tokens by model route, provider and kind, from usage.",
            ("route", "provider", "kind"), registry=self.registry,
        )
        self._reroutes = Counter(
            "trioproxy_reroutes", "Requests served by another provider than the first, by reason.",
            ("reason",), registry=self.registry,
        )
        self._continuations = Counter(
            "trioproxy_continuations", "Streams another provider finished after this one broke off, by why.",
            ("from_provider", "reason"), registry=self.registry,
        )
        self._latency = Histogram(
            "trioproxy_latency_seconds", "Time from request to last byte, by provider.",
            ("provider",), buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self._first_byte = Histogram(
            "trioproxy_first_byte_seconds", "Time to the first streamed byte, by provider.",
            ("provider",), buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self._unknown_paths = Counter(
            "trioproxy_unknown_path_requests", "Requests for paths the proxy does not serve, by method and path family "
            "(the first segment; a bounded set, the rest counted as `other`).",
            ("method", "path"), registry=self.registry,
        )
        self._overhead = Histogram(
            "trioproxy_overhead_seconds", "Time the proxy itself added to a request.",
            buckets=OVERHEAD_BUCKETS, registry=self.registry,
        )
        # By client: a configured client's name (or anonymous#N), so the labels stay bounded.
        self._client_requests = Counter(
            "trioproxy_client_requests", "Requests by client, model route and the provider that served them.",
            ("client", "route", "provider"), registry=self.registry,
        )
        self._client_tokens = Counter(
            "trioproxy_client_tokens", "Tokens by client, model route, provider and kind (prompt, cached, completion).",
            ("client", "route", "provider", "kind"), registry=self.registry,
        )
        self._client_failovers = Counter(
            "trioproxy_client_failovers", "A client's requests that a provider failed and the next one was tried.",
            ("client", "route", "provider"), registry=self.registry,
        )
        self._client_over_budget = Counter(
            "trioproxy_client_over_budget", "Requests refused with 429 because the client had spent one of its budgets.",
            ("client", "route"), registry=self.registry,
        )
        self.registry.register(_LiveState(live))
        # The labelled series each request adds to, looked up once per label combination:
        # prometheus_client checks and converts the labels on every `labels()` call.
        self._served: dict[tuple[str, str, bool, int], _ServedSeries] = {}
        self._client_served: dict[tuple[str, str, str], tuple[Counter, ...]] = {}
        # Created on first use, as `labels()` would: a series appears once it has counted something.
        self._first_byte_of: dict[str, Histogram] = {}
        self._reroutes_by: dict[str, Counter] = {}

    def observe(
        self,
        route: str,
        provider: str,
        stream: bool,
        status: int,
        reason: str,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        latency: float,
        first_byte: float | None,
        overhead: float | None,
    ) -> None:
        series = self._served.get((route, provider, stream, status))
        if series is None:
            series = self._served[route, provider, stream, status] = _ServedSeries(
                requests=self._requests.labels(provider, "yes" if stream else "no", str(status)),
                route_requests=self._route_requests.labels(route, provider, str(status)),
                tokens=(self._tokens.labels(provider, "prompt"), self._tokens.labels(provider, "completion"),
                        self._route_tokens.labels(route, provider, "prompt"),
                        self._route_tokens.labels(route, provider, "completion")),
                latency=self._latency.labels(provider))
        series.requests.inc()
        series.route_requests.inc()
        provider_prompt, provider_completion, route_prompt, route_completion = series.tokens
        provider_prompt.inc(prompt_tokens or 0)
        provider_completion.inc(completion_tokens or 0)
        route_prompt.inc(prompt_tokens or 0)
        route_completion.inc(completion_tokens or 0)
        if reason.startswith(("fallback:", "failover:")):
            reroutes = self._reroutes_by.get(reason)
            if reroutes is None:
                reroutes = self._reroutes_by[reason] = self._reroutes.labels(reason)
            reroutes.inc()
        series.latency.observe(latency)
        if first_byte is not None:
            first_byte_series = self._first_byte_of.get(provider)
            if first_byte_series is None:
                first_byte_series = self._first_byte_of[provider] = self._first_byte.labels(provider)
            first_byte_series.observe(first_byte)
        if overhead is not None:
            self._overhead.observe(overhead)

    def continued(self, broke_off: str, reason: str) -> None:
        """A stream `broke_off` broke off (`reason`: connection, timeout, a status) was finished by another."""
        self._continuations.labels(broke_off, reason).inc()

    def observe_client(
        self,
        client: str,
        route: str,
        provider: str,
        failed_over: Iterable[str],
        over_budget: bool,
        prompt_tokens: int | None,
        cached_tokens: int | None,
        completion_tokens: int | None,
    ) -> None:
        for failed in failed_over:
            self._client_failovers.labels(client, route, failed).inc()
        if over_budget:
            self._client_over_budget.labels(client, route).inc()
            return
        series = self._client_served.get((client, route, provider))
        if series is None:
            series = self._client_served[client, route, provider] = (
                self._client_requests.labels(client, route, provider),
                *(self._client_tokens.labels(client, route, provider, kind) for kind in _CLIENT_TOKEN_KINDS))
        requests, *by_kind = series
        requests.inc()
        for counter, tokens in zip(by_kind, (prompt_tokens, cached_tokens, completion_tokens)):
            if tokens:
                counter.inc(tokens)

    def unknown_path(self, method: str, family: str) -> None:
        """Count a request for an unknown path; `method` and `family` come from a bounded set."""
        self._unknown_paths.labels(method, family).inc()

    def served(self, route: str, provider: str) -> dict[str, int]:
        """Successful requests and tokens of `provider` for `route` since start, for /v1/status."""
        return {
            "requests": self._value("trioproxy_route_requests_total", route=route, provider=provider, status="200"),
            "prompt_tokens": self._value("trioproxy_route_tokens_total", route=route, provider=provider, kind="prompt"),
            "completion_tokens": self._value("trioproxy_route_tokens_total", route=route, provider=provider, kind="completion"),
            # The provider's prompt cache held this many of the prompt tokens (its usage's
            # cached_tokens), over all clients.
            "cached_tokens": int(sum(
                sample.value for family in self._client_tokens.collect() for sample in family.samples
                if sample.name.endswith("_total") and sample.labels["kind"] == "cached"
                and sample.labels["route"] == route and sample.labels["provider"] == provider)),
        }

    def reroutes(self) -> dict[str, int]:
        return {
            sample.labels["reason"]: int(sample.value)
            for family in self._reroutes.collect()
            for sample in family.samples
            if sample.name.endswith("_total")
        }

    def _value(self, name: str, **labels: str) -> int:
        return int(self.registry.get_sample_value(name, labels) or 0)

    def render(self) -> bytes:
        """The exposition text (format 0.0.4)."""
        return generate_latest(self.registry)
