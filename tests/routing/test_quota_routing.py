"""The quota brain end to end: emulated Cerebras's headers, caps and windows steer the proxy."""

import attrs
import httpx
import trio
import trio.testing

from support.chat import chat, client_for, post, sized_messages
from support.proxies import Providers, StartProxy
from trioproxy.config.schema import Config
from trioproxy.testing import emulator


def cerebras_429s(providers: Providers) -> int:
    return len(providers.cerebras.received) - providers.cerebras.served


async def drain_cerebras_directly(providers: Providers, prompt_tokens: int) -> None:
    """Another user of the same key spends Cerebras tokens the proxy never saw."""
    async with httpx.AsyncClient(base_url=providers.cerebras_url) as other:
        response = await other.post(
            "/chat/completions",
            json={"model": providers.cerebras.model, "messages": sized_messages(prompt_tokens), "max_tokens": 5},
            headers={"authorization": f"Bearer {providers.cerebras.api_key}"},
        )
    assert response.status_code == 200, response.text


async def test_header_sync_routes_away_before_cerebras_says_429(
    providers: Providers, start_proxy: StartProxy, mock_clock: trio.testing.MockClock
) -> None:
    """Tokens spent elsewhere on the key show in Cerebras's headers; the proxy then avoids a 429."""
    providers.cerebras.tokens_per_minute = 20_000
    proxy = await start_proxy(cerebras={"tokens_per_minute": 1_000_000})
    await drain_cerebras_directly(providers, 16_000)
    async with client_for(proxy) as client:
        small = await post(client, chat(max_tokens=10))
        assert small.status_code == 200
        large = await post(client, chat(max_tokens=6_000))  # fits our own count, not Cerebras's
        assert large.status_code == 200
    assert providers.cerebras.served == 2 and providers.chutes.served == 1
    assert cerebras_429s(providers) == 0


async def test_without_header_sync_the_same_traffic_meets_a_429(
    providers: Providers, start_proxy: StartProxy, mock_clock: trio.testing.MockClock
) -> None:
    """The control for the test above: with sync off, Cerebras refuses and the proxy fails over."""
    providers.cerebras.tokens_per_minute = 20_000
    proxy = await start_proxy(cerebras={"tokens_per_minute": 1_000_000, "sync_rate_limit_headers": False})
    await drain_cerebras_directly(providers, 16_000)
    async with client_for(proxy) as client:
        assert (await post(client, chat(max_tokens=10))).status_code == 200
        assert (await post(client, chat(max_tokens=6_000))).status_code == 200
    assert providers.chutes.served == 1
    assert cerebras_429s(providers) == 1


async def test_requests_per_day_from_headers_stop_cerebras_until_its_reset(
    providers: Providers, start_proxy: StartProxy, mock_clock: trio.testing.MockClock
) -> None:
    """When Cerebras reports no requests left today, the proxy waits for its reset, not 429s."""
    providers.cerebras.requests_per_day = 2
    proxy = await start_proxy()
    await drain_cerebras_directly(providers, 10)
    async with client_for(proxy) as client:
        assert (await post(client, chat())).status_code == 200  # the day's last request
        for _ in range(3):
            assert (await post(client, chat())).status_code == 200
        assert providers.chutes.served == 3
        assert cerebras_429s(providers) == 0
        status = (await client.get(proxy.base_url.removesuffix("/v1") + "/healthz")).json()
        assert status["providers"]["cerebras"]["accounts"]["cerebras"]["rpd"]["provider_remaining"] == 0


async def test_completion_budget_is_capped_for_cerebras_only(
    providers: Providers, start_proxy: StartProxy
) -> None:
    """Cerebras gets at most the cap (and the cap when none was asked); Chutes gets the client's own."""
    proxy = await start_proxy(cerebras={"max_completion_tokens_cap": 4_000})
    async with client_for(proxy) as client:
        for extra in ({}, {"max_completion_tokens": 32_000}, {"max_tokens": 100}):
            assert (await post(client, chat(**extra))).status_code == 200
        providers.cerebras.faults.status = 503
        assert (await post(client, chat(max_completion_tokens=32_000))).status_code == 200
    sent = providers.cerebras.received
    assert sent[0]["max_completion_tokens"] == 4_000
    assert sent[1]["max_completion_tokens"] == 4_000
    assert sent[2]["max_tokens"] == 100 and "max_completion_tokens" not in sent[2]
    assert providers.chutes.received[0]["max_completion_tokens"] == 32_000


