"""The health prober: providers that are down or no longer offer the model are passed over."""

import logging

import pytest
import trio
import trio.testing

from support.chat import chat, client_for, post, wait_for_health
from support.proxies import Providers, StartProxy
from trioproxy.testing import emulator
from trioproxy.testing.ports import free_port


async def test_a_model_the_provider_stopped_listing_is_skipped(
    providers: Providers, start_proxy: StartProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """When Cerebras lists none of its candidate models, requests go to Chutes and no chat is
    wasted on it; when it lists one again, it serves."""
    caplog.set_level(logging.INFO)
    providers.cerebras.model, providers.cerebras.more_models = "some-other-model", []
    proxy = await start_proxy(health_check_interval_ms=20)
    state = await wait_for_health(proxy, lambda s: s["model_offered"] is False)
    assert state["usable"] is False and "not listed" in state["last_error"]
    async with client_for(proxy) as client:
        assert (await post(client, chat())).status_code == 200
    assert providers.cerebras.received == [] and providers.chutes.served == 1
    await trio.testing.wait_all_tasks_blocked()  # the request line is written after the response
    assert "reason='fallback: model_missing'" in caplog.text
    providers.cerebras.model = proxy.config.cerebras.model[-1]  # the last candidate is as good
    await wait_for_health(proxy, lambda s: s["model_offered"] is True and s["usable"])
    async with client_for(proxy) as client:
        assert (await post(client, chat())).status_code == 200
    assert providers.cerebras.served == 1


async def test_a_provider_down_is_marked_so_and_back_up_when_it_answers(
    providers: Providers, start_proxy: StartProxy, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """N failed probes mark Cerebras down (Chutes serves first); a good probe brings it back."""
    caplog.set_level(logging.INFO)
    port = free_port()
    proxy = await start_proxy(
        health_check_interval_ms=20,
        health_check_failures=2,
        cerebras={"base_url": f"http://127.0.0.1:{port}/v1"},
    )
    state = await wait_for_health(proxy, lambda s: s["up"] is False)
    assert state["consecutive_failures"] >= 2 and state["last_error"]
    async with client_for(proxy) as client:
        assert (await post(client, chat())).status_code == 200
    await trio.testing.wait_all_tasks_blocked()  # the request line is written after the response
    assert "reason='fallback: down'" in caplog.text
    assert providers.chutes.served == 1

    revived = emulator.cerebras(api_key=providers.cerebras.api_key)
    await nursery.start(emulator.serve, revived, "127.0.0.1", port)
    await wait_for_health(proxy, lambda s: s["up"] is True and s["usable"])
    async with client_for(proxy) as client:
        assert (await post(client, chat())).status_code == 200
    assert revived.served == 1
    assert "cerebras is up again" in caplog.text


async def test_a_down_provider_is_still_tried_when_nothing_else_can_serve(
    providers: Providers, start_proxy: StartProxy, nursery: trio.Nursery
) -> None:
    """The prober can be wrong: a failed `GET /models` does not mean chat fails, so with Chutes
    failing, a Cerebras marked down still gets the request (a last resort, not a skip)."""
    port = free_port()
    proxy = await start_proxy(
        health_check_interval_ms=3_600_000,  # one probe, at start: the next is far away
        health_check_failures=1,
        cerebras={"base_url": f"http://127.0.0.1:{port}/v1"},
    )
    await wait_for_health(proxy, lambda s: s["up"] is False)
    revived = emulator.cerebras(api_key=providers.cerebras.api_key)
    await nursery.start(emulator.serve, revived, "127.0.0.1", port)  # it serves, the prober not yet told
    providers.chutes.faults.status = 503
    async with client_for(proxy) as client:
        response = await post(client, chat())
    assert response.status_code == 200
    assert providers.chutes.received and revived.served == 1


async def test_a_provider_without_the_model_gets_no_request_even_when_the_other_fails(
    providers: Providers, start_proxy: StartProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """Its own list says it lacks the model: a request there is a sure "no such model", so when
    Chutes fails the client gets Chutes's error and Cerebras is never asked."""
    caplog.set_level(logging.INFO)
    providers.cerebras.model, providers.cerebras.more_models = "some-other-model", []
    proxy = await start_proxy(health_check_interval_ms=20)
    await wait_for_health(proxy, lambda s: s["model_offered"] is False)
    providers.chutes.faults.status = 500  # a failure that sets no cooldown: each request reaches Chutes
    async with client_for(proxy) as client:
        for _ in range(3):
            response = await post(client, chat())
            assert response.status_code == 502, response.text  # Chutes's error, not a 503 for the route
    assert providers.cerebras.received == []
    assert len(providers.chutes.received) == 3
    await trio.testing.wait_all_tasks_blocked()
    assert "reason='fallback: model_missing'" in caplog.text
