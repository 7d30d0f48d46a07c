"""Smoke test of bench/quota_sim.py: a 3-simulated-minute run of the three configurations.

It checks that the figures are computed and sane, not the targets (3 minutes are too short
for a sliding minute to reach them): no client-visible errors, every utilisation in (0, 1],
and the accounting identities between client, proxy and emulated providers.
"""

from collections import Counter

import attrs
import pytest

from bench import quota_sim

pytestmark = pytest.mark.xdist_group("quota_sim")  # on one worker, so one simulation serves them all

# Still far over Cerebras's quota (about 25,000 tokens a second asked of 2,750).
WORKLOAD = quota_sim.Workload(minutes=3, seed=7, arrivals_per_second=1.0)


@pytest.fixture(scope="session")  # a module's fixture is set up again when the worker runs other tests between
def results() -> list[quota_sim.RunResult]:
    return quota_sim.simulate(WORKLOAD)


def test_workload_is_seeded_and_over_quota() -> None:
    workload = WORKLOAD
    first, again = quota_sim.plan(workload), quota_sim.plan(workload)
    assert first == again and 120 < len(first) < 250  # Poisson, 1/s for 180 s
    assert {p.size for p in first} == {"small", "medium", "large"}
    assert any(p.stream for p in first) and any(not p.stream for p in first)
    assert any(p.budget == ("max_completion_tokens", 32_768) for p in first)
    assert any(p.budget is None for p in first)
    assert 0 < workload.tokens_left < quota_sim.REAL_TPM * (workload.boundary / 60 + 1)
    body, prompt = quota_sim.request_body(next(p for p in first if p.size == "large"))
    assert prompt >= 20_000 and len(body) >= 4 * 20_000


def test_no_client_errors_and_counts_add_up(results: list[quota_sim.RunResult]) -> None:
    assert [r.setup.key for r in results] == ["P", "A", "B"]
    for r in results:
        assert r.client_errors == 0, r.errors
        assert r.consistency() == []
        assert r.ok == r.requests > 0
        assert r.cerebras_served > 0 and r.chutes_served > 0
        assert r.cerebras_received >= r.cerebras_served + len(r.refusals)
        assert r.cerebras_tokens + r.chutes_tokens == r.client_tokens
        assert r.day1_tokens + r.day2_tokens == r.cerebras_tokens


def test_utilisation_is_a_share(results: list[quota_sim.RunResult]) -> None:
    for r in results:
        shares = r.shares()
        # Per-minute limits: by construction no more than the buckets allowed.
        assert 0 < shares["rpm"] <= 1.0 and 0 < shares["tpm"] <= 1.0
        assert 0 < shares["tpd day 1"] <= 1.05  # Cerebras checks only prompts against the day
        parts = r.parts()
        assert [p.name for p in parts] == ["to the day boundary", "after the boundary"]
        assert sum(p.minutes for p in parts) == pytest.approx(3.0)
        for part in parts:
            for limit in ("rpm", "tpm"):
                # 0 is possible: B's fixed 300 s cooldown can outlast the whole short run.
                assert 0 <= part.share(limit) <= 1.0, (r.setup.key, part.name, limit)
        assert 0 < r.binding() <= 1.05
        assert 0 <= r.share_429 <= 1.0


def test_best_use_recovers_after_the_day_boundary(results: list[quota_sim.RunResult]) -> None:
    """A cools down only as long as Retry-After says, so Cerebras serves again after the
    boundary, and serves while it has quota before it."""
    best = results[1]
    before, after = best.parts()
    assert before.share("rpm") > 0 and after.share("rpm") > 0
    assert best.day2_tokens > 0


def test_best_use_beats_the_original(results: list[quota_sim.RunResult]) -> None:
    _, best, original = results
    assert best.binding() > original.binding()
    assert best.cerebras_served > original.cerebras_served


