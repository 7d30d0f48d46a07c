"""The dashboard's HTTP side (paths, keys, state) and its fixed-size history.

What the page does with the state is tested in a real browser: tests/server/test_dashboard_browser.py.
"""

import httpx
import trio.testing

from support.chat import PROXY_MODEL, chat, client_for
from support.proxies import Providers, StartProxy
from trioproxy.routing.request import RouteRecord
from trioproxy.server.history import MINUTES, RECENT_REQUESTS, TrafficHistory
from trioproxy.server.served import ServedRequest
from trioproxy.testing.emulator import Faults


def root(base_url: str) -> str:
    return base_url.removesuffix("/v1")


async def test_page_and_assets_are_served_and_unknown_paths_are_404(start_proxy: StartProxy) -> None:
    """`/`, `/dashboard` and `/dashboard/` serve the page under a strict CSP; the rest of the prefix is 404."""
    proxy = await start_proxy()
    async with httpx.AsyncClient(base_url=root(proxy.base_url)) as client:
        pages = [await client.get(path) for path in ("/", "/dashboard", "/dashboard/")]
        for page in pages:
            assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
            assert "script-src 'self'" in page.headers["content-security-policy"]
            assert page.text == pages[0].text and "/dashboard/assets/dashboard.js" in page.text
        for asset, kind in (("dashboard.js", "text/javascript"), ("uPlot.iife.min.js", "text/javascript"),
                            ("uPlot.min.css", "text/css"), ("uPlot.LICENSE.txt", "text/plain")):
            response = await client.get("/dashboard/assets/" + asset)
            assert response.status_code == 200 and response.headers["content-type"].startswith(kind), asset
        for path in ("/dashboard/nope", "/dashboard/assets/nope.js", "/dashboard/assets/../app.py",
                     "/dashboard/api/", "/dashboardx", "/dashboard/assets/"):
            response = await client.get(path)
            assert response.status_code == 404, path
            assert response.json()["error"]["code"] == "not_found"
        refused = await client.post("/dashboard/api/state")
        assert refused.status_code == 405 and refused.headers["allow"] == "GET"
        assert refused.json()["error"]["code"] == "method_not_allowed"


async def test_state_needs_a_client_key_when_keys_are_set(start_proxy: StartProxy) -> None:
    """401 in OpenAI's shape without or with a wrong key; the page itself stays public (it holds no data)."""
    proxy = await start_proxy(client_api_keys=("dash-key-secret",))
    async with httpx.AsyncClient(base_url=root(proxy.base_url)) as client:
        assert (await client.get("/dashboard/")).status_code == 200
        for headers in ({}, {"authorization": "Bearer wrong"}):
            response = await client.get("/dashboard/api/state", headers=headers)
            assert response.status_code == 401
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}
            assert response.json()["error"]["code"] == "invalid_api_key"
        ok = await client.get("/dashboard/api/state", headers={"authorization": "Bearer dash-key-secret"})
    assert ok.status_code == 200 and ok.json()["keys_required"] is True
    assert "dash-key-secret" not in ok.text


async def test_state_shows_quota_traffic_errors_and_recent_requests(
    providers: Providers, start_proxy: StartProxy
) -> None:
    """After a preferred request, a fallback and a failed one: counts, reroutes, errors, the recent list."""
    proxy = await start_proxy(cerebras={"requests_per_minute": 1})
    async with client_for(proxy) as client:
        assert (await ask(client, "one")).status_code == 200
        assert (await ask(client, "two")).status_code == 200  # rpm spent
        providers.chutes.faults = Faults(status=500, remaining=1)
        assert (await ask(client, "three")).status_code == 502
        bad = await client.post(proxy.base_url + "/chat/completions", content=b"{", headers={"x-request-id": "four", "content-type": "application/json"})
        assert bad.status_code == 400
        await trio.testing.wait_all_tasks_blocked()
        state = (await client.get(root(proxy.base_url) + "/dashboard/api/state")).json()
    assert state["keys_required"] is False
    cerebras = state["providers"][0]["accounts"]["cerebras"]
    assert cerebras["rpm"] == {"used": 1, "limit": 1}
    assert 0 < cerebras["day_resets_seconds"] <= 86_400
    traffic = state["traffic"]
    assert [r["request_id"] for r in traffic["recent"]] == ["four", "three", "two", "one"]
    one = traffic["recent"][-1]
    assert (one["api"], one["route"], one["provider"], one["reason"], one["status"], one["stream"]) == (
        "chat", PROXY_MODEL, "cerebras", "preferred", 200, False)
    assert traffic["recent"][0]["route"] == "-"  # refused before a route was chosen
    assert one["prompt_tokens"] > 0 and one["latency_ms"] > 0
    for view in (traffic["last_hour"], traffic["since_start"]):
        assert view["requests"] == {"cerebras": 1, "chutes": 2, "-": 1}
        assert view["reroutes"] == {"fallback: rpm": 2}
        assert view["errors"] == {"400": 1, "502": 1}
        assert view["latency"]["cerebras"]["count"] == 1 and view["latency"]["cerebras"]["p50_ms"] > 0
    assert len(traffic["minutes"]) == MINUTES and traffic["per_minute"]["requests"]["chutes"][-1] == 2


