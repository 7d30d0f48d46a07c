"""Refusals people can see: the message on the log line, the dashboard and /v1/status; counts by
status in `trioproxy status`; unknown paths by method and path family, also in /metrics."""

import logging

import httpx
import pytest
import trio
import trio.testing

from support.fault_server import dumps
from support.metrics import sample_values
from support.raw_http import RawConnection, raw_request
from support.proxies import Providers, StartProxy
from trioproxy.server.refusals import PATH_FAMILIES, path_family
from trioproxy.cli.status_table import render_table
from trioproxy.testing.emulator import Faults

MODEL = "qwen-3-coder"
CLIENT_KEY = "sk-client-key-that-must-not-show"


def origin(base_url: str) -> str:
    return base_url.removesuffix("/v1")


async def test_a_refusal_shows_its_message_everywhere_people_look(
        start_proxy: StartProxy, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    proxy = await start_proxy()
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=10) as http:
        body = {"model": MODEL, "input": [{"type": "message", "role": "user", "content": "hi"},
                                          {"type": "function_call_output", "output": "x"}]}
        refused = await http.post("/responses", json=body, headers={"x-request-id": "no-call-id"})
        assert refused.status_code == 400
        await trio.testing.wait_all_tasks_blocked()
        status = (await http.get("/status")).json()
        state = (await http.get(origin(proxy.base_url) + "/dashboard/api/state")).json()

    expected = refused.json()["error"]["message"]
    assert "input[1]" in expected
    [line] = [r.getMessage() for r in caplog.records if "no-call-id" in r.getMessage() and "status=400" in r.getMessage()]
    assert f"message={expected!r}" in line
    assert state["traffic"]["recent"][0]["message"] == expected
    assert status["refusals"]["refused"] == {"400": 1}
    latest = status["refusals"]["recent"][0]
    assert (latest["request_id"], latest["api"], latest["status"], latest["message"]) == ("no-call-id", "responses", 400, expected)
    assert state["refusals"] == status["refusals"]


async def test_messages_are_scrubbed_and_cut_short(
        start_proxy: StartProxy, providers: Providers, caplog: pytest.LogCaptureFixture) -> None:
    """A client that puts a key (its own, or a provider's) where the message repeats it."""
    caplog.set_level(logging.INFO)
    proxy = await start_proxy(client_api_keys=(CLIENT_KEY,))
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=10, headers=headers) as http:
        for model in (CLIENT_KEY, providers.cerebras.api_key, "m" * 5000):
            assert (await http.post("/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]})).status_code == 404
        await http.get(origin(proxy.base_url) + f"/{CLIENT_KEY}/x")
        await trio.testing.wait_all_tasks_blocked()
        status = (await http.get("/status")).text
        state = (await http.get(origin(proxy.base_url) + "/dashboard/api/state")).text
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("trioproxy"))
    for seen in (status, state, logged):
        assert CLIENT_KEY not in seen and providers.cerebras.api_key not in seen
        assert "[redacted]" in seen
    recent = httpx.Response(200, text=status).json()["refusals"]["recent"]
    assert all(len(r["message"]) <= 203 for r in recent)  # 200 characters and "..."


async def test_refusals_and_errors_are_counted_by_status(start_proxy: StartProxy, providers: Providers) -> None:
    proxy = await start_proxy()
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=10) as http:
        good = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        assert (await http.post("/chat/completions", json=good)).status_code == 200
        assert (await http.post("/chat/completions", content=b"{", headers={"content-type": "application/json"})).status_code == 400
        assert (await http.post("/chat/completions", json={**good, "model": "gpt-9"})).status_code == 404
        providers.cerebras.faults = Faults(status=500, remaining=1)
        providers.chutes.faults = Faults(status=500, remaining=1)
        assert (await http.post("/chat/completions", json=good)).status_code == 502
        assert (await http.head(origin(proxy.base_url) + "/api/hello")).status_code == 404
        await trio.testing.wait_all_tasks_blocked()
        status = (await http.get("/status")).json()

    assert status["refusals"]["refused"] == {"400": 1, "404": 2}
    assert status["refusals"]["failed"] == {"502": 1}
    table = render_table(status)
    assert "refused by the proxy: 400 x1, 404 x2; other errors: 502 x1" in table
    assert "unknown paths: HEAD /api/* x1" in table
    assert "last: 404 refused: not_found: Unknown path /api/hello." in table


