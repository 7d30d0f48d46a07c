"""Named clients: who sent a request, what each used, and each client's own budgets."""

import hashlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import anthropic
import attrs
import httpx
import openai
import pytest
import trio
import trio.testing

from support.chat import status_of
from support.command import lines, run, scrubbed_env
from support.gemini import client as gemini_client
from support.gemini import sdk
from support.proxies import Providers, Proxy, StartProxy, proxy_config
from support.reload import reloadable_proxy
from trioproxy.config.schema import Budget, ClientConfig, ModelRoute, RouteProvider
from trioproxy.config.validators import ConfigError
from trioproxy.config.load import load_config
from trioproxy.quota.clients import ClientBook, ClientBudgets, TokenBooking
from trioproxy.quota.contract import Refusal
from trioproxy.testing.emulator.faults import Faults
from trioproxy.quota.ledger import QuotaLedger
from trioproxy.quota.persist import StatePersister

MODEL = "qwen-3-coder"
ALICE_KEY = "alice-key-secret-0001"
BOB_KEY = "bob-key-secret-0002"


def sha256(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def two_clients(**alice: object) -> tuple[ClientConfig, ...]:
    """Alice by plain key (with whatever `alice` sets), Bob by the key's hash only."""
    return (ClientConfig(name="alice", api_keys=(ALICE_KEY,), **alice),  # type: ignore[arg-type]
            ClientConfig(name="bob", key_hashes=(sha256(BOB_KEY),), weight=2))


def openai_client(proxy: Proxy, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=proxy.base_url, api_key=key, max_retries=0)


def anthropic_client(proxy: Proxy, key: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=proxy.base_url.removesuffix("/v1"), api_key=key, max_retries=0)


# --- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "key", "words"),
    [
        ('[[clients]]\nname = "a"\napi_keys = ["k1"]\n[[clients]]\nname = "b"\nkey_hashes = ["' + sha256("k1") + '"]\n',
         "clients.1.key_hashes", "'b' has a key that a lists too"),
        ('client_api_keys = ["k1"]\n[[clients]]\nname = "a"\napi_keys = ["k1"]\n',
         "clients.0.api_keys", "client_api_keys lists too"),
        ('[[clients]]\nname = "a"\napi_keys = ["k1"]\nweight = 0\n', "clients.0.weight", "'a' must be greater than 0"),
        ('[[clients]]\nname = "a"\napi_keys = ["k1"]\nweight = -1.5\n', "clients.0.weight", "'a' must be greater than 0"),
        ('[[clients]]\nname = "a"\napi_keys = ["k1"]\nroutes = ["gpt-5"]\n', "clients.0.routes", "no route called 'gpt-5'"),
        ('[[clients]]\nname = "a"\napi_keys = ["k1"]\n[clients.route_budgets.gpt-5]\nrequests_per_day = 1\n',
         "clients.0.route_budgets", "no route called 'gpt-5'"),
        ('[chutes]\ntokens_per_minute = 1000\n[[clients]]\nname = "a"\napi_keys = ["k1"]\n[clients.budget]\n'
         'tokens_per_minute = 200000\n', "clients.0.budget.tokens_per_minute", "above what the providers of route"),
        ('[[clients]]\nname = "a"\napi_keys = ["k1"]\n[clients.budget]\nrequests_per_minute = 0\n',
         "clients.0.budget.requests_per_minute", "'a' must be greater than 0"),
        ('[[clients]]\nname = "a"\nkey_hashes = ["sha256:abc"]\n', "clients.0.key_hashes", "sha256:<64"),
        ('[[clients]]\nname = "a b"\napi_keys = ["k1"]\n', "clients.0.name", "letters, digits"),
        ('[[clients]]\nname = "a"\n', "clients.0.api_keys", "'a' has no key"),
    ],
)
def test_bad_clients_are_refused_naming_the_client_and_field(tmp_path: Path, toml: str, key: str, words: str) -> None:
    """A key under two clients, a weight of 0 or below, a budget above the providers' limits,
    an unknown route: one line naming the client's entry, the field and the file."""
    path = tmp_path / "config.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as refused:
        load_config(path, environ={}, dotenv_path=tmp_path / "none.env")
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(key + ":"), message
    assert words in message
    assert str(path) in message
    assert "k1" not in message.replace("'k1'", "")  # the key itself is never repeated