def test_the_clock_moved_only_on_timers(results: list[quota_sim.RunResult]) -> None:
    """Chutes answers at once: simulated latency there means I/O moved the clock. On a
    heavily loaded machine the kernel may deliver a loopback write late (seen: 2 answers in
    3,000 with 2 CPUs and 3 simulations at once), so a rare short jump is tolerated."""
    for r in results:
        # Chutes's answers take their first token and generation time: only more is a jump.
        moved = [latency for latency in r.chutes_latencies if latency > 0]
        assert r.chutes_latencies and len(moved) <= max(2, len(r.chutes_latencies) // 100)
        assert max(r.chutes_latencies) < 5.0
        assert not any("timeout" in failure for failure in r.failures)


def test_report_prints_the_table_and_verdicts(results: list[quota_sim.RunResult]) -> None:
    text, passed = quota_sim.report(results)
    assert "P: patience" in text and "A: trioproxy" in text and "B: original" in text
    for needle in ("rpm  requests", "tpm  tokens", "tpd  day 1", "Tokens served: Chutes",
                   "Cerebras 429s", "Client requests / errors", "binding limit",
                   "Request time: mean / p50 / p95", "Total agent time"):
        assert needle in text
    verdicts = [line.split()[0] for line in text.splitlines() if line.startswith("  PASS")
                or line.startswith("  FAIL")]
    assert len(verdicts) == 13  # P: 4 + its mean request time; A: 4; B: 4
    assert passed == all(v == "PASS" for v in verdicts[:9])


def test_request_times_are_measured_and_patience_waits(results: list[quota_sim.RunResult]) -> None:
    """Every answered request has its time; Chutes's answers take seconds (first token and
    50 tokens/s), so no request is instant; only the patient setup holds requests."""
    patient, without, original = results
    for r in results:
        assert len(r.request_times) == r.ok
        assert 0 < r.request_time("p50") <= r.request_time("p95")
    assert patient.waits and all(0 < w <= patient.setup.max_wait_ms / 1000 + 0.01 for w in patient.waits)
    assert not without.waits and not original.waits


def test_best_mean_times_give_cerebras_answers_to_the_longest_or_to_any() -> None:
    """Chutes 1 s + 10 tokens/s, Cerebras instant at 1,000 tokens/s; answers 100, 10, 0 and 0
    tokens: Chutes alone takes 11 + 2 + 1 + 1 = 15 s; one Cerebras answer saves 10.9 s given
    to the 100-token one, and a quarter of all four savings (14.89 s) on average otherwise."""
    speeds = quota_sim.Speeds(cerebras_tokens_per_second=1000, cerebras_first_token=0,
                              chutes_tokens_per_second=10, chutes_first_token=1)
    completions = [0, 100, 0, 10]
    known, blind = quota_sim.best_mean_times(completions, 1, speeds)
    assert known == pytest.approx((15 - 10.9) / 4)
    assert blind == pytest.approx((15 - 14.89 / 4) / 4)
    assert quota_sim.best_mean_times(completions, 0, speeds) == pytest.approx((15 / 4, 15 / 4))
    everything = (0.1 + 0.01) / 4  # all on Cerebras, however many slots beyond the four
    assert quota_sim.best_mean_times(completions, 9, speeds) == pytest.approx((everything, everything))


def test_report_says_what_cut_any_policy_could_reach(results: list[quota_sim.RunResult]) -> None:
    """Beside P's patience target: the cut with lengths known and unknown, from the run's figures."""
    text, _ = quota_sim.report(results)
    completions = [completion for _, completion in results[0].answers.values()]
    known, blind = quota_sim.best_mean_times(completions, results[1].cerebras_served, quota_sim.Speeds())
    mean = results[1].request_time("mean")
    assert (f"with {results[1].cerebras_served} Cerebras answers as in A: {100 * (1 - known / mean):.1f} % knowing "
            f"every answer's length in advance, {100 * (1 - blind / mean):.1f} % not knowing them (on average)") in text
    assert known < blind


CLIENTS_WORKLOAD = quota_sim.Workload(minutes=3, seed=7, arrivals_per_second=1.0, clients=quota_sim.CLIENTS)


@pytest.fixture(scope="session")
def client_results() -> list[quota_sim.RunResult]:
    return quota_sim.simulate(CLIENTS_WORKLOAD, quota_sim.CLIENT_SETUPS)


def test_clients_send_the_same_requests_with_the_heavy_one_sending_most() -> None:
    plain = quota_sim.plan(WORKLOAD)
    several = quota_sim.plan(CLIENTS_WORKLOAD)
    assert [attrs.evolve(p, client="") for p in several] == plain  # the requests of a run without clients
    counts = Counter(p.client for p in several)
    assert set(counts) == {name for name, _ in quota_sim.CLIENTS}
    assert counts["heavy"] > 4 * max(counts[name] for name in counts if name != "heavy")


def test_each_client_is_counted_and_the_fair_share_evens_cerebras_out(client_results: list[quota_sim.RunResult]) -> None:
    fair, first_come = client_results
    for result in client_results:
        assert result.client_errors == 0 and not result.consistency()
        assert sum(len(times) for times in result.client_times.values()) == result.ok
        # Counted from the moment every client is active: the heavy one's first minute alone is not.
        assert 0 < sum(result.cerebras_by_client().values()) < result.cerebras_tokens
    heavy_share = {r.setup.key: r.cerebras_by_client()["heavy"] / sum(r.cerebras_by_client().values())
                   for r in client_results}
    assert heavy_share["U"] > 0.5  # first come: the heavy client takes most
    assert heavy_share["F"] < heavy_share["U"] and fair.jain() > first_come.jain()
    text, _ = quota_sim.report(client_results)
    assert "Client agent-1: Cerebras share (all active) / mean time" in text and "Jain index" in text