async def test_a_client_that_leaves_is_an_error_not_a_refusal(start_proxy: StartProxy, providers: Providers) -> None:
    proxy = await start_proxy()
    providers.cerebras.faults = Faults(latency=5.0, remaining=1)
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=10) as http:
        with trio.move_on_after(0.5):  # gone before the slow provider answers
            await http.post("/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
        with trio.fail_after(5):  # until the proxy has noticed the client leave
            while not (status := (await http.get("/status")).json())["refusals"]["failed"]:
                await trio.sleep(0.05)

    assert status["refusals"]["failed"] == {"499": 1} and status["refusals"]["refused"] == {}


async def test_a_client_that_sends_its_request_and_leaves_at_once_is_noticed(
        start_proxy: StartProxy, providers: Providers) -> None:
    """The request and the close may both arrive before the proxy starts on the request: the
    proxy must still stop paying for an answer nobody reads."""
    proxy = await start_proxy()
    clients = 8  # which comes first depends on the scheduler: several clients meet both orders
    providers.cerebras.faults = Faults(latency=5.0, remaining=clients)
    body = dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    for _ in range(clients):
        connection = await RawConnection.open(proxy)
        await connection.send(raw_request("POST", "/v1/chat/completions", body))
        await connection.aclose()
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=10) as http:
        with trio.fail_after(3):  # well before the slow provider would have answered
            while sum((status := (await http.get("/status")).json())["refusals"]["failed"].values()) < clients:
                await trio.sleep(0.05)

    assert status["refusals"]["failed"] == {"499": clients}


async def test_unknown_paths_are_counted_by_method_and_family_in_a_bounded_set(start_proxy: StartProxy) -> None:
    proxy = await start_proxy()
    async with httpx.AsyncClient(base_url=origin(proxy.base_url), timeout=10) as http:
        for _ in range(2):
            await http.head("/api/hello")  # Claude Code, on every run
        await http.post("/v2/chat/completions", json={})  # a client with the wrong base URL
        for number in range(PATH_FAMILIES + 10):  # a scanner
            await http.get(f"/probe{number}")
        await trio.testing.wait_all_tasks_blocked()
        status = (await http.get("/v1/status")).json()
        metrics = (await http.get("/metrics")).text

    counted = {(entry["method"], entry["path"]): entry["count"] for entry in status["refusals"]["unknown_paths"]}
    assert counted[("HEAD", "/api/*")] == 2 and counted[("POST", "/v2/*")] == 1
    assert len(counted) == PATH_FAMILIES + 1 and counted[("GET", "other")] == 12
    _, values = sample_values(metrics)
    unknown = {dict(labels)["path"]: value for (name, labels), value in values.items()
               if name == "trioproxy_unknown_path_requests_total"}
    assert unknown["/api/*"] == 2 and unknown["other"] == 12 and len(unknown) == PATH_FAMILIES + 1


@pytest.mark.parametrize(("method", "path", "family"), [
    ("HEAD", "/api/hello", ("HEAD", "/api/*")),
    ("POST", "/v1beta/models/x:generateContent", ("POST", "/v1beta/*")),
    ("GET", "/wp-admin", ("GET", "/wp-admin")),
    ("GET", "/", ("GET", "/")),
    ("BREW", "/pot", ("OTHER", "/pot")),
    ("GET", "/%3Cscript%3E/x", ("GET", "/?/*")),
    ("GET", "/" + "a" * 100, ("GET", "/?")),
])
def test_path_families_come_from_a_small_vocabulary(method: str, path: str, family: tuple[str, str]) -> None:
    assert path_family(method, path) == family