async def test_prompt_past_the_context_window_goes_straight_to_chutes(
    providers: Providers, start_proxy: StartProxy
) -> None:
    """Cerebras is not even asked when prompt plus budget cannot fit its window."""
    proxy = await start_proxy(cerebras={"context_window": 8_000, "max_completion_tokens_cap": 4_000})
    async with client_for(proxy) as client:
        assert (await post(client, chat(messages=sized_messages(5_000)))).status_code == 200
        assert (await post(client, chat(messages=sized_messages(1_000)))).status_code == 200
    assert len(providers.cerebras.received) == 1
    assert providers.chutes.served == 1


async def test_capacity_429_backs_off_briefly_and_a_probe_reopens(
    providers: Providers, start_proxy: StartProxy, mock_clock: trio.testing.MockClock
) -> None:
    """queue_exceeded is not a quota matter: seconds later one probe goes first, then traffic returns."""
    proxy = await start_proxy(capacity_backoff_ms=5_000)
    providers.cerebras.faults.queue_exceeded = True
    providers.cerebras.faults.remaining = 1
    async with client_for(proxy) as client:
        assert (await post(client, chat())).status_code == 200  # Cerebras busy -> Chutes
        assert (await post(client, chat())).status_code == 200  # backing off -> Chutes
        assert providers.chutes.served == 2
        mock_clock.jump(6)
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(3):
            assert (await post(client, chat())).status_code == 200
    assert providers.cerebras.served == 3


async def test_a_key_listed_twice_is_one_account(
    providers: Providers, start_proxy: StartProxy, mock_clock: trio.testing.MockClock
) -> None:
    """Listing the same key in api_key and api_keys must not double its quota."""
    key = providers.cerebras.api_key
    proxy = await start_proxy(cerebras={"api_keys": (key,), "requests_per_minute": 2})
    async with client_for(proxy) as client:
        for _ in range(3):
            assert (await post(client, chat())).status_code == 200
    # The emulator knows one key; a config listing it twice still yields one account.
    assert providers.cerebras.served == 2 and providers.chutes.served == 1


async def test_a_third_provider_from_configuration_takes_its_place_in_order(
    providers: Providers, start_proxy: StartProxy, nursery: trio.Nursery
) -> None:
    """An extra OpenAI-compatible provider, tried between Cerebras and Chutes as configured."""
    third = emulator.chutes(api_key="gsk-third", model="qwen/qwen3-coder")
    third_url = await nursery.start(emulator.serve, third)
    extra = attrs.evolve(
        Config().chutes, name="third", base_url=third_url, model=third.model, api_key=third.api_key, requests_per_minute=1
    )
    proxy = await start_proxy(extra_providers=(extra,), provider_order=("cerebras", "third", "chutes"))
    providers.cerebras.faults.status = 503
    async with client_for(proxy) as client:
        first = await post(client, chat())
        second = await post(client, chat())
    assert first.status_code == 200 and first.json()["model"] == "qwen-3-coder"
    assert second.status_code == 200
    assert third.served == 1 and providers.chutes.served == 1  # its own rpm of 1 sends the next on
    assert third.received[0]["model"] == "qwen/qwen3-coder"
    assert third.received_headers[0]["authorization"] == "Bearer gsk-third"


async def test_a_stream_the_client_abandons_settles_what_was_spent(
    providers: Providers, start_proxy: StartProxy, mock_clock: trio.testing.MockClock
) -> None:
    """Leaving mid-stream books the prompt and the events relayed, not the whole 16k budget."""
    providers.cerebras.faults.chunk_delay = 1.0  # the frozen clock holds the stream open
    proxy = await start_proxy()

    async def release_the_first_content() -> None:
        """The client's stream starts with the first content, one chunk_delay after the role."""
        while not providers.cerebras.received:
            await trio.sleep(0)
        await trio.testing.wait_all_tasks_blocked()  # the emulator sent the role and sleeps
        mock_clock.jump(1.0)

    async with client_for(proxy) as client, trio.open_nursery() as nursery:
        nursery.start_soon(release_the_first_content)
        async with client.stream("POST", "/chat/completions", json=chat(stream=True)) as streaming:
            lines = streaming.aiter_lines()
            assert (await lines.__anext__()).startswith("data: ")
        await trio.testing.wait_all_tasks_blocked()
        state = (await client.get(proxy.base_url.removesuffix("/v1") + "/healthz")).json()
    # tokens/day: the minute's bucket refilled during the second the clock moved
    used = state["providers"]["cerebras"]["accounts"]["cerebras"]["tpd"]["used"]
    assert 0 < used < 100  # a few prompt tokens and one event, far below the 16,384 reserved
