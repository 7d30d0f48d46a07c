"""Patience: waiting for Cerebras's quota when that finishes sooner than Chutes's answer.

Trio's autojumping mock clock moves time whenever every task waits on a timer, so the
waits below take simulated seconds, not real ones. The proxy is told Cerebras takes
6 requests a minute (one every 10 s once its bucket is empty), first tokens after 0.3 s at
2,000 tokens/s, and Chutes first tokens after 2 s at 50 tokens/s: a 500-token answer is
expected in 10.55 s from Cerebras after a 10 s wait, in 12 s from Chutes.
"""

import logging

import pytest
import trio
import trio.testing

from support.chat import client_for, post
from support.patience import (
    after_the_bucket_is_empty,
    empty_cerebras_bucket,
    fell_back_at_once,
    patient_proxy,
    request_lines,
    task,
    waited_for_the_refill,
    waited_ms,
)
from support.proxies import Providers, StartProxy
from trioproxy.config.validators import ConfigError
from trioproxy.config.load import load_config
from trioproxy.quota.ledger import QuotaLedger
from trioproxy.routing.patience import AnswerTimer, Pace, Patience


def task_order(providers: Providers) -> list[str]:
    return [body["messages"][0]["content"] for body in providers.cerebras.received]


async def test_patience_waits_for_a_refill_that_finishes_sooner(
    providers: Providers, start_proxy: StartProxy, autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = task("patient", 500) | {"stream": True}
    waited_for_the_refill(providers, *await after_the_bucket_is_empty(providers, start_proxy, caplog, body))


async def test_patience_falls_back_when_waiting_is_longer_than_the_slow_answer(
    providers: Providers, start_proxy: StartProxy, autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """100 tokens: Chutes needs 4 s, Cerebras 10.35 s after its wait: no waiting."""
    fell_back_at_once(providers, *await after_the_bucket_is_empty(providers, start_proxy, caplog, task("short", 100)))


async def test_patience_yields_when_others_would_take_the_quota_anyway(
    providers: Providers, start_proxy: StartProxy, autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Six short requests passed over Cerebras within the minute: one of them would have used
    the quota returning in 10 s, so waiting for it would only add time (6/60 s x 10 s >= 1).
    Without them it would wait: Chutes at 10 tokens/s needs ~16 s for the ~150 tokens the
    proxy expects by then."""
    caplog.set_level(logging.INFO, logger="trioproxy.request")
    proxy = await patient_proxy(providers, start_proxy, output_tokens_per_second=10.0)
    await empty_cerebras_bucket(proxy)
    async with client_for(proxy) as client:
        for i in range(6):  # 20 tokens: 4 s from Chutes, no reason to wait
            assert (await post(client, task(f"short {i}", 20))).status_code == 200
        began = trio.current_time()
        assert (await post(client, task("would wait", 500))).status_code == 200
    assert trio.current_time() - began < 0.5
    assert providers.chutes.served == 7 and providers.cerebras.served == 6
    line = (await request_lines(caplog))[-1]
    assert "provider=chutes" in line and waited_ms(line) == 0


async def test_with_cerebras_alone_a_wait_replaces_the_429(
    providers: Providers, start_proxy: StartProxy, autojump_clock: trio.testing.MockClock,
) -> None:
    """No Chutes key: a short answer waits for Cerebras's refill rather than meet a 429."""
    proxy = await patient_proxy(providers, start_proxy, api_key="")
    await empty_cerebras_bucket(proxy)
    began = trio.current_time()
    async with client_for(proxy) as client:
        client.timeout = 60.0
        assert (await post(client, task("alone", 20))).status_code == 200
    assert 9.9 <= trio.current_time() - began <= 10.5
    assert providers.cerebras.served == 7 and not providers.chutes.received


async def test_max_wait_zero_falls_back_at_once_as_before(
    providers: Providers, start_proxy: StartProxy, autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    headers_after, line = await after_the_bucket_is_empty(
        providers, start_proxy, caplog, task("impatient", 500), max_wait_ms=0
    )
    assert headers_after < 0.5
    assert providers.chutes.served == 1
    assert "reason='fallback: rpm'" in line and waited_ms(line) == 0


async def test_waiters_are_served_in_arrival_order_one_per_refill(
    providers: Providers, start_proxy: StartProxy, autojump_clock: trio.testing.MockClock,
) -> None:
    """With Chutes at 10 tokens/s (52 s for 500 tokens) three waiters all queue: each gets
    the next request Cerebras's bucket refills, 10 s apart, in the order they came."""
    proxy = await patient_proxy(providers, start_proxy, max_wait_ms=40_000, output_tokens_per_second=10.0)
    await empty_cerebras_bucket(proxy)
    began = trio.current_time()
    answered: dict[str, float] = {}

    async def send(name: str) -> None:
        async with client_for(proxy) as client:
            client.timeout = 60.0
            assert (await post(client, task(name))).status_code == 200
        answered[name] = trio.current_time() - began

    async with trio.open_nursery() as clients:
        for name in ("first", "second", "third"):
            clients.start_soon(send, name)
            await trio.sleep(0.1)
    assert task_order(providers)[6:] == ["task first", "task second", "task third"]
    assert providers.chutes.served == 0
    for i, name in enumerate(("first", "second", "third")):
        assert 10 * (i + 1) - 0.1 <= answered[name] <= 10 * (i + 1) + 0.5, answered


async def test_a_client_that_leaves_while_waiting_leaves_the_queue(
    providers: Providers, start_proxy: StartProxy, autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The stream's client gives up after 3 s, before any header came: the request is never
    sent, and the next waiter takes the first refill instead of queueing behind a ghost."""
    caplog.set_level(logging.INFO, logger="trioproxy.request")
    proxy = await patient_proxy(providers, start_proxy, max_wait_ms=40_000, output_tokens_per_second=10.0)
    await empty_cerebras_bucket(proxy)
    began = trio.current_time()
    got_headers = False
    answered_after = 0.0

    async def leaving() -> None:
        nonlocal got_headers
        async with client_for(proxy) as client:
            with trio.move_on_after(3):
                async with client.stream("POST", "/chat/completions", json=task("leaving") | {"stream": True}):
                    got_headers = True

    async def staying() -> None:
        nonlocal answered_after
        await trio.sleep(0.1)
        async with client_for(proxy) as client:
            client.timeout = 60.0
            assert (await post(client, task("staying"))).status_code == 200
        answered_after = trio.current_time() - began

    async with trio.open_nursery() as clients:
        clients.start_soon(leaving)
        clients.start_soon(staying)
    assert not got_headers
    assert task_order(providers)[6:] == ["task staying"]
    assert 9.9 <= answered_after <= 10.5
    gone = next(line for line in await request_lines(caplog) if "status=499" in line)
    assert 2_900 <= waited_ms(gone) <= 3_100


async def test_timer_learns_first_token_and_speed_from_a_stream(autojump_clock: trio.testing.MockClock) -> None:
    pace = Pace(first_token_seconds=1.0, tokens_per_second=100.0)
    completions: list[int] = []
    timer = AnswerTimer(pace, completions.append)
    await trio.sleep(3.0)
    timer.first_event()
    await trio.sleep(10.0)
    timer.usage(200)  # 20 tokens/s
    assert pace.first_token_seconds == pytest.approx(1.0 + 0.2 * (3.0 - 1.0))
    assert pace.tokens_per_second == pytest.approx(100.0 + 0.2 * (20.0 - 100.0))
    assert completions == [200]


@pytest.mark.parametrize("value", ["-1", "300001", "ten"])
def test_absurd_waits_are_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="MAX_WAIT_MS"):
        load_config(None, {"MAX_WAIT_MS": value})


async def test_a_reload_keeps_what_was_learned_for_providers_still_there() -> None:
    ledger = QuotaLedger([])
    old = Patience(ledger, {"cerebras": Pace(0.3, 2_000.0), "chutes": Pace(2.0, 50.0)}, 10.0)
    old.paces["cerebras"].tokens_per_second, old.completion_tokens = 1_500.0, 800.0
    new = Patience(ledger, {"cerebras": Pace(0.3, 2_000.0)}, 10.0)
    new.carry_over(old)
    assert new.paces == {"cerebras": Pace(0.3, 1_500.0)} and new.completion_tokens == 800.0
    old.paces["cerebras"].tokens_per_second = 1.0  # the old runtime's learning stays its own
    assert new.paces["cerebras"].tokens_per_second == 1_500.0
