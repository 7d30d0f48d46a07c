"""Client keys: any key by default (the original behaviour); only listed keys once some are set."""

import logging

import httpx
import openai
import pytest

from support.chat import chat
from support.proxies import Providers, StartProxy
from trioproxy.errors import ProxyError
from trioproxy.server.auth import ClientKeys, is_loopback


async def test_any_key_or_none_is_accepted_by_default(start_proxy: StartProxy) -> None:
    """Without PROXY_API_KEYS, the proxy on 127.0.0.1 serves whatever key the client sends."""
    proxy = await start_proxy()
    async with httpx.AsyncClient(base_url=proxy.base_url) as client:
        for headers in ({}, {"authorization": "Bearer whatever"}, {"authorization": "garbage"}):
            assert (await client.post("/chat/completions", json=chat(), headers=headers)).status_code == 200


async def test_only_listed_keys_are_accepted_once_set(
    providers: Providers, start_proxy: StartProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """Wrong or missing keys get OpenAI's 401 (the SDK's AuthenticationError); listed keys work; none is logged."""
    caplog.set_level(logging.DEBUG)
    proxy = await start_proxy(client_api_keys=("key-one-secret", "key-two-secret"))
    async with httpx.AsyncClient(base_url=proxy.base_url) as client:
        for headers in ({}, {"authorization": "Bearer key-one"}, {"authorization": "Basic key-one-secret"}):
            response = await client.post("/chat/completions", json=chat(), headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "invalid_api_key"
            assert (await client.get("/models", headers=headers)).status_code == 401
        ok = await client.post("/chat/completions", json=chat(), headers={"authorization": "Bearer key-two-secret"})
        assert ok.status_code == 200
        health = await client.get(proxy.base_url.removesuffix("/v1") + "/healthz")
        assert health.status_code == 200  # probes need no key
    sdk = openai.AsyncOpenAI(base_url=proxy.base_url, api_key="not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await sdk.chat.completions.create(**chat())
    await sdk.close()
    assert providers.cerebras.served == 1
    assert "secret" not in caplog.text


def test_key_check_parses_the_bearer_scheme() -> None:
    """Case-insensitive scheme, surrounding spaces ignored, nothing else accepted."""
    keys = ClientKeys(("k1",))
    keys.check("Bearer k1")
    keys.check("bearer  k1 ")
    for bad in (None, "", "k1", "Bearer", "Bearer k2", "Token k1"):
        with pytest.raises(ProxyError):
            keys.check(bad)


def test_loopback_addresses_are_recognised() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]", "127.5.5.5"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "192.168.1.2", "::", "example.com"))


async def test_binding_a_public_address_without_keys_warns(
    start_proxy: StartProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """0.0.0.0 without client keys: a loud warning at start."""
    await start_proxy(host="0.0.0.0")
    assert "WITHOUT CLIENT KEYS" in caplog.text


async def operator_views(proxy_base: str, headers: dict[str, str]) -> tuple[httpx.Response, ...]:
    root = proxy_base.removesuffix("/v1")
    async with httpx.AsyncClient() as client:
        return (
            await client.get(root + "/healthz", headers=headers),
            await client.get(root + "/metrics", headers=headers),
            await client.get(proxy_base + "/status", headers=headers),
        )


async def test_operator_views_need_a_client_key_once_keys_are_set(start_proxy: StartProxy) -> None:
    """With PROXY_API_KEYS: /healthz says only its status without a key; /metrics and /v1/status refuse."""
    proxy = await start_proxy(client_api_keys=("client-key-secret",))
    health, metrics, status = await operator_views(proxy.base_url, {})
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    for refused in (metrics, status):
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    health, metrics, status = await operator_views(proxy.base_url, {"authorization": "Bearer client-key-secret"})
    assert "cerebras" in health.json()["providers"]
    assert metrics.status_code == 200 and "trioproxy_provider_up" in metrics.text
    assert status.status_code == 200 and status.json()["providers"][0]["name"] == "cerebras"


async def test_operator_keys_are_separate_from_client_keys(start_proxy: StartProxy) -> None:
    """With OPERATOR_API_KEYS: only those open the operator views; client keys still serve chat only."""
    proxy = await start_proxy(client_api_keys=("client-key-secret",), operator_api_keys=("ops-key-secret",))
    health, metrics, status = await operator_views(proxy.base_url, {"authorization": "Bearer client-key-secret"})
    assert health.json() == {"status": "ok"} and metrics.status_code == status.status_code == 401
    assert "OPERATOR_API_KEYS" in metrics.json()["error"]["message"]
    health, metrics, status = await operator_views(proxy.base_url, {"authorization": "Bearer ops-key-secret"})
    assert "providers" in health.json() and metrics.status_code == status.status_code == 200
    async with httpx.AsyncClient(base_url=proxy.base_url) as client:
        refused = await client.post("/chat/completions", json=chat(), headers={"authorization": "Bearer ops-key-secret"})
        served = await client.post("/chat/completions", json=chat(), headers={"authorization": "Bearer client-key-secret"})
    assert (refused.status_code, served.status_code) == (401, 200)


async def test_operator_views_stay_open_without_any_keys(start_proxy: StartProxy) -> None:
    """The default on 127.0.0.1: no keys anywhere, every view open, as before."""
    proxy = await start_proxy()
    health, metrics, status = await operator_views(proxy.base_url, {})
    assert "providers" in health.json() and metrics.status_code == status.status_code == 200
