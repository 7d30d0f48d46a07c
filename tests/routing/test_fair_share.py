"""Fair share of the fast provider: while demand exceeds its quota, clients get it by weight."""

import httpx
import pytest
import trio
import trio.testing

from support.chat import status_of
from support.proxies import Providers, StartProxy
from support.redis_ledgers import Clock, cerebras, replicas, script_calls
from trioproxy.config.schema import ClientConfig
from trioproxy.routing.fair_share import UNIT, water_fill
from trioproxy.testing.redis_server import RedisServer

MODEL = "qwen-3-coder"


def test_water_filling_gives_modest_clients_their_demand_and_splits_the_rest_by_weight() -> None:
    parts = water_fill({"light": (1.0, 100), "heavy": (1.0, 10_000), "double": (2.0, 10_000)}, 1_000)
    assert parts["light"] == 100
    assert parts["heavy"] == pytest.approx(300) and parts["double"] == pytest.approx(600)
    everyone_big = water_fill({name: (1.0, 5_000) for name in "abcd"}, 1_000)
    assert all(part == pytest.approx(250) for part in everyone_big.values())
    assert water_fill({"a": (1.0, 10), "b": (3.0, 20)}, 1_000) == {"a": 10, "b": 20}  # nobody short: all they ask


CLIENTS = (ClientConfig(name="heavy", api_keys=("heavy-key-0001",)),
           ClientConfig(name="light", api_keys=("light-key-0002",)),
           ClientConfig(name="double", api_keys=("double-key-0003",), weight=2))


async def _load(proxy_url: str, key: str, every: float, until: float) -> None:
    """One agent: a small request every `every` seconds until `until` (simulated)."""
    async with httpx.AsyncClient(base_url=proxy_url, headers={"authorization": f"Bearer {key}"}, timeout=60) as client:
        while trio.current_time() < until:
            response = await client.post("/chat/completions", json={
                "model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]})
            assert response.status_code == 200, response.text
            await trio.sleep(every)


async def _cerebras_by_client(start_proxy: StartProxy, fair_share: bool) -> dict[str, int]:
    """Three clients over three simulated minutes against 12 Cerebras requests a minute:
    heavy asks every second, light and double every 2 s; what each got of Cerebras in the
    last two minutes."""
    proxy = await start_proxy(clients=CLIENTS, fair_share=fair_share, cerebras={"requests_per_minute": 12})
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_load, proxy.base_url, "heavy-key-0001", 1.0, start + 60)
    before = {name: c["routes"].get(MODEL, {}).get("cerebras", {}).get("requests", 0)
              for name, c in (await status_of(proxy, "heavy-key-0001"))["clients"].items()}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_load, proxy.base_url, "heavy-key-0001", 1.0, start + 180)
        nursery.start_soon(_load, proxy.base_url, "light-key-0002", 2.0, start + 180)
        nursery.start_soon(_load, proxy.base_url, "double-key-0003", 2.0, start + 180)
    clients = (await status_of(proxy, "heavy-key-0001"))["clients"]
    return {name: c["routes"].get(MODEL, {}).get("cerebras", {}).get("requests", 0) - before.get(name, 0)
            for name, c in clients.items()}


async def test_while_demand_exceeds_the_quota_each_active_client_gets_its_weights_part(
    providers: Providers, start_proxy: StartProxy, autojump_clock: trio.testing.MockClock
) -> None:
    """A heavy client had Cerebras to itself for a minute; once two more are active, Cerebras's
    24 requests of the next two minutes go 1 : 1 : 2 by weight, the rest to Chutes."""
    got = await _cerebras_by_client(start_proxy, fair_share=True)
    # (Part of the bucket is left at the end: requests over their share wait for it to fill up.)
    assert 18 <= sum(got.values()) <= 28, got
    assert got["double"] == pytest.approx(2 * got["light"], abs=3), got
    assert got["heavy"] == pytest.approx(got["light"], abs=3), got


async def test_without_fair_share_the_heavy_client_takes_most(
    providers: Providers, start_proxy: StartProxy, autojump_clock: trio.testing.MockClock
) -> None:
    got = await _cerebras_by_client(start_proxy, fair_share=False)
    assert got["heavy"] > got["light"] + got["double"], got


