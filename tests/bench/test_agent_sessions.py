"""Smoke test of the quota simulation's coding-agent workload (bench/agent_sessions.py): a short
run of both columns. It checks the figures are computed and the accounting adds up, and that
cache-aware admission serves more on Cerebras than booking every prompt token as uncached;
the targets are the full run's (README)."""

import json

import pytest

from bench import agent_sessions

pytestmark = pytest.mark.xdist_group("agent_sessions")  # on one worker, so one simulation serves them all

WORKLOAD = agent_sessions.AgentWorkload(minutes=2, seed=3, concurrent=4)


@pytest.fixture(scope="session")  # a module's fixture is set up again when the worker runs other tests between
def results() -> list[agent_sessions.AgentResult]:
    return agent_sessions.simulate(WORKLOAD)


def test_sessions_are_seeded_and_each_turn_extends_the_last() -> None:
    first, again = agent_sessions.sessions(WORKLOAD), agent_sessions.sessions(WORKLOAD)
    assert first == again
    assert all(10_000 <= s.prefix <= 20_000 and 10 <= len(s.turns) <= 60 for s in first)
    conversation = agent_sessions.Conversation.start(first[0])
    one = conversation.body(0)
    conversation.answered(0)
    two = conversation.body(1)
    first_turn, second_turn = json.loads(one), json.loads(two)
    assert second_turn["messages"][:2] == first_turn["messages"]  # the earlier messages, unchanged
    assert [m["role"] for m in second_turn["messages"]] == ["system", "user", "assistant", "user"]
    assert (first_turn["stream"], second_turn["stream"]) == (False, True)


def test_both_columns_count_up_without_client_errors(results: list[agent_sessions.AgentResult]) -> None:
    assert [r.column.key for r in results] == ["C", "N"]
    for r in results:
        assert not r.errors and r.ok == r.requests == r.cerebras_served + r.chutes_served
        assert r.cerebras_received >= r.cerebras_served + len(r.refusals)
        assert 0 < r.utilisation(r.uncached(), agent_sessions.UNCACHED_TPM) <= 1.05


def test_cache_aware_admission_serves_more_on_cerebras(results: list[agent_sessions.AgentResult]) -> None:
    aware, plain = results
    assert aware.per_minute() > 1.5 * plain.per_minute()
    assert aware.cache_share() > 0.8
    assert aware.share_429() <= 0.01


def test_report_prints_the_table_and_verdicts(results: list[agent_sessions.AgentResult]) -> None:
    text, _ = agent_sessions.report(results, agent_sessions.Deployment())
    assert "| Cerebras requests served / min |" in text and "uncached-bucket utilisation" in text
    assert text.count("met ") + text.count("MISSED ") == 4
