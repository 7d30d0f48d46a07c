"""Operator views: /v1/status, `trioproxy status`, /metrics and the per-response headers."""

import re
import sys

import httpx
import pytest
import trio
import trio.testing

from support.chat import chat, client_for, post, stream
from support.metrics import sample_values
from support.proxies import Providers, StartProxy
from trioproxy.cli.status_table import render_table


async def test_status_reports_quota_traffic_and_reroutes(providers: Providers, start_proxy: StartProxy) -> None:
    """Per provider and key: usable, windows used/limit, served counts, reroute reasons."""
    proxy = await start_proxy(cerebras={"requests_per_minute": 2})
    async with client_for(proxy) as client:
        for _ in range(3):
            assert (await post(client, chat())).status_code == 200
        status = (await client.get(proxy.base_url + "/status")).json()
    cerebras, chutes = status["providers"]
    assert cerebras["name"] == "cerebras" and cerebras["usable"] is True
    # The first candidate the emulated catalogue lists serves; the candidates come along.
    assert cerebras["model"] == "gpt-oss-120b" and cerebras["candidates"] == list(proxy.config.cerebras.model)
    assert cerebras["accounts"]["cerebras"]["rpm"] == {"used": 2, "limit": 2}
    assert cerebras["served_since_start"]["requests"] == 2
    assert chutes["served_since_start"]["requests"] == 1
    assert cerebras["served_since_start"]["completion_tokens"] > 0
    assert status["reroutes"] == {"fallback: rpm": 1}
    table = render_table(status)
    assert re.search(r"^cerebras\s+gpt-oss-120b\s+cerebras\s+yes\s+-\s+2/2\b", table, re.MULTILINE), table
    assert "fallback: rpm x1" in table


@pytest.mark.xdist_group("processes")
async def test_status_command_prints_the_table(start_proxy: StartProxy) -> None:
    """`trioproxy status --url` against a running proxy prints one row per account."""
    proxy = await start_proxy()
    result = await trio.run_process(
        [sys.executable, "-m", "trioproxy", "status", "--url", proxy.base_url],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0].split()[:4] == ["provider", "model", "account", "usable"]
    assert [line.split()[0] for line in lines[1:3]] == ["cerebras", "chutes"]


def value(values: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return values[(name, frozenset(labels.items()))]


async def test_metrics_count_requests_tokens_reroutes_and_quota(
    providers: Providers, start_proxy: StartProxy
) -> None:
    """Prometheus text, read by prometheus_client's parser: counters, histograms, live gauges."""
    proxy = await start_proxy(cerebras={"requests_per_minute": 1})
    async with client_for(proxy) as client:
        assert (await post(client, chat())).status_code == 200
        assert (await stream(client, chat(stream=True))).status == 200
        await trio.testing.wait_all_tasks_blocked()  # a stream is accounted for after its last byte
        response = await client.get(proxy.base_url.removesuffix("/v1") + "/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    types, values = sample_values(response.text)
    assert "{}" not in response.text  # no empty label sets
    assert types["trioproxy_requests"] == "counter" and types["trioproxy_latency_seconds"] == "histogram"
    assert types["trioproxy_provider_up"] == types["trioproxy_quota_remaining"] == "gauge"
    assert value(values, "trioproxy_requests_total", provider="cerebras", stream="no", status="200") == 1
    assert value(values, "trioproxy_requests_total", provider="chutes", stream="yes", status="200") == 1
    assert value(values, "trioproxy_reroutes_total", reason="fallback: rpm") == 1
    assert value(values, "trioproxy_first_byte_seconds_count", provider="chutes") == 1
    assert value(values, "trioproxy_overhead_seconds_count") == 2
    assert value(values, "trioproxy_quota_remaining", provider="cerebras", account="cerebras", window="rpm") == 0
    assert value(values, "trioproxy_cooldown_active", provider="cerebras", account="cerebras") == 0
    assert value(values, "trioproxy_provider_up", provider="chutes") == 1
    assert value(values, "trioproxy_tokens_total", provider="cerebras", kind="prompt") > 0


async def test_metrics_of_two_proxies_are_their_own(start_proxy: StartProxy) -> None:
    """A registry per proxy: what one counts, the other does not show."""
    first, second = await start_proxy(), await start_proxy()
    async with client_for(first) as client:
        assert (await post(client, chat())).status_code == 200
        scraped = [(await client.get(proxy.base_url.removesuffix("/v1") + "/metrics")).text for proxy in (first, second)]
    counts = [sample_values(text)[1].get(("trioproxy_overhead_seconds_count", frozenset()), 0) for text in scraped]
    assert counts == [1, 0]


async def test_every_answer_carries_request_id_and_overhead(start_proxy: StartProxy) -> None:
    """x-request-id (the client's or a new one) and the proxy's own overhead in ms, streams included."""
    proxy = await start_proxy()
    async with httpx.AsyncClient(base_url=proxy.base_url) as client:
        plain = await client.post("/chat/completions", json=chat(), headers={"x-request-id": "abc-123"})
        async with client.stream("POST", "/chat/completions", json=chat(stream=True)) as streamed:
            await streamed.aread()
    assert plain.headers["x-request-id"] == "abc-123"
    assert len(streamed.headers["x-request-id"]) >= 8
    for response in (plain, streamed):
        assert 0 <= float(response.headers["x-trioproxy-overhead-ms"]) < 1_000