def test_one_active_client_is_never_held_back() -> None:
    from trioproxy.config.schema import Config
    from trioproxy.quota.ledger import QuotaLedger
    from trioproxy.routing.fair_share import ProviderShare

    cerebras = Config().cerebras
    ledger = QuotaLedger([cerebras], clock=lambda: 0.0)
    share = ProviderShare(cerebras, ledger, clock=lambda: 0.0)
    for _ in range(100):
        share.asked("only", 1.0, UNIT // 10)
        assert share.refusal("only", UNIT // 10) is None
        share.took("only", UNIT // 10)


async def test_a_requests_cost_is_priced_from_the_limits_the_provider_states() -> None:
    """Cerebras's plan starts at 15 requests a minute; once it states 30 (and twice the tokens),
    a request costs half as much of its minute, from the next second on."""
    from trioproxy.config.schema import Config
    from trioproxy.quota.contract import Reservation
    from trioproxy.quota.ledger import QuotaLedger
    from trioproxy.routing.fair_share import ProviderShare

    clock = trio.testing.MockClock()
    cerebras = Config().cerebras
    ledger = QuotaLedger([cerebras], clock=clock.current_time)
    share = ProviderShare(cerebras, ledger, clock=clock.current_time)
    assert share.cost(1) == -(-UNIT // 15)
    reservation = await ledger.reserve("cerebras", 10)
    assert isinstance(reservation, Reservation)
    await ledger.adopt_limits(reservation, {"rpm": 30, "tpm": 330_000})
    clock.jump(1)
    assert share.cost(1) == -(-UNIT // 30)
    assert share.cost(33_000) == UNIT // 10  # tokens weigh more than the request now


async def test_a_request_counts_against_its_clients_share_while_the_ledger_answers() -> None:
    """A shared ledger answers after a round trip: a second request of the same client, checked
    meanwhile, sees the first one's part taken (and a refused one gives it back)."""
    import attrs

    from trioproxy.config.schema import Config
    from trioproxy.quota.contract import Refusal, Reservation
    from trioproxy.quota.ledger import QuotaLedger
    from trioproxy.routing.fair_share import FairShare
    from trioproxy.routing.patience import _Booking

    class RoundTrip(QuotaLedger):
        async def reserve(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            await trio.sleep(0.01)
            return await super().reserve(*args, **kwargs)

    cerebras = attrs.evolve(Config().cerebras, plan=None, requests_per_minute=10, tokens_per_minute=None,
                            tokens_per_day=None, api_key="csk-one")
    ledger = RoundTrip([cerebras])
    for _ in range(5):  # half the minute spent: below the point where shares apply
        assert isinstance(await QuotaLedger.reserve(ledger, "cerebras", 1), Reservation)
    fair = FairShare()
    fair.configure({"cerebras": cerebras}, ledger)
    for _ in range(10):  # both ask for more than their half
        fair.ticket("cerebras", "b", 1.0, 1)
        ticket = fair.ticket("cerebras", "a", 1.0, 1)
    for _ in range(4):  # a has 4 of its 5 requests
        assert ticket is not None
        ticket.took()
    got: list[object] = []

    async def ask() -> None:
        got.append(await _Booking(1, 1, None, fair.ticket("cerebras", "a", 1.0, 1)).reserve(ledger, "cerebras"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)
        nursery.start_soon(ask)
    assert sum(isinstance(answer, Reservation) for answer in got) == 1
    assert [answer.reason for answer in got if isinstance(answer, Refusal)] == ["share"]


async def test_a_request_cancelled_while_the_ledger_answers_gives_its_part_back() -> None:
    """A client that leaves during the ledger's round trip cancels the reservation: its part of
    the share must not stay taken until the window slides."""
    import attrs

    from trioproxy.config.schema import Config
    from trioproxy.quota.ledger import QuotaLedger
    from trioproxy.routing.fair_share import FairShare
    from trioproxy.routing.patience import _Booking

    class NeverAnswers(QuotaLedger):
        async def reserve(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            await trio.sleep_forever()

    cerebras = attrs.evolve(Config().cerebras, plan=None, requests_per_minute=10, tokens_per_minute=None,
                            tokens_per_day=None, api_key="csk-one")
    ledger = NeverAnswers([cerebras])
    fair = FairShare()
    fair.configure({"cerebras": cerebras}, ledger)
    ticket = fair.ticket("cerebras", "a", 1.0, 1)
    assert ticket is not None
    share = fair.providers["cerebras"]
    before = share.demands(trio.current_time())["a"][2]
    with trio.move_on_after(0.05) as waited:
        await _Booking(1, 1, None, ticket).reserve(ledger, "cerebras")
    assert waited.cancelled_caught
    assert share.demands(trio.current_time())["a"][2] == before


# --- across replicas, on a real redis-server ------------------------------------------------------


async def _three_replicas_one_client_each(nursery: trio.Nursery, redis: RedisServer, shared: bool) -> dict[str, int]:
    """Three replicas on one Redis, each serving one client (sticky connections): heavy asks
    Cerebras (12 requests a minute) every second, light and double every 2 s, for three
    minutes; what each got in the last two. With `shared`, the replicas exchange their
    clients' figures every second, as the proxy does."""
    from trioproxy.quota.clients import ClientBook
    from trioproxy.quota.contract import Reservation
    from trioproxy.quota.redis.client_figures import RedisClientFigures
    from trioproxy.routing.client_exchange import ClientExchange
    from trioproxy.routing.fair_share import FairShare

    store_clock = Clock()
    now = [0.0]
    provider = cerebras(requests_per_minute=12)
    ledgers = await replicas(nursery, redis, [provider], store_clock)
    clients = (("heavy", 1.0, 1), ("light", 1.0, 2), ("double", 2.0, 2))
    fairs, exchanges = [], []
    for index, ledger in enumerate(ledgers):
        fair = FairShare(clock=lambda: now[0])
        fair.configure({"cerebras": provider}, ledger)
        fairs.append(fair)
        exchanges.append(ClientExchange(RedisClientFigures(ledger.store, "test:"), f"r{index}", ClientBook.for_clients(()), fair,
                                        clock=lambda: now[0]))
    got = {name: 0 for name, _, _ in clients}
    for second in range(180):
        now[0], store_clock.time = float(second), store_clock.time + (1 if second else 0)
        for ledger in ledgers:
            await ledger.refresh()
        if shared:
            for exchange in exchanges:
                await exchange.exchange()
        for (name, weight, every), fair, ledger in zip(clients, fairs, ledgers):
            if second % every:
                continue
            ticket = fair.ticket("cerebras", name, weight, 100)
            assert ticket is not None
            if ticket.refusal() is None and isinstance(await ledger.reserve("cerebras", 100), Reservation):
                ticket.took()
                got[name] += second >= 60
    return got


async def test_three_replicas_share_the_fast_provider_fairly_through_redis(nursery: trio.Nursery, redis: RedisServer) -> None:
    got = await _three_replicas_one_client_each(nursery, redis, shared=True)
    assert 20 <= sum(got.values()) <= 26, got
    assert got["double"] == pytest.approx(2 * got["light"], abs=3), got
    assert got["heavy"] == pytest.approx(got["light"], abs=3), got


async def test_without_the_exchange_each_replica_sees_one_client_and_the_heavy_one_takes_most(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    got = await _three_replicas_one_client_each(nursery, redis, shared=False)
    assert got["heavy"] > got["light"] + 3 and got["heavy"] > got["double"], got


def test_a_client_held_past_the_active_minute_still_gets_its_share_computed() -> None:
    """Patience may hold a request longer than a minute: its client's figures leave the windows
    meanwhile, yet asking again must be answered (it was a KeyError, a 500), and while the
    provider is untouched nobody is held back."""
    from trioproxy.config.schema import Config
    from trioproxy.quota.ledger import QuotaLedger
    from trioproxy.routing.fair_share import ProviderShare

    clock = trio.testing.MockClock()
    cerebras = Config().cerebras
    share = ProviderShare(cerebras, QuotaLedger([cerebras], clock=clock.current_time), clock=clock.current_time)
    share.asked("patient", 1.0, UNIT // 10)
    clock.jump(61)
    share.asked("busy", 1.0, UNIT // 10)
    share.asked("other", 1.0, UNIT // 10)
    assert share.refusal("patient", UNIT // 10) is None
    assert "patient" in share.demands(clock.current_time())


async def test_a_request_the_provider_refused_costs_nothing_of_the_clients_share(
    nursery: trio.Nursery, providers: Providers
) -> None:
    """A 4xx ran nothing: the ledger books the request and none of its tokens, and the client's
    share likewise (else it would be held back for tokens that never ran)."""
    from support.chat import chat
    from support.proxies import proxy_config
    from trioproxy.errors import ProxyError
    from trioproxy.providers.upstream import Deadlines, ProviderClient, Upstream
    from trioproxy.quota.cooldown import CooldownTimers
    from trioproxy.quota.ledger import QuotaLedger
    from trioproxy.routing.fair_share import FairShare
    from trioproxy.routing.request import ChatRequest
    from trioproxy.routing.router import Router
    from trioproxy.secrets import Sanitizer

    config = proxy_config(providers)
    clients = [ProviderClient.for_provider(p, 5.0) for p in (config.cerebras, config.chutes)]
    upstreams = [Upstream(p, c, Sanitizer(()), Deadlines(10, 10, 10))
                 for p, c in zip((config.cerebras, config.chutes), clients)]
    ledger = QuotaLedger([config.cerebras, config.chutes])
    fair = FairShare()
    fair.configure({"cerebras": config.cerebras}, ledger)
    router = Router(upstreams, ledger, CooldownTimers(nursery, ledger), 300, 5, fair_share=fair)
    providers.cerebras.faults.status = 400
    with trio.fail_after(10):
        try:
            await router.take(ChatRequest(body=chat(), stream=False, client="agent")).complete()
        except ProxyError as error:
            assert error.status == 400
    share = fair.providers["cerebras"]
    assert share.demands(trio.current_time())["agent"][2] == share.cost(0)  # the request, none of its tokens
    for client in clients:
        await client.aclose()


async def test_a_replica_publishing_figures_of_another_shape_is_left_out(nursery: trio.Nursery, redis: RedisServer) -> None:
    """Figures this replica cannot read (another version's, a corrupted key) are skipped: the
    exchange goes on with the good ones instead of raising (which stopped the proxy)."""
    import coredis

    from trioproxy.quota.clients import ClientBook
    from trioproxy.quota.redis.client_figures import RedisClientFigures
    from trioproxy.routing.client_exchange import ClientExchange
    from trioproxy.routing.fair_share import FairShare

    now = [0.0]
    provider = cerebras(requests_per_minute=12)
    ledgers = await replicas(nursery, redis, [provider], Clock(), count=2)
    fairs = [FairShare(clock=lambda: now[0]) for _ in ledgers]
    exchanges = []
    for index, (fair, ledger) in enumerate(zip(fairs, ledgers)):
        fair.configure({"cerebras": provider}, ledger)
        exchanges.append(ClientExchange(RedisClientFigures(ledger.store, "test:"), f"r{index}", ClientBook.for_clients(()), fair,
                                        clock=lambda: now[0]))
    assert fairs[0].ticket("cerebras", "agent", 1.0, 100) is not None
    async with coredis.Redis.from_url(redis.url, decode_responses=True) as client:
        for bad, figures in enumerate(['{"fair": {"cerebras": {"x": [1]}}}', "not json", '{"budgets": [["a", 1]]}']):
            await client.hset("test:{clients}:figures", {f"bad{bad}": figures})
            await client.zadd("test:{clients}:expiry", {f"bad{bad}": 1e12})
        await client.hset("test:{clients}:usage", {"not json": "1", '["a","r","p","requests"]': "x"})
    with trio.fail_after(10):
        await exchanges[0].exchange()
        await exchanges[1].exchange()
    assert fairs[1].providers["cerebras"].others["agent"].asked > 0


async def test_a_round_of_the_exchange_is_one_script_call_and_a_silent_replica_drops_out(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    """Publishing, adding usage and reading everyone's figures is one EVALSHA (one atomic
    step); the usage of two rounds adds up in the shared counters; a replica that stops
    publishing leaves the others' figures once its figures expire (the store's time)."""
    from trioproxy.quota.clients import ClientBook
    from trioproxy.quota.redis.client_figures import EXPIRES, RedisClientFigures
    from trioproxy.routing.client_exchange import ClientExchange
    from trioproxy.routing.fair_share import FairShare

    now, store_clock = [0.0], Clock()
    provider = cerebras(requests_per_minute=12)
    ledgers = await replicas(nursery, redis, [provider], store_clock, count=2)
    books = [ClientBook.for_clients(()) for _ in ledgers]
    fairs = [FairShare(clock=lambda: now[0]) for _ in ledgers]
    exchanges = []
    for index, (fair, ledger, book) in enumerate(zip(fairs, ledgers, books)):
        fair.configure({"cerebras": provider}, ledger)
        exchanges.append(ClientExchange(RedisClientFigures(ledger.store, "test:"), f"r{index}", book, fair, clock=lambda: now[0]))
    assert fairs[1].ticket("cerebras", "agent", 1.0, 100) is not None
    for book in books:
        book.usage.count("agent", MODEL, "cerebras", requests=1, prompt_tokens=10)
    with trio.fail_after(10):
        await exchanges[1].exchange()  # (the first call loads the script)
        calls = await script_calls(redis)
        await exchanges[0].exchange()
        assert await script_calls(redis) == calls + 1
    assert fairs[0].providers["cerebras"].others["agent"].asked > 0
    assert books[0].usage.view()["agent"]["total"]["requests"] == 2
    store_clock.time += EXPIRES + 1  # r1 publishes no more
    with trio.fail_after(10):
        await exchanges[0].exchange()
    assert fairs[0].providers["cerebras"].others == {}