async def test_a_bad_client_exits_2_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[[clients]]\nname = "ci"\napi_keys = ["ci-secret-key"]\nweight = 0\n')
    result = await run(["--config", str(config)], tmp_path, scrubbed_env(CEREBRAS_API_KEY="csk-x"))
    assert result.returncode == 2
    assert lines(result.stderr) == [line for line in lines(result.stderr) if "clients.0.weight" in line and "'ci'" in line]
    assert len(lines(result.stderr)) == 1
    assert "ci-secret-key" not in result.stderr + result.stdout


def test_a_budget_within_what_the_providers_allow_together_is_taken(tmp_path: Path) -> None:
    """Cerebras's 132,000 tokens/minute and Chutes's 100,000 allow 232,000 together."""
    path = tmp_path / "config.toml"
    path.write_text('[chutes]\ntokens_per_minute = 100000\n[[clients]]\nname = "a"\napi_keys = ["k1"]\n'
                    '[clients.budget]\ntokens_per_minute = 232000\n')
    config = load_config(path, environ={}, dotenv_path=tmp_path / "none.env")
    assert config.clients[0].budget.tokens_per_minute == 232_000


# --- who sent it, and what each used ------------------------------------------------------------


async def test_each_client_is_known_by_name_never_by_key(
    providers: Providers, start_proxy: StartProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """A plain key and a key's hash both identify their client; the log line, /v1/status,
    `trioproxy status`'s table and /metrics name the client; no key appears anywhere."""
    caplog.set_level(logging.DEBUG)
    proxy = await start_proxy(clients=two_clients(), cerebras={"requests_per_minute": 2})
    alice, bob = openai_client(proxy, ALICE_KEY), openai_client(proxy, BOB_KEY)
    await alice.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    await bob.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    # Cerebras's minute is spent: Bob's next goes to Chutes.
    await bob.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "again"}])
    with pytest.raises(openai.AuthenticationError):
        await openai_client(proxy, "nobody-key-secret").chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])

    status = await status_of(proxy, ALICE_KEY)
    clients = status["clients"]
    assert set(clients) == {"alice", "bob"}
    assert clients["bob"]["weight"] == 2
    assert clients["alice"]["total"]["requests"] == 1
    by_provider = clients["bob"]["routes"][MODEL]
    assert by_provider["cerebras"]["requests"] == 1 and by_provider["chutes"]["requests"] == 1
    assert clients["bob"]["total"]["prompt_tokens"] == sum(p["prompt_tokens"] for p in by_provider.values()) > 0
    assert clients["bob"]["total"]["completion_tokens"] > 0

    request_lines = [r.getMessage() for r in caplog.records if r.name == "trioproxy.request"]
    assert sum("client=alice " in line for line in request_lines) == 1
    assert sum("client=bob " in line for line in request_lines) == 2
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(proxy.base_url.removesuffix("/v1") + "/metrics",
                                    headers={"authorization": f"Bearer {ALICE_KEY}"})).text
    assert f'trioproxy_client_requests_total{{client="bob",provider="chutes",route="{MODEL}"}} 1.0' in metrics
    assert f'trioproxy_client_requests_total{{client="alice",provider="cerebras",route="{MODEL}"}} 1.0' in metrics
    from trioproxy.cli.status_table import render_table
    table = render_table(status)
    assert "alice" in table and "cerebras 1, chutes 1" in table
    for secret in (ALICE_KEY, BOB_KEY, "nobody-key-secret"):
        assert secret not in caplog.text and secret not in metrics and secret not in str(status)


async def test_client_api_keys_are_anonymous_clients(start_proxy: StartProxy) -> None:
    proxy = await start_proxy(client_api_keys=("first-key-secret", "second-key-secret"))
    await openai_client(proxy, "second-key-secret").chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}])
    clients = (await status_of(proxy, "first-key-secret"))["clients"]
    assert list(clients) == ["anonymous#2"]
    assert clients["anonymous#2"]["total"]["requests"] == 1


