"""Today's catalogues: candidate models in order of preference, the first one a provider lists
serves, the choice moves with the catalogue, and none offered is a 503 naming the candidates."""

import logging
import tomllib
from pathlib import Path

import anthropic
import openai
import pytest
import trio

from support.chat import assert_openai_error, chat, client_for, post, wait_for_health
from support.command import run, scrubbed_env
from support.gemini import client as gemini_client
from support.gemini import sdk
from support.proxies import Providers, Proxy, StartProxy
from trioproxy.config.schema import CEREBRAS_MODELS, CHUTES_MODELS, Config
from trioproxy.config.load import load_config
from trioproxy.process.demo import demo_choices
from trioproxy.providers.health import ProviderHealth
from trioproxy.testing import emulator
from trioproxy.testing.emulator import completion_text

PROXY_MODEL = "qwen-3-coder"


async def test_a_fresh_start_with_keys_answers_on_every_door(providers: Providers, proxy: Proxy) -> None:
    """Emulators listing only today's ids, default settings but keys and URLs: Chat Completions,
    Responses, Messages and Gemini all answer, from Cerebras's first candidate it lists."""
    assert not set(CEREBRAS_MODELS[:1]) & set(emulator.CEREBRAS_RETIRED)
    base = proxy.base_url
    chat_answer = await openai.AsyncOpenAI(base_url=base, api_key="k", max_retries=0).chat.completions.create(
        model=PROXY_MODEL, messages=[{"role": "user", "content": "hi"}])
    response = await openai.AsyncOpenAI(base_url=base, api_key="k", max_retries=0).responses.create(
        model=PROXY_MODEL, input="hi")
    message = await anthropic.AsyncAnthropic(base_url=base.removesuffix("/v1"), api_key="k", max_retries=0).messages.create(
        model=PROXY_MODEL, max_tokens=100, messages=[{"role": "user", "content": "hi"}])
    gemini = await sdk(lambda: gemini_client(proxy).models.generate_content(model=PROXY_MODEL, contents="hi"))
    text = completion_text("cerebras")
    assert gemini.text == text
    assert chat_answer.choices[0].message.content == text and chat_answer.model == PROXY_MODEL
    assert response.output_text == text
    assert message.content[0].text == text  # type: ignore[union-attr]
    assert [body["model"] for body in providers.cerebras.received] == [emulator.CEREBRAS_MODEL] * 4
    assert providers.chutes.received == []


async def test_chutes_serves_its_first_listed_candidate_when_cerebras_cannot(
    providers: Providers, start_proxy: StartProxy
) -> None:
    providers.cerebras.faults.status = 500
    proxy = await start_proxy()
    async with client_for(proxy) as client:
        assert (await post(client, chat())).status_code == 200
    assert [body["model"] for body in providers.chutes.received] == [CHUTES_MODELS[0]]


