"""bench/quota_sim.py --trace: reading a trace in the Azure format, and replaying a small one.

The replay runs both configurations through the real proxy and emulators on Trio's mock
clock, and checks the counts add up: every row answered once, with the prompt and completion
tokens the trace gives it, and the providers' counts matching the client's.
"""

import json
import random
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bench import llm_trace, quota_sim
from trioproxy.testing import emulator

HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens"
T0 = datetime(2023, 11, 16, 18, 17, 3, 979960)


def stamp(seconds: float) -> str:
    """Azure's format: seven fractional digits."""
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S.%f") + "0"


def write(tmp_path: Path, rows: list[tuple[str, str, str]], header: str = HEADER,
          name: str = "trace.csv") -> Path:
    path = tmp_path / name
    path.write_text("\r\n".join([header, *(",".join(row) for row in rows)]), newline="")
    return path


def small_trace() -> list[tuple[float, int, int]]:
    """36 requests over two minutes: far over Cerebras's 15 requests a minute."""
    rng = random.Random(14)
    at, rows = 0.0, []
    for _ in range(36):
        rows.append((at, rng.randint(8, 30_000), rng.randint(1, 600)))
        at += rng.expovariate(0.3)
    return rows


SMALL = small_trace()


@pytest.fixture
def small_path(tmp_path: Path) -> Path:
    return write(tmp_path, [(stamp(at), str(p), str(g)) for at, p, g in SMALL])


# --------------------------------------------------------------------------- reading


def test_reads_the_azure_format(small_path: Path) -> None:
    trace = llm_trace.read_trace(small_path)
    assert [(r.prompt, r.completion) for r in trace.rows] == [(p, g) for _, p, g in SMALL]
    assert [r.line for r in trace.rows] == list(range(2, 2 + len(SMALL)))
    assert [r.at for r in trace.rows] == pytest.approx([at - SMALL[0][0] for at, _, _ in SMALL],
                                                       abs=1e-6)
    assert trace.note == ""


def test_the_shipped_trace_reads_whole() -> None:
    path = Path(__file__).resolve().parents[2] / "bench" / "traces" / "azure-llm-code-2023.csv"
    trace = llm_trace.read_trace(path)
    assert len(trace.rows) == 8819 and trace.note == ""
    assert 57 < trace.seconds / 60 < 58
    assert "CC-BY 4.0" in llm_trace.attribution(path) and "Splitwise" in llm_trace.attribution(path)


@pytest.mark.parametrize(("header", "row", "message"), [
    ("TIMESTAMP,ContextTokens", ("2023-11-16 18:00:00", "5"),
     "line 1: missing column GeneratedTokens"),
    (HEADER, ("yesterday", "5", "6"), "line 3: unparsable TIMESTAMP 'yesterday'"),
    (HEADER, ("2023-11-16 18:00:02", "-5", "6"), "line 3: negative ContextTokens -5"),
    (HEADER, ("2023-11-16 18:00:02", "5", "6.5"), "line 3: GeneratedTokens '6.5' is not a whole number"),
    (HEADER, ("2023-11-16 18:00:02", "5"), "line 3: missing GeneratedTokens"),
    (HEADER, ("2023-11-16 18:00:02+00:00", "5", "6"),
     "line 3: TIMESTAMP is a date and time with a time zone, line 2's is a date and time without"),
])
def test_malformed_rows_are_refused_naming_the_line(tmp_path: Path, header: str,
                                                     row: tuple[str, ...], message: str) -> None:
    first = ("2023-11-16 18:00:00", "5", "6")[:len(header.split(","))]
    path = write(tmp_path, [first, row], header=header)
    with pytest.raises(llm_trace.TraceError) as caught:
        llm_trace.read_trace(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_rows_going_back_in_time_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, [(stamp(0), "5", "6"), (stamp(60), "5", "6"), (stamp(30), "5", "6"),
                            (stamp(90), "5", "6")])
    with pytest.raises(llm_trace.TraceError, match=r"line 4: TIMESTAMP .* is 30\.000 s before "
                                                   r"line 3's: rows must be in time order"):
        llm_trace.read_trace(path)


def test_jitter_and_newest_first_are_sorted(tmp_path: Path) -> None:
    jittered = write(tmp_path, [(stamp(0), "1", "1"), (stamp(2), "2", "1"), (stamp(1.5), "3", "1"),
                                (stamp(3), "4", "1")], name="jitter.csv")
    trace = llm_trace.read_trace(jittered)
    assert [r.prompt for r in trace.rows] == [1, 3, 2, 4]
    assert trace.note == "1 rows up to 0.500 s out of order (interleaved logs): sorted"
    newest_first = write(tmp_path, [(stamp(9), "3", "1"), (stamp(5), "2", "1"), (stamp(0), "1", "1")],
                         name="reversed.csv")
    trace = llm_trace.read_trace(newest_first)
    assert [(r.prompt, r.at) for r in trace.rows] == [(1, 0.0), (2, 5.0), (3, 9.0)]
    assert "newest first" in trace.note


def test_empty_files_and_windows_say_so(tmp_path: Path, small_path: Path) -> None:
    with pytest.raises(llm_trace.TraceError, match="no rows after the header"):
        llm_trace.read_trace(write(tmp_path, [], name="empty.csv"))
    trace = llm_trace.read_trace(small_path)
    with pytest.raises(llm_trace.TraceError, match=r"the window \(minutes 30-31\) holds no rows; "
                                                   r"the trace spans minutes 0-"):
        llm_trace.select(trace, start_minute=30, minutes=1)


