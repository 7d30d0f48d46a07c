"""Counters and histograms of what the proxy did, rendered in Prometheus's text format.

Small enough to keep in-house: a handful of series, per-proxy state (no global registry),
and no threads.
"""

import bisect
import math
from collections import Counter
from collections.abc import Iterable

from attrs import define, field

# Seconds. Latency of chat answers spans milliseconds (Cerebras) to minutes (long streams).
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# The proxy's own time: well under a millisecond when all is well.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)


@define
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(init=False)
    total: float = 0.0
    count: int = 0

    def __attrs_post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def render(self, name: str, labels: str) -> Iterable[str]:
        running = 0
        joiner = "," if labels else ""
        for bound, count in zip((*self.buckets, math.inf), self.counts):
            running += count
            le = "+Inf" if bound == math.inf else repr(bound)
            yield f'{name}_bucket{{{labels}{joiner}le="{le}"}} {running}'
        yield f"{name}_sum{{{labels}}} {self.total:.6f}"
        yield f"{name}_count{{{labels}}} {self.count}"


@define
class Metrics:
    requests: Counter[tuple[str, str, int]] = field(factory=Counter)  # (provider, stream, status)
    route_requests: Counter[tuple[str, str, int]] = field(factory=Counter)  # (route, provider, status)
    route_tokens: Counter[tuple[str, str, str]] = field(factory=Counter)  # (route, provider, prompt|completion)
    tokens: Counter[tuple[str, str]] = field(factory=Counter)  # (provider, prompt|completion)
    reroutes: Counter[str] = field(factory=Counter)  # "fallback: rpm", "failover: 503", ...
    latency: dict[str, Histogram] = field(factory=dict)  # per provider
    first_byte: dict[str, Histogram] = field(factory=dict)  # streams, per provider
    overhead: Histogram = field(factory=lambda: Histogram(OVERHEAD_BUCKETS))

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
        self.requests[(provider, "yes" if stream else "no", status)] += 1
        self.route_requests[(route, provider, status)] += 1
        self.route_tokens[(route, provider, "prompt")] += prompt_tokens or 0
        self.route_tokens[(route, provider, "completion")] += completion_tokens or 0
        self.tokens[(provider, "prompt")] += prompt_tokens or 0
        self.tokens[(provider, "completion")] += completion_tokens or 0
        if reason.startswith(("fallback:", "failover:")):
            self.reroutes[reason] += 1
        self.latency.setdefault(provider, Histogram(LATENCY_BUCKETS)).observe(latency)
        if first_byte is not None:
            self.first_byte.setdefault(provider, Histogram(LATENCY_BUCKETS)).observe(first_byte)
        if overhead is not None:
            self.overhead.observe(overhead)

    def render(self, gauges: Iterable[tuple[str, str, str, float]]) -> str:
        """The exposition text; `gauges` are (name, help, labels, value) of live quota state."""
        lines: list[str] = []

        def header(name: str, kind: str, text: str) -> None:
            lines.extend((f"# HELP {name} {text}", f"# TYPE {name} {kind}"))

        header("trioproxy_requests_total", "counter", "Chat requests by provider, stream and status.")
        for (provider, stream, status), count in sorted(self.requests.items()):
            lines.append(f'trioproxy_requests_total{{provider="{provider}",stream="{stream}",status="{status}"}} {count}')
        header("trioproxy_route_requests_total", "counter", "Requests by model route (the client's model), provider and status.")
        for (route, provider, status), count in sorted(self.route_requests.items()):
            lines.append(f'trioproxy_route_requests_total{{route="{route}",provider="{provider}",status="{status}"}} {count}')
        header("trioproxy_tokens_total", "counter", "Tokens by provider and kind, from usage.")
        for (provider, kind), count in sorted(self.tokens.items()):
            lines.append(f'trioproxy_tokens_total{{provider="{provider}",kind="{kind}"}} {count}')
        header("trioproxy_reroutes_total", "counter", "Requests served by another provider than the first, by reason.")
        for reason, count in sorted(self.reroutes.items()):
            lines.append(f'trioproxy_reroutes_total{{reason="{reason}"}} {count}')
        header("trioproxy_latency_seconds", "histogram", "Time from request to last byte, by provider.")
        for provider, histogram in sorted(self.latency.items()):
            lines.extend(histogram.render("trioproxy_latency_seconds", f'provider="{provider}"'))
        header("trioproxy_first_byte_seconds", "histogram", "Time to the first streamed byte, by provider.")
        for provider, histogram in sorted(self.first_byte.items()):
            lines.extend(histogram.render("trioproxy_first_byte_seconds", f'provider="{provider}"'))
        header("trioproxy_overhead_seconds", "histogram", "Time the proxy itself added to a request.")
        lines.extend(self.overhead.render("trioproxy_overhead_seconds", ""))
        seen: set[str] = set()
        for name, text, labels, value in gauges:
            if name not in seen:
                header(name, "gauge", text)
                seen.add(name)
            lines.append(f"{name}{{{labels}}} {value:g}")
        return "\n".join(lines) + "\n"
