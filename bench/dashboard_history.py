#!/usr/bin/env python3
"""What the dashboard's history costs: per request (observe) and per poll (snapshot plus JSON).

    python bench/dashboard_history.py            # medians of 5 runs

`observe` runs once for every request in `finish_request`; compare it with trioproxy's own
overhead per request (about 650 us at concurrency 1, docs/performance.md). `snapshot` runs
once per poll of an open dashboard (once a second), on a full history: 100 recent requests,
60 minutes of two providers with reroutes, errors and latency histograms.
"""

import statistics
import timeit

from trioproxy.jsoncodec import dump_json
from trioproxy.routing.request import RouteRecord
from trioproxy.server.served import ServedRequest
from trioproxy.server.history import TrafficHistory

RUNS = 5
OBSERVES = 100_000
SNAPSHOTS = 500


class SteppingClock:
    """Wall time that moves 0.04 s a call: 100,000 requests spread over more than an hour."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        self.now += 0.04
        return self.now


def finished(provider: str, reason: str, status: int) -> tuple[ServedRequest, str]:
    route = RouteRecord(provider=provider, account=provider, reason=reason, prompt_tokens=812, completion_tokens=140)
    return ServedRequest("3f2a9c1e0b7d4e55", "chat", route, stream=True, status=status, started=0.0), reason


def main() -> None:
    records = [finished("cerebras", "preferred", 200), finished("chutes", "fallback: rpm", 200),
               finished("chutes", "failover: 503", 502)]
    per_observe, per_snapshot = [], []
    size = 0
    for _ in range(RUNS):
        history = TrafficHistory(SteppingClock())
        calls = iter(range(OBSERVES))

        def observe() -> None:
            history.observe(*records[next(calls) % 3], 0.412, 0.031)

        per_observe.append(timeit.timeit(observe, number=OBSERVES) / OBSERVES)
        size = len(dump_json(history.snapshot()))
        per_snapshot.append(timeit.timeit(lambda: dump_json(history.snapshot()), number=SNAPSHOTS) / SNAPSHOTS)
    print(f"observe (per request):          {statistics.median(per_observe) * 1e6:7.2f} us  "
          f"(runs: {', '.join(f'{v * 1e6:.2f}' for v in per_observe)})")
    print(f"snapshot + JSON (per poll):     {statistics.median(per_snapshot) * 1e3:7.3f} ms  ({size:,} bytes)")


if __name__ == "__main__":
    main()