def test_window_sample_and_speed(small_path: Path) -> None:
    trace = llm_trace.read_trace(small_path)
    whole = llm_trace.select(trace)
    assert whole.rows == trace.rows and whole.seconds >= trace.seconds
    window = llm_trace.select(trace, start_minute=0.5, minutes=1)
    assert window.rows and all(0 <= r.at < 60 for r in window.rows)
    assert [r.line for r in window.rows] == [r.line for r in trace.rows if 30 <= r.at < 90]
    assert window.seconds == 60
    sample = llm_trace.select(trace, sample=0.5, seed=3)
    assert sample == llm_trace.select(trace, sample=0.5, seed=3)  # deterministic
    assert 0 < len(sample.rows) < len(trace.rows)
    assert sample != llm_trace.select(trace, sample=0.5, seed=4)
    # A window of the sample holds the same rows as a sample of the window.
    sampled_window = llm_trace.select(trace, start_minute=0.5, minutes=1, sample=0.5, seed=3)
    assert {r.line for r in sampled_window.rows} == {r.line for r in sample.rows} & {
        r.line for r in window.rows}
    fast = llm_trace.select(trace, speed=4)
    assert [r.at for r in fast.rows] == pytest.approx([r.at / 4 for r in trace.rows])
    assert fast.seconds == pytest.approx(whole.seconds / 4)


# --------------------------------------------------------------------------- requests


@pytest.mark.parametrize("prompt", [3, 7, 8, 9, 1469, 7315, 30_001])
def test_a_request_carries_the_rows_prompt_size(prompt: int) -> None:
    row = llm_trace.Row(line=2, at=0.0, prompt=prompt, completion=13)
    request = quota_sim.TraceRequest(0, row, stream=True, budget=("max_tokens", 8000))
    raw, sent = request.body()
    body = json.loads(raw)
    assert sent == emulator.prompt_tokens(body) == max(prompt, quota_sim.SMALLEST_PROMPT)
    assert body["max_tokens"] == 8000 and body["stream"] is True and body["user"] == "trace-0"


def test_rpm_ceiling_counts_what_one_bucket_allows() -> None:
    assert quota_sim.rpm_ceiling([0.0] * 40) == 15  # a burst: the full bucket, no more
    assert quota_sim.rpm_ceiling([4.0 * i for i in range(150)]) == 150  # at the refill rate
    # A burst, a 10-minute pause (the bucket refills to 15, not to 150), another burst.
    assert quota_sim.rpm_ceiling([0.0] * 20 + [600.0] * 20) == 30


# --------------------------------------------------------------------------- replay


def _workload(path: Path, **kw: object) -> quota_sim.TraceWorkload:
    selection = llm_trace.select(llm_trace.read_trace(path))
    return quota_sim.TraceWorkload(selection=selection, **kw)  # type: ignore[arg-type]


def test_replay_answers_every_row_once_with_its_tokens(small_path: Path) -> None:
    workload = _workload(small_path, seed=5)
    requests = workload.requests()
    assert any(r.stream for r in requests) and any(not r.stream for r in requests)
    results = quota_sim.simulate(workload)
    trace_tokens = sum(p + g for _, p, g in SMALL)
    for r in results:
        assert r.client_errors == 0, r.errors
        assert r.consistency() == []
        assert r.requests == r.ok == len(SMALL)
        assert sorted(r.answers) == list(range(len(SMALL)))  # every row answered once
        assert [r.answers[i] for i in range(len(SMALL))] == [(p, g) for _, p, g in SMALL]
        assert r.cerebras_tokens + r.chutes_tokens == r.client_tokens == trace_tokens
        # Over quota: both providers serve, and Cerebras never more than 15 a minute allows.
        assert 0 < r.cerebras_served <= quota_sim.REAL_RPM * (r.minutes + 1)
        assert r.chutes_served == len(SMALL) - r.cerebras_served
        assert len(r.chutes_latencies) == r.chutes_served  # the proxy's log line was read for each
        assert workload.checks(r) == [(True, workload.checks(r)[0][1])]
    # No router sends Cerebras more than its requests/minute bucket allows on these arrivals.
    ceiling = quota_sim.rpm_ceiling([q.at for q in requests])
    assert all(r.cerebras_served <= ceiling for r in results)
    text, _ = quota_sim.report(results)
    assert f"replay of {small_path}" in text and "36 requests" in text
    assert f"tokens served {trace_tokens:,} / as the trace asks {trace_tokens:,}" in text


def test_replay_with_a_budget_cuts_long_answers(small_path: Path) -> None:
    workload = _workload(small_path, budget=100, stream_share=0.0)
    assert not any(r.stream for r in workload.requests())
    (best,) = quota_sim.simulate(workload, quota_sim.SETUPS[:1])
    assert best.client_errors == 0 and best.consistency() == []
    assert [best.answers[i] for i in range(len(SMALL))] == [(p, min(g, 100)) for _, p, g in SMALL]
    assert workload.checks(best)[0][0]


def test_cli_refuses_a_bad_trace_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, [(stamp(0), "5", "6"), (stamp(1), "5", "-6")])
    assert quota_sim.main(["--trace", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"quota_sim: {path} line 3: negative GeneratedTokens -6\n"
    good = write(tmp_path, [(stamp(0), "5", "6"), (stamp(1), "5", "6")], name="good.csv")
    assert quota_sim.main(["--trace", str(good), "--start", "5"]) == 2
    assert "holds no rows" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        quota_sim.main(["--budget", "8000"])  # a trace option without a trace