async def ask(client: httpx.AsyncClient, request_id: str) -> httpx.Response:
    return await client.post("/chat/completions", json=chat(), headers={"x-request-id": request_id})


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def record(provider: str, status: int = 200, request_id: str = "r") -> ServedRequest:
    route = RouteRecord(provider=provider, account=provider, reason="preferred", prompt_tokens=10, completion_tokens=5)
    return ServedRequest(request_id, "chat", route, status=status, started=0.0)


def test_history_stays_the_same_size_however_long_it_runs() -> None:
    """Three hours of traffic: the ring keeps its last requests, the hour only its 60 minutes."""
    clock = Clock(1_000_000 * 60.0)
    history = TrafficHistory(clock)
    for minute in range(180):
        for second in range(0, 60, 3):
            clock.now = (1_000_000 + minute) * 60.0 + second
            history.observe(record("cerebras", request_id="x" * 500), "preferred", 0.1, None)
    assert len(history._recent) == RECENT_REQUESTS and len(history._minutes) == MINUTES
    state = history.snapshot()
    assert state["last_hour"]["requests"] == {"cerebras": 60 * 20}
    assert state["since_start"]["requests"] == {"cerebras": 180 * 20}
    assert state["per_minute"]["tokens"]["cerebras"] == [20 * 15] * MINUTES
    assert len(state["recent"][0]["request_id"]) == 80  # ids from clients are cut short
    clock.now += 2 * 3600  # two idle hours: the last hour is empty, the totals stay
    idle = history.snapshot()
    assert idle["last_hour"]["requests"] == {} and idle["per_minute"]["requests"]["cerebras"] == [0] * MINUTES
    assert idle["since_start"]["requests"] == {"cerebras": 3600}


def test_history_hour_counts_the_current_minute_on_every_poll() -> None:
    """Polls within a minute see its new requests; a minute later they count among the earlier ones."""
    clock = Clock(600.0)
    history = TrafficHistory(clock)
    history.observe(record("cerebras"), "preferred", 0.1, None)
    assert history.snapshot()["last_hour"]["requests"] == {"cerebras": 1}
    clock.now += 10
    history.observe(record("chutes"), "preferred", 0.1, None)
    assert history.snapshot()["last_hour"]["requests"] == {"cerebras": 1, "chutes": 1}
    clock.now += 60
    history.observe(record("chutes"), "preferred", 0.1, None)
    state = history.snapshot()
    assert state["last_hour"]["requests"] == {"cerebras": 1, "chutes": 2}
    assert state["per_minute"]["requests"]["chutes"][-2:] == [1, 1]
    clock.now += 59 * 60  # the first minute has left the hour
    assert history.snapshot()["last_hour"]["requests"] == {"chutes": 1}


def test_history_percentiles_are_within_a_bucket_of_the_truth() -> None:
    """Latencies 1..1000 ms: p50 near 500 ms, p99 near 990 ms, each within the 25 % bucket width."""
    history = TrafficHistory(Clock(60.0))
    for ms in range(1, 1001):
        history.observe(record("chutes"), "preferred", ms / 1000, ms / 2000)
    latency = history.snapshot()["last_hour"]["latency"]["chutes"]
    first_byte = history.snapshot()["last_hour"]["first_byte"]["chutes"]
    assert latency["count"] == 1000
    assert 500 / 1.25 <= latency["p50_ms"] <= 500 * 1.25
    assert 990 / 1.25 <= latency["p99_ms"] <= 990 * 1.25
    assert 250 / 1.25 <= first_byte["p50_ms"] <= 250 * 1.25
    long_stream = TrafficHistory(Clock(60.0))
    long_stream.observe(record("chutes"), "chat", 600.0, 0.2)  # ten minutes still fall in a bucket
    assert 600_000 / 1.25 <= long_stream.snapshot()["since_start"]["latency"]["chutes"]["p99_ms"] <= 600_000 * 1.25