async def test_failovers_and_cached_tokens_are_counted_per_client(providers: Providers, start_proxy: StartProxy) -> None:
    """A provider's failure counts as a failover against it, for the client that met it."""
    proxy = await start_proxy(clients=two_clients())
    providers.cerebras.faults.status = 503
    await openai_client(proxy, ALICE_KEY).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    routes = (await status_of(proxy, ALICE_KEY))["clients"]["alice"]["routes"][MODEL]
    assert routes["cerebras"]["failovers"] == 1 and routes["cerebras"]["requests"] == 0
    assert routes["chutes"]["requests"] == 1


async def _alice_on_one_of_two_routes(providers: Providers, start_proxy: StartProxy) -> Proxy:
    """Routes MODEL (Cerebras, then Chutes) and "big" (Chutes); Alice may use MODEL only, Bob both."""
    routes = (ModelRoute(MODEL, (RouteProvider(provider="cerebras"), RouteProvider(provider="chutes"))),
              ModelRoute("big", (RouteProvider(provider="chutes", model="openai/gpt-oss-120b"),)))
    providers.chutes.more_models.append("openai/gpt-oss-120b")
    return await start_proxy(models=routes, clients=(
        ClientConfig(name="alice", api_keys=(ALICE_KEY,), routes=(MODEL,)),
        ClientConfig(name="bob", api_keys=(BOB_KEY,))))


async def test_a_client_may_use_only_its_routes(providers: Providers, start_proxy: StartProxy) -> None:
    """A route the client is not given: 403 in the door's shape, before any provider is asked."""
    proxy = await _alice_on_one_of_two_routes(providers, start_proxy)
    ok = await openai_client(proxy, ALICE_KEY).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert ok.choices[0].message.content
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await openai_client(proxy, ALICE_KEY).chat.completions.create(model="big", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.response.json()["error"]["code"] == "model_not_allowed"
    with pytest.raises(openai.NotFoundError) as unknown:  # an unknown name: offered only its routes
        await openai_client(proxy, ALICE_KEY).chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    assert "`big`" not in unknown.value.response.json()["error"]["message"]
    assert f"`{MODEL}`" in unknown.value.response.json()["error"]["message"]
    with pytest.raises(anthropic.PermissionDeniedError):
        await anthropic_client(proxy, ALICE_KEY).messages.create(model="big", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    async with httpx.AsyncClient(base_url=proxy.base_url, headers={"x-api-key": ALICE_KEY}, timeout=10) as http:
        count = {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}  # counting tokens too
        other = await http.post("/messages/count_tokens", json={**count, "model": "big"})
        assert (other.status_code, other.json()["error"]["type"]) == (403, "permission_error")
        unknown_count = await http.post("/messages/count_tokens", json={**count, "model": "gpt-9"})
        assert unknown_count.status_code == 404 and "`big`" not in unknown_count.json()["error"]["message"]
        gemini_other = await http.post(proxy.base_url.removesuffix("/v1") + "/v1beta/models/big:countTokens", headers={"x-goog-api-key": ALICE_KEY},
                                       json={"contents": [{"role": "user", "parts": [{"text": "x"}]}]})
        assert gemini_other.status_code == 403
    assert providers.chutes.served == 0
    await openai_client(proxy, BOB_KEY).chat.completions.create(model="big", messages=[{"role": "user", "content": "hi"}])
    assert providers.chutes.served == 1


async def test_a_client_limited_to_some_routes_is_listed_only_those(providers: Providers, start_proxy: StartProxy) -> None:
    """Every door's model list and card show a restricted client its routes and no other; a
    client without `routes` sees them all."""
    from google.genai import errors

    proxy = await _alice_on_one_of_two_routes(providers, start_proxy)
    alice, bob = openai_client(proxy, ALICE_KEY), openai_client(proxy, BOB_KEY)
    assert [model.id for model in (await alice.models.list()).data] == [MODEL]
    assert [model.id for model in (await bob.models.list()).data] == [MODEL, "big"]
    assert [model.id for model in (await anthropic_client(proxy, ALICE_KEY).models.list()).data] == [MODEL]
    listed = await sdk(lambda: list(gemini_client(proxy, ALICE_KEY).models.list()))
    assert [model.name for model in listed] == [f"models/{MODEL}"]
    assert (await alice.models.retrieve(MODEL)).id == MODEL
    with pytest.raises(openai.NotFoundError) as unknown:
        await alice.models.retrieve("big")
    assert "big" not in unknown.value.response.json()["error"]["message"].split("serves")[1]
    with pytest.raises(errors.ClientError) as gemini_unknown:
        await sdk(lambda: gemini_client(proxy, ALICE_KEY).models.get(model="big"))
    assert gemini_unknown.value.code == 404
    assert (await bob.models.retrieve("big")).id == "big"


# --- budgets -------------------------------------------------------------------------------------


async def test_a_client_over_its_budget_gets_its_doors_429_and_the_others_are_not_charged(
    providers: Providers, start_proxy: StartProxy
) -> None:
    """Alice may send 2 requests a minute: the third gets 429 with Retry-After in the shape of
    the door it came through (OpenAI's for chat and responses, Anthropic's for messages),
    reaches no provider, and Bob, meanwhile, is served as before."""
    proxy = await start_proxy(clients=two_clients(budget=Budget(requests_per_minute=2)))
    alice, alice_anthropic = openai_client(proxy, ALICE_KEY), anthropic_client(proxy, ALICE_KEY)
    await alice.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "one"}])
    await alice.responses.create(model=MODEL, input="two")
    served = providers.cerebras.served + providers.chutes.served

    with pytest.raises(openai.RateLimitError) as chat_refused:
        await alice.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "three"}])
    with pytest.raises(openai.RateLimitError) as responses_refused:
        await alice.responses.create(model=MODEL, input="three")
    with pytest.raises(anthropic.RateLimitError) as messages_refused:
        await alice_anthropic.messages.create(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "three"}])
    for refused in (chat_refused.value, responses_refused.value):
        assert refused.response.status_code == 429
        assert 1 <= int(refused.response.headers["retry-after"]) <= 60
        error = refused.response.json()["error"]
        assert error["code"] == "client_budget_exceeded" and error["type"] == "rate_limit_error"
        assert "alice" in error["message"] and "requests per minute" in error["message"]
    anthropic_body = messages_refused.value.response.json()
    assert anthropic_body["type"] == "error" and anthropic_body["error"]["type"] == "rate_limit_error"
    assert 1 <= int(messages_refused.value.response.headers["retry-after"]) <= 60
    assert providers.cerebras.served + providers.chutes.served == served  # no provider was asked

    bob = openai_client(proxy, BOB_KEY)
    for _ in range(3):
        await bob.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    clients = (await status_of(proxy, BOB_KEY))["clients"]
    assert clients["alice"]["total"]["over_budget"] == 3
    assert clients["alice"]["budgets"]["*"]["rpm"] == {"used": 2, "limit": 2}
    assert clients["bob"]["total"]["requests"] == 3 and clients["bob"]["total"]["over_budget"] == 0


