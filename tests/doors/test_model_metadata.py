"""Model lists give each route's context window and output limit, in the shape the client asked
for: OpenAI's list (`context_window`, `max_output_tokens`) and Anthropic's (`max_input_tokens`,
`max_tokens`), read through the official SDKs."""

import anthropic
import httpx
import openai

from support.proxies import Providers, Proxy, StartProxy
from trioproxy.config.schema import ModelRoute, RouteProvider

MODEL = "qwen-3-coder"


def openai_client(proxy: Proxy) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=proxy.base_url, api_key="sk-any", max_retries=0, timeout=10.0)


def anthropic_client(proxy: Proxy) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=proxy.base_url.removesuffix("/v1"), api_key="sk-any", max_retries=0,
                                    timeout=10.0)


async def test_the_default_route_tells_its_figures_to_both_sdks(proxy: Proxy) -> None:
    """Unset, the figures come from the providers: Cerebras's context window (131,072), and as
    output limit that window too, since Chutes answers uncapped."""
    listed = (await openai_client(proxy).models.list()).data
    page = await anthropic_client(proxy).models.list()
    card = await anthropic_client(proxy).models.retrieve(MODEL)

    assert [(m.id, m.model_extra) for m in listed] == [(MODEL, {"context_window": 131_072, "max_output_tokens": 131_072})]
    assert [(m.id, m.type, m.max_input_tokens, m.max_tokens) for m in page.data] == [(MODEL, "model", 131_072, 131_072)]
    assert (card.id, card.display_name, card.lifecycle, card.max_input_tokens) == (MODEL, MODEL, "active", 131_072)
    assert page.has_more is False


async def test_the_settings_give_the_figures(start_proxy: StartProxy) -> None:
    proxy = await start_proxy(model_context_window=65_536, model_max_output_tokens=8_192)
    gemini = await gemini_models(proxy)
    card = await openai_client(proxy).models.retrieve(MODEL)
    anthropic_card = await anthropic_client(proxy).models.retrieve(MODEL)

    assert card.model_extra == {"context_window": 65_536, "max_output_tokens": 8_192}
    assert (anthropic_card.max_input_tokens, anthropic_card.max_tokens) == (65_536, 8_192)
    assert [(m["inputTokenLimit"], m["outputTokenLimit"]) for m in gemini["models"]] == [(65_536, 8_192)]


async def test_only_the_output_limit_set_keeps_the_derived_window(start_proxy: StartProxy) -> None:
    proxy = await start_proxy(model_max_output_tokens=16_384)
    card = await openai_client(proxy).models.retrieve(MODEL)

    assert card.model_extra == {"context_window": 131_072, "max_output_tokens": 16_384}


async def gemini_models(proxy: Proxy) -> dict:
    """Google's model list, as its SDKs ask for it (a Google key on the request)."""
    async with httpx.AsyncClient(base_url=proxy.base_url.removesuffix("/v1"), timeout=10) as http:
        return (await http.get("/v1beta/models", headers={"x-goog-api-key": "sk-any"})).json()


async def test_each_route_has_its_own_and_unknown_figures_are_left_out(
        start_proxy: StartProxy, providers: Providers) -> None:
    routes = (
        ModelRoute(MODEL, (RouteProvider(provider="cerebras"), RouteProvider(provider="chutes")),
                   context_window=100_000, max_output_tokens=4_096),
        ModelRoute("big", (RouteProvider(provider="chutes", context_window=262_144),)),
        ModelRoute("plain", (RouteProvider(provider="chutes"),)),
    )
    proxy = await start_proxy(models=routes)
    listed = {m.id: m.model_extra for m in (await openai_client(proxy).models.list()).data}
    page = {m.id: (m.max_input_tokens, m.max_tokens) for m in (await anthropic_client(proxy).models.list()).data}

    assert listed == {MODEL: {"context_window": 100_000, "max_output_tokens": 4_096},
                      "big": {"context_window": 262_144, "max_output_tokens": 262_144}, "plain": {}}
    assert page == {MODEL: (100_000, 4_096), "big": (262_144, 262_144), "plain": (None, None)}