async def test_the_choice_moves_when_the_catalogue_does(
    providers: Providers, start_proxy: StartProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """Cerebras stops listing the first candidate: the next one it lists serves (logged, shown in
    /healthz), and the first returns when it is listed again."""
    caplog.set_level(logging.INFO)
    proxy = await start_proxy(health_check_interval_ms=20)
    first, second = CEREBRAS_MODELS[0], CEREBRAS_MODELS[1]
    await wait_for_health(proxy, lambda s: s["model"] == first)
    providers.cerebras.model, providers.cerebras.more_models = second, []
    state = await wait_for_health(proxy, lambda s: s["model"] == second)
    assert state["usable"] and state["candidates"] == list(CEREBRAS_MODELS)
    async with client_for(proxy) as client:
        assert (await post(client, chat())).status_code == 200
    assert providers.cerebras.received[-1]["model"] == second
    assert f"cerebras serves model {second} (candidate 2 of {len(CEREBRAS_MODELS)}" in caplog.text
    providers.cerebras.more_models = [first]
    await wait_for_health(proxy, lambda s: s["model"] == first)
    async with client_for(proxy) as client:
        assert (await post(client, chat())).status_code == 200
    assert providers.cerebras.received[-1]["model"] == first


def test_before_a_probe_the_first_candidate_serves_until_the_provider_says_it_does_not_exist() -> None:
    health = ProviderHealth()
    assert health.choose(("a", "b", "c")) == "a"
    health.mark_missing("cerebras", "a")  # a chat answer said so (Cerebras: 503 for a retired id)
    assert health.choose(("a", "b", "c")) == "b"
    health.listed = frozenset({"c"})
    assert health.choose(("a", "b", "c")) == "c"
    health.listed = frozenset({"a", "x"})  # a probe lists it again: the listing is the truth
    health.missing -= health.listed
    assert health.choose(("a", "b")) == "a" and health.choose(("b", "c")) is None


async def test_a_model_retired_between_probes_fails_over_once_then_the_next_candidate_serves(
    providers: Providers, start_proxy: StartProxy
) -> None:
    """Cerebras retires the model serving, and the prober looks only once a day: its 503 fails
    that one request over to Chutes and moves the choice to the next candidate at once."""
    retired, next_one = "qwen-3-coder-480b", CEREBRAS_MODELS[1]
    providers.cerebras.model, providers.cerebras.more_models = retired, [next_one]
    proxy = await start_proxy(health_check_interval_ms=86_400_000, cerebras={"model": (retired, next_one)})
    await wait_for_health(proxy, lambda s: s["model"] == retired and s["model_offered"] is True)
    providers.cerebras.model, providers.cerebras.more_models = next_one, []  # retired: answers 503
    async with client_for(proxy) as client:
        for _ in range(2):
            assert (await post(client, chat())).status_code == 200
    assert [body["model"] for body in providers.cerebras.received] == [retired, next_one]
    assert providers.cerebras.served == 1 and providers.chutes.served == 1


async def test_none_of_the_candidates_offered_is_a_503_naming_the_route_and_candidates(
    providers: Providers, start_proxy: StartProxy
) -> None:
    providers.cerebras.model, providers.cerebras.more_models = "something-else", []
    providers.chutes.model, providers.chutes.more_models = "Other/Model", []
    proxy = await start_proxy(health_check_interval_ms=20)
    await wait_for_health(proxy, lambda s: s["model_offered"] is False and s["model"] is None)
    with trio.fail_after(5):
        async with client_for(proxy) as client:
            while (response := await post(client, chat())).status_code == 200:  # Chutes's probe may lag
                await trio.sleep(0.01)
    error = assert_openai_error(response.json())
    assert response.status_code == 503 and error["code"] == "model_unavailable"
    message = error["message"]
    assert f"`{PROXY_MODEL}`" in message
    assert all(model in message for model in CEREBRAS_MODELS + CHUTES_MODELS)


async def test_models_command_prints_what_each_key_offers_and_a_block_to_pin_it(
    providers: Providers, tmp_path: Path
) -> None:
    env = scrubbed_env(CEREBRAS_API_KEY=providers.cerebras.api_key, CEREBRAS_BASE_URL=providers.cerebras_url,
                       CHUTES_API_KEY=providers.chutes.api_key, CHUTES_BASE_URL=providers.chutes_url)
    result = await run(["models"], tmp_path, env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"cerebras key 1 offers: {', '.join(sorted(emulator.CEREBRAS_MODELS))}" in out
    assert f"serves key 1: {CEREBRAS_MODELS[0]}" in out and f"serves key 1: {CHUTES_MODELS[0]}" in out
    block = "\n".join(line.strip() for line in out[out.index("[[models]]"):].splitlines())
    pinned = tmp_path / "config.toml"
    pinned.write_text(block)
    config = load_config(pinned, environ={})
    cerebras, chutes = config.models[0].providers
    assert config.models[0].name == PROXY_MODEL
    assert cerebras.model == tuple(m for m in CEREBRAS_MODELS if m in emulator.CEREBRAS_MODELS)
    assert chutes.model == tuple(m for m in CHUTES_MODELS if m in emulator.CHUTES_MODELS)
    assert tomllib.loads(block)  # plain TOML, ready to paste


def test_the_demo_says_which_models_serve() -> None:
    assert demo_choices(Config()) == f"cerebras {emulator.CEREBRAS_MODEL}, chutes {emulator.CHUTES_MODEL}"
    own = Config(cerebras=Config().cerebras.__class__(name="cerebras", base_url="http://x/v1", model="mine"))
    assert demo_choices(own).startswith("cerebras mine, ")  # the demo lists a model of one's own too