async def test_a_tokens_budget_of_one_route_counts_usage_and_lets_the_client_back_in_time(
    providers: Providers, start_proxy: StartProxy, autojump_clock: trio.testing.MockClock
) -> None:
    """Tokens are booked from usage; once the minute's tokens are spent the next request waits
    for its window (Retry-After), and is served again after it."""
    proxy = await start_proxy(clients=(ClientConfig(name="alice", api_keys=(ALICE_KEY,),
                                                    route_budgets={MODEL: Budget(tokens_per_minute=30)}),))
    alice = openai_client(proxy, ALICE_KEY)
    # Booked: the prompt's estimate (8) and max_tokens, then what the answer took.
    first = await alice.chat.completions.create(model=MODEL, max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    assert first.usage is not None and first.usage.total_tokens > 30 - 28
    with pytest.raises(openai.RateLimitError) as refused:
        await alice.chat.completions.create(model=MODEL, max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    wait = int(refused.value.response.headers["retry-after"])
    assert 55 <= wait <= 60
    await trio.sleep(wait)
    await alice.chat.completions.create(model=MODEL, max_tokens=20, messages=[{"role": "user", "content": "hi"}])


async def test_a_request_estimated_past_the_tokens_budget_is_refused_before_any_provider(
    providers: Providers, start_proxy: StartProxy
) -> None:
    """1,000 tokens a minute: a request whose prompt estimate plus max_tokens is 5,000 gets the
    door's 429 with Retry-After though nothing was spent yet, and no provider is asked."""
    proxy = await start_proxy(clients=two_clients(budget=Budget(tokens_per_minute=1_000)))
    alice = openai_client(proxy, ALICE_KEY)
    served = providers.cerebras.served + providers.chutes.served
    with pytest.raises(openai.RateLimitError) as refused:
        await alice.chat.completions.create(model=MODEL, max_tokens=5_000, messages=[{"role": "user", "content": "hi"}])
    assert 1 <= int(refused.value.response.headers["retry-after"]) <= 60
    error = refused.value.response.json()["error"]
    assert error["code"] == "client_budget_exceeded" and "tokens per minute" in error["message"]
    assert providers.cerebras.served + providers.chutes.served == served
    budgets = (await status_of(proxy, BOB_KEY))["clients"]["alice"]["budgets"]
    assert budgets["*"]["tpm"]["used"] == 0


async def test_of_two_parallel_requests_that_fit_alone_but_not_together_one_is_refused(
    providers: Providers, start_proxy: StartProxy
) -> None:
    """Each books its estimate at admission: while the first is still at the provider (held
    there), the second sees the first's tokens before any usage came back and is refused."""
    proxy = await start_proxy(clients=two_clients(budget=Budget(tokens_per_minute=1_000)))
    providers.cerebras.faults = providers.chutes.faults = Faults(latency=30)
    alice = openai_client(proxy, ALICE_KEY)

    async def send() -> None:
        await alice.chat.completions.create(model=MODEL, max_tokens=600, messages=[{"role": "user", "content": "hi"}])

    refused = await _second_while_the_first_is_at_the_provider(providers, send)
    assert "tokens per minute" in refused.response.json()["error"]["message"]


async def _second_while_the_first_is_at_the_provider(
    providers: Providers, send: Callable[[], Awaitable[None]], during: Callable[[], Awaitable[None]] | None = None
) -> openai.RateLimitError:
    """Send once, and again while the first is held at the provider: the second's refusal
    (`during` runs before the first is let go)."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            while not (providers.cerebras.received or providers.chutes.received):  # the first is in flight
                await trio.sleep(0.01)
            with pytest.raises(openai.RateLimitError) as refused:
                await send()
            if during is not None:
                await during()
            nursery.cancel_scope.cancel()
    return refused.value


async def test_a_request_without_max_tokens_is_booked_with_the_answer_its_provider_is_sent(
    providers: Providers, start_proxy: StartProxy
) -> None:
    """20,000 tokens a minute, Cerebras capping answers at 16,384: a request naming no budget is
    booked its prompt plus the cap (what Cerebras's reservation books), so a second one while the
    first is at the provider is refused; a budget named above the cap is booked the cap, so it
    is admitted alone."""
    proxy = await start_proxy(clients=two_clients(budget=Budget(tokens_per_minute=20_000)))
    providers.cerebras.faults = providers.chutes.faults = Faults(latency=30)
    alice = openai_client(proxy, ALICE_KEY)

    async def send(**budget: int) -> None:
        await alice.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], **budget)

    async def booked() -> None:
        budgets = (await status_of(proxy, BOB_KEY))["clients"]["alice"]["budgets"]
        assert 16_384 < budgets["*"]["tpm"]["used"] < 16_384 + 100

    refused = await _second_while_the_first_is_at_the_provider(providers, send, booked)
    assert "tokens per minute" in refused.response.json()["error"]["message"]
    providers.cerebras.faults = providers.chutes.faults = Faults()
    await send(max_tokens=30_000)  # more than the budget, but Cerebras is sent at most the cap


async def test_after_a_served_request_the_budget_shows_its_real_usage_not_the_estimate(
    providers: Providers, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(clients=two_clients(budget=Budget(tokens_per_minute=5_000)))
    alice = openai_client(proxy, ALICE_KEY)
    answer = await alice.chat.completions.create(model=MODEL, max_tokens=2_000, messages=[{"role": "user", "content": "hi"}])
    assert answer.usage is not None and answer.usage.total_tokens < 2_000
    budgets = (await status_of(proxy, BOB_KEY))["clients"]["alice"]["budgets"]
    assert budgets["*"]["tpm"] == {"used": answer.usage.total_tokens, "limit": 5_000}


def test_estimates_count_with_what_other_replicas_booked_and_a_failed_request_keeps_nothing() -> None:
    """What other replicas publish counts with this request's estimate; a request settled with
    no usage (no provider answered) gives its whole estimate back, and this replica publishes
    the estimate while the request runs."""
    budgets = ClientBudgets(two_clients(budget=Budget(tokens_per_minute=1_000)), clock=lambda: 100.0,
                            wall_clock=lambda: 0.0)
    budgets.others = {("alice", "*", "tpm"): 700}
    assert isinstance(budgets.admit("alice", MODEL, lambda: 400), Refusal)
    booking = budgets.admit("alice", MODEL, lambda: 300)
    assert isinstance(booking, TokenBooking)
    assert budgets.local()[("alice", "*", "tpm")] == 300
    booking.settle(0)
    assert budgets.local()[("alice", "*", "tpm")] == 0


async def test_a_reload_keeps_what_budgets_counted_and_refuses_bad_clients(providers: Providers) -> None:
    config = proxy_config(providers, clients=two_clients(budget=Budget(requests_per_minute=1)))
    async with reloadable_proxy(config) as (proxy, send_reloads):
        alice = openai_client(proxy, ALICE_KEY)
        await alice.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        wider = attrs.evolve(config, clients=two_clients(budget=Budget(requests_per_minute=2)))
        await send_reloads.send(wider)
        await trio.testing.wait_all_tasks_blocked()
        await alice.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.RateLimitError):  # the first request still counts after the reload
            await alice.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        clients = (await status_of(proxy, ALICE_KEY))["clients"]
        assert clients["alice"]["total"]["requests"] == 2


async def test_usage_and_budgets_are_saved_with_the_ledgers_state(tmp_path: Path) -> None:
    clients = two_clients(budget=Budget(requests_per_day=5))
    book = ClientBook.for_clients(clients)
    assert isinstance(book.budgets.admit("alice", MODEL), TokenBooking)
    book.usage.count("alice", MODEL, "cerebras", requests=1, prompt_tokens=100, cached_tokens=40, completion_tokens=7)
    ledger = QuotaLedger([])
    path = tmp_path / "state.json"
    await StatePersister(ledger, path, 5.0, clients=book).save()
    restarted = ClientBook.for_clients(clients)
    await StatePersister(QuotaLedger([]), path, 5.0, clients=restarted).load()
    assert restarted.usage.view() == book.usage.view()
    assert restarted.budgets.snapshot("alice")["*"]["rpd"] == {"used": 1, "limit": 5}


async def test_the_gemini_door_knows_the_client_and_answers_its_budget_with_resource_exhausted(
    providers: Providers, start_proxy: StartProxy
) -> None:
    """Google's SDK with Alice's key: served and counted as Alice; past her budget, Google's 429
    (RESOURCE_EXHAUSTED with RetryInfo) and Retry-After, no provider asked."""
    from google.genai import errors

    proxy = await start_proxy(clients=two_clients(budget=Budget(requests_per_minute=1)))
    await sdk(lambda: gemini_client(proxy, ALICE_KEY).models.generate_content(model=MODEL, contents="hi"))
    served = providers.cerebras.served + providers.chutes.served
    with pytest.raises(errors.ClientError) as refused:
        await sdk(lambda: gemini_client(proxy, ALICE_KEY).models.generate_content(model=MODEL, contents="again"))
    assert refused.value.code == 429 and refused.value.status == "RESOURCE_EXHAUSTED"
    assert refused.value.details["error"]["details"][0]["@type"] == "type.googleapis.com/google.rpc.RetryInfo"
    assert "alice" in refused.value.message
    assert providers.cerebras.served + providers.chutes.served == served
    async with httpx.AsyncClient() as http:
        raw = await http.post(proxy.base_url.removesuffix("/v1") + f"/v1beta/models/{MODEL}:generateContent",
                              headers={"x-goog-api-key": ALICE_KEY}, json={"contents": [{"parts": [{"text": "x"}]}]})
    assert raw.status_code == 429 and 1 <= int(raw.headers["retry-after"]) <= 60
    clients = (await status_of(proxy, BOB_KEY))["clients"]
    assert clients["alice"]["total"]["requests"] == 1 and clients["alice"]["total"]["over_budget"] == 2
