"""Model routes: several client models behind one base URL, quota per account and model, and a
catalogue that moves (models the provider stops listing are skipped, and come back)."""

import logging
import tomllib
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing

from support.chat import advance, assert_openai_error, chat, client_for, health, post, stream
from support.command import run, scrubbed_env
from support.proxies import Providers, Proxy, StartProxy, proxy_config
from support.reload import reloadable_proxy
from support.routes import CEREBRAS_OSS, CEREBRAS_QWEN, CHUTES_OSS, CHUTES_QWEN, OSS, QWEN, ROUTES, on, qwen_settings
from support.settings import load, refusal
from trioproxy.config.schema import Config, ModelRoute
from trioproxy.config.checks import keyless_route
from trioproxy.cli.status_table import render_table
from trioproxy.process.supervisor import run_proxy
from trioproxy.testing import emulator

PROBE_INTERVAL_MS = 60_000



@pytest.fixture
async def providers(nursery: trio.Nursery) -> Providers:
    """Emulators listing only the Qwen3-Coder ids (more are added by `two_models`)."""
    cerebras, chutes = emulator.cerebras(model=CEREBRAS_QWEN), emulator.chutes(model=CHUTES_QWEN)
    return Providers(cerebras, chutes, await nursery.start(emulator.serve, cerebras),
                     await nursery.start(emulator.serve, chutes))


def qwen_config(providers: Providers, **overrides: Any) -> Config:
    return proxy_config(providers, **qwen_settings(**overrides))


@pytest.fixture
def start_proxy(nursery: trio.Nursery, providers: Providers) -> StartProxy:
    """conftest's start_proxy on `qwen_config`."""

    async def start(**overrides: Any) -> Proxy:
        config = qwen_config(providers, **overrides)
        shutdown = trio.Event()
        return Proxy(await nursery.start(run_proxy, config, shutdown), config, shutdown)

    return start


@pytest.fixture
def two_models(providers: Providers) -> Providers:
    """Both emulators serve (and list) the gpt-oss model besides Qwen3-Coder."""
    providers.cerebras.more_models.append(CEREBRAS_OSS)
    providers.chutes.more_models.append(CHUTES_OSS)
    return providers


async def start_routes(start_proxy: StartProxy, **overrides: Any) -> Proxy:
    """A proxy with the two routes; returns once its first probe of the model lists is in."""
    proxy = await start_proxy(models=ROUTES, health_check_interval_ms=PROBE_INTERVAL_MS, **overrides)
    await trio.testing.wait_all_tasks_blocked()
    return proxy


def models_received(provider: Any) -> list[str]:
    return [body.get("model") for body in provider.received]


async def status(client: httpx.AsyncClient) -> dict[str, Any]:
    return (await client.get("/status")).json()


def route_status(document: dict[str, Any], name: str) -> dict[str, Any]:
    return next(route for route in document["routes"] if route["name"] == name)


# --- quota per account and model -------------------------------------------------------------


async def test_two_routes_on_one_cerebras_key_keep_separate_per_model_windows(
    two_models: Providers, start_proxy: StartProxy, mock_clock: trio.testing.MockClock
) -> None:
    """2 requests/min per model: each route gets its own two on Cerebras, then falls back to Chutes."""
    proxy = await start_routes(start_proxy, cerebras={"requests_per_minute": 2})
    async with client_for(proxy) as client:
        qwen = [await post(client, chat(model=QWEN)) for _ in range(3)]
        oss = [await post(client, chat(model=OSS)) for _ in range(3)]
        document = await status(client)
    assert [r.status_code for r in qwen + oss] == [200] * 6
    assert [r.json()["model"] for r in qwen + oss] == [QWEN] * 3 + [OSS] * 3  # the client's names
    assert models_received(two_models.cerebras) == ["qwen-3-coder-480b"] * 2 + [CEREBRAS_OSS] * 2, (models_received(two_models.chutes), document)
    assert models_received(two_models.chutes) == ["Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8", CHUTES_OSS]
    qwen_cerebras = route_status(document, QWEN)["providers"][0]
    oss_cerebras = route_status(document, OSS)["providers"][0]
    assert qwen_cerebras["model"] == "qwen-3-coder-480b" and oss_cerebras["model"] == CEREBRAS_OSS
    assert qwen_cerebras["accounts"]["cerebras"]["rpm"] == {"used": 2, "limit": 2}
    assert oss_cerebras["accounts"]["cerebras:gpt-oss-120b"]["rpm"] == {"used": 2, "limit": 2}
    assert document["providers"] == route_status(document, QWEN)["providers"]  # the first route, as before
    assert document["reroutes"] == {"fallback: rpm": 2}
    assert [p["served_since_start"]["requests"] for p in route_status(document, OSS)["providers"]] == [2, 1]
    assert route_status(document, QWEN)["served_since_start"] == 3
    table = render_table(document).splitlines()
    assert table[0].split()[:4] == ["route", "provider", "model", "account"]
    assert [row.split()[:4] for row in table[1:5]] == [
        [QWEN, "cerebras", CEREBRAS_QWEN, "cerebras"], [QWEN, "chutes", CHUTES_QWEN, "chutes"],
        [OSS, "cerebras", CEREBRAS_OSS, "cerebras:gpt-oss-120b"], [OSS, "chutes", CHUTES_OSS, "chutes:openai/gpt-oss-120b"],
    ]


async def test_a_route_may_set_its_own_limits_for_a_model(
    two_models: Providers, start_proxy: StartProxy, mock_clock: trio.testing.MockClock
) -> None:
    """A per-model override: gpt-oss gets 3 requests/min on Cerebras while Qwen keeps the provider's 1."""
    routes = (ROUTES[0], ModelRoute(OSS, (on("cerebras", CEREBRAS_OSS, requests_per_minute=3), on("chutes", CHUTES_OSS))))
    proxy = await start_proxy(models=routes, cerebras={"requests_per_minute": 1})
    async with client_for(proxy) as client:
        for model in (QWEN, QWEN, OSS, OSS, OSS, OSS):
            assert (await post(client, chat(model=model))).status_code == 200
    assert models_received(two_models.cerebras) == ["qwen-3-coder-480b"] + [CEREBRAS_OSS] * 3
    assert two_models.chutes.served == 2


# --- catalogue awareness -----------------------------------------------------------------------


async def test_a_model_gone_from_the_list_is_skipped_without_a_request_and_returns_when_listed(
    two_models: Providers, start_proxy: StartProxy, mock_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Cerebras stops listing gpt-oss: that route goes to Chutes with no request to Cerebras;
    the Qwen route keeps Cerebras; when gpt-oss is listed again, Cerebras serves it again."""
    caplog.set_level(logging.INFO)
    proxy = await start_routes(start_proxy)
    two_models.cerebras.more_models.remove(CEREBRAS_OSS)
    await advance(mock_clock, PROBE_INTERVAL_MS / 1000)  # the next probe sees the new list
    async with client_for(proxy) as client:
        assert (await post(client, chat(model=OSS))).status_code == 200
        assert (await post(client, chat(model=QWEN))).status_code == 200
        document = await status(client)
        await trio.testing.wait_all_tasks_blocked()  # the request lines are written after the responses
        assert models_received(two_models.cerebras) == ["qwen-3-coder-480b"]  # nothing wasted on gpt-oss
        assert models_received(two_models.chutes) == [CHUTES_OSS]
        assert "reason='fallback: model_missing' route=gpt-oss-120b" in caplog.text
        oss_cerebras = route_status(document, OSS)["providers"][0]
        assert oss_cerebras["model_offered"] is False and oss_cerebras["usable"] is False
        assert "not listed" in oss_cerebras["last_error"]
        assert route_status(document, QWEN)["providers"][0]["usable"] is True
        healthz = await health(client, proxy)
        assert healthz["routes"][OSS]["cerebras"]["usable"] is False and healthz["routes"][QWEN]["cerebras"]["usable"]
        metrics = (await client.get(proxy.base_url.removesuffix("/v1") + "/metrics")).text
        assert f'trioproxy_model_offered{{model="{CEREBRAS_OSS}",provider="cerebras"}} 0.0' in metrics
        assert 'trioproxy_model_offered{model="qwen-3-coder-480b",provider="cerebras"} 1.0' in metrics
        assert f'trioproxy_route_requests_total{{provider="chutes",route="{OSS}",status="200"}} 1.0' in metrics

        two_models.cerebras.more_models.append(CEREBRAS_OSS)
        await advance(mock_clock, PROBE_INTERVAL_MS / 1000)
        assert (await post(client, chat(model=OSS))).status_code == 200
    assert models_received(two_models.cerebras)[-1] == CEREBRAS_OSS


async def test_a_provider_that_dropped_the_model_gets_no_request_even_when_the_other_fails(
    two_models: Providers, start_proxy: StartProxy, mock_clock: trio.testing.MockClock
) -> None:
    """Cerebras stopped listing gpt-oss and Chutes fails: the gpt-oss route returns Chutes's error
    without asking Cerebras (not even as a last resort), while the Qwen route still uses Cerebras."""
    proxy = await start_routes(start_proxy)
    two_models.cerebras.more_models.remove(CEREBRAS_OSS)
    await advance(mock_clock, PROBE_INTERVAL_MS / 1000)
    two_models.chutes.faults.status = 500
    async with client_for(proxy) as client:
        failed = [await post(client, chat(model=OSS)) for _ in range(3)]
        stream_failed = await post(client, chat(model=OSS, stream=True))
        assert (await post(client, chat(model=QWEN))).status_code == 200
    assert [r.status_code for r in failed + [stream_failed]] == [502] * 4
    assert OSS not in failed[0].json()["error"]["message"]  # the provider's error, not the route's 503
    assert models_received(two_models.cerebras) == ["qwen-3-coder-480b"]
    assert models_received(two_models.chutes) == [CHUTES_OSS] * 4


async def test_a_404_saying_the_model_does_not_exist_marks_it_missing_at_once(
    two_models: Providers, start_proxy: StartProxy, mock_clock: trio.testing.MockClock
) -> None:
    """Between probes, Cerebras's "does not exist" answer costs one request, not one per request."""
    proxy = await start_routes(start_proxy)
    two_models.cerebras.more_models.remove(CEREBRAS_OSS)  # retired; the prober has not looked yet
    async with client_for(proxy) as client:
        assert (await post(client, chat(model=OSS))).status_code == 200  # failed over to Chutes
        assert (await post(client, chat(model=OSS))).status_code == 200
        document = await status(client)
    assert models_received(two_models.cerebras) == [CEREBRAS_OSS]  # asked once only
    assert two_models.chutes.served == 2
    oss_cerebras = route_status(document, OSS)["providers"][0]
    assert oss_cerebras["model_offered"] is False and "does not exist" in oss_cerebras["last_error"]


async def test_a_route_no_provider_offers_gets_a_503_naming_it_with_retry_after(
    two_models: Providers, start_proxy: StartProxy, mock_clock: trio.testing.MockClock
) -> None:
    """Both providers dropped gpt-oss: an OpenAI-shaped 503 naming the route, Retry-After at the
    next probe, nothing sent upstream; the other route is unaffected; listing it again heals it."""
    proxy = await start_routes(start_proxy)
    two_models.cerebras.more_models.clear()
    two_models.chutes.more_models.clear()
    await advance(mock_clock, PROBE_INTERVAL_MS / 1000)
    async with client_for(proxy) as client:
        refused = await post(client, chat(model=OSS))
        assert refused.status_code == 503
        error = assert_openai_error(refused.json())
        assert OSS in error["message"] and error["code"] == "model_unavailable"
        assert int(refused.headers["retry-after"]) == PROBE_INTERVAL_MS // 1000
        assert two_models.cerebras.received == [] and two_models.chutes.received == []
        assert (await post(client, chat(model=QWEN))).status_code == 200

        two_models.chutes.more_models.append(CHUTES_OSS)
        await advance(mock_clock, PROBE_INTERVAL_MS / 1000)
        assert (await post(client, chat(model=OSS))).status_code == 200
    assert models_received(two_models.chutes) == [CHUTES_OSS]


# --- names and aliases ---------------------------------------------------------------------------


async def test_models_lists_every_route_and_aliases_select_theirs(
    two_models: Providers, start_proxy: StartProxy, mock_clock: trio.testing.MockClock
) -> None:
    """/v1/models lists both routes; exact aliases and globs pick theirs, on every door; others 404."""
    proxy = await start_routes(start_proxy)
    async with client_for(proxy) as client:
        listed = [entry["id"] for entry in (await client.get("/models")).json()["data"]]
        card = await client.get(f"/models/{OSS}")
        by_alias = await post(client, chat(model="oss"))
        by_glob = await post(client, chat(model="gpt-oss-latest"))
        claude = await client.post("/messages", json={"model": "claude-sonnet-4-5", "max_tokens": 50,
                                                      "messages": [{"role": "user", "content": "Hi"}]})
        responses = await client.post("/responses", json={"model": OSS, "input": "Hi"})
        streamed = await stream(client, chat(model="oss"))
        unknown = await post(client, chat(model="gpt-4o"))
    assert listed == [QWEN, OSS]
    assert card.status_code == 200 and card.json()["id"] == OSS
    assert by_alias.json()["model"] == "oss" and by_glob.status_code == 200
    assert claude.status_code == 200 and claude.json()["model"] == "claude-sonnet-4-5"
    assert responses.status_code == 200
    assert streamed.status == 200 and {event["model"] for event in streamed.events[:-1]} == {"oss"}
    assert models_received(two_models.cerebras) == [CEREBRAS_OSS, CEREBRAS_OSS, "qwen-3-coder-480b", CEREBRAS_OSS,
                                                    CEREBRAS_OSS]
    assert unknown.status_code == 404
    error = assert_openai_error(unknown.json())
    assert f"`{QWEN}`, `{OSS}`" in error["message"] and error["code"] == "model_not_found"


# --- settings ----------------------------------------------------------------------------------


def test_without_routes_the_original_variables_make_the_one_route(tmp_path: Path) -> None:
    """PROXY_MODEL_NAME, MODEL_ALIASES, the model names and Cerebras limits build the single route."""
    config = load(tmp_path, environ={
        "PROXY_MODEL_NAME": "coder", "MODEL_ALIASES": "claude-*,gpt-4o", "CEREBRAS_MODEL_NAME": "qwen-3.8-27b",
        "CHUTES_MODEL_NAME": "Qwen/Other", "CEREBRAS_REQUESTS_PER_MINUTE": "7",
        "CEREBRAS_API_KEY": "csk-x", "CHUTES_API_KEY": "cpk_x",
    })
    (route,) = config.routes
    assert route.name == "coder" and route.aliases == ("claude-*", "gpt-4o")
    cerebras, chutes = config.route_providers(route)
    assert (cerebras.name, cerebras.model, cerebras.requests_per_minute) == ("cerebras", ("qwen-3.8-27b",), 7)
    assert (chutes.name, chutes.model) == ("chutes", ("Qwen/Other",))
    assert config.route_providers(route)[0] == config.cerebras  # the provider's settings, untouched


def test_a_routes_table_loads_from_toml(tmp_path: Path) -> None:
    """[[models]] with [[models.providers]] tables or inline providers, overrides inherited or set."""
    config = load(tmp_path, """
[[models]]
name = "qwen-3-coder"
aliases = ["claude-*"]
[[models.providers]]
provider = "cerebras"
[[models.providers]]
provider = "chutes"

[[models]]
name = "gpt-oss-120b"
providers = [
  { provider = "cerebras", model = "gpt-oss-120b", tokens_per_minute = 240000, adaptation = { strip_tool_strict = false } },
  { provider = "chutes", model = "openai/gpt-oss-120b" },
]
""", environ={"CEREBRAS_API_KEY": "csk-x"})
    assert [route.name for route in config.routes] == ["qwen-3-coder", "gpt-oss-120b"]
    oss = config.route_providers(config.routes[1])
    assert [p.name for p in oss] == ["cerebras"]  # chutes has no key: not serving
    assert oss[0].model == ("gpt-oss-120b",) and oss[0].tokens_per_minute == 240_000
    assert oss[0].requests_per_minute is None and oss[0].plan == "code-pro"  # inherited from [cerebras]
    assert oss[0].adaptation.strip_tool_strict is False and oss[0].adaptation.drop_fields == ()


_ROUTE = '[[models]]\nname = "{name}"\naliases = {aliases}\nproviders = [{providers}]\n'


def _route(name: str, providers: str = '{ provider = "cerebras" }', aliases: str = "[]") -> str:
    return _ROUTE.format(name=name, aliases=aliases, providers=providers)


@pytest.mark.parametrize(
    ("toml", "key", "words"),
    [
        (_route("a", '{ provider = "groq" }'), "models.0.providers.0.provider", "groq"),
        (_route("a") + _route("a"), "models.1.name", "'a' is already used"),
        (_route("a", aliases='["x*"]') + _route("b", aliases='["x*"]'), "models.1.aliases", "'x*'"),
        (_route("a") + _route("b", aliases='["a"]'), "models.1.aliases", "'a' is already used"),
        (_route("a", "") , "models.0.providers", "names no provider"),
        (_route(""), "models.0.name", "must not be empty"),
        (_route("a", aliases='[""]'), "models.0.aliases", "must not be empty"),
        (_route("a", '{ provider = "cerebras", model = "m", requests_per_minute = 5 }')
         + _route("b", '{ provider = "cerebras", model = "m", requests_per_minute = 6 }'),
         "models.1.providers.0", "one model has one quota"),
        ('model_aliases = ["claude-*"]\n' + _route("a"), "model_aliases", "own `aliases`"),
        (_route("a", '{ provider = "cerebras", requests_per_minute = 0 }'), "models.0.providers.0.requests_per_minute", "greater than 0"),
        (_route("a", '{ provider = "cerebras", modle = "x" }'), "models.0.providers.0.modle", "unknown key"),
        (_route("a", '"cerebras"'), "models.0.providers.0", "expected a table, got a string"),
    ],
)
def test_route_mistakes_are_refused_in_one_line_naming_the_key(tmp_path: Path, toml: str, key: str, words: str) -> None:
    message = refusal(tmp_path, toml)
    assert message.startswith(f"{key}:"), message
    assert words in message and "config.toml" in message, message


def test_a_route_without_a_keyed_provider_is_named(tmp_path: Path) -> None:
    """Serving needs a key for some provider of every route; the message names the variable."""
    config = load(tmp_path, _route("a") + _route("b", '{ provider = "chutes" }'), environ={"CEREBRAS_API_KEY": "csk-x"})
    problem = keyless_route(config)
    assert problem is not None and "models.1.providers" in problem and "CHUTES_API_KEY" in problem
    assert keyless_route(Config()) is not None and keyless_route(load(tmp_path, environ={"CHUTES_API_KEY": "k"})) is None


@pytest.mark.xdist_group("processes")
async def test_the_command_refuses_a_keyless_route_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(_route("a") + _route("b", '{ provider = "chutes" }'))
    result = await run(["--config", str(config), "--check-config"], tmp_path, scrubbed_env(CEREBRAS_API_KEY="csk-x"))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "CHUTES_API_KEY" in result.stderr
    assert str(config) in result.stderr


@pytest.mark.xdist_group("processes")
async def test_probe_goes_with_check_config(tmp_path: Path) -> None:
    result = await run(["--probe"], tmp_path)
    assert result.returncode == 2 and "--probe goes with --check-config" in result.stderr


@pytest.mark.xdist_group("processes")
async def test_check_config_probe_says_which_providers_offer_each_routes_model(
    two_models: Providers, tmp_path: Path
) -> None:
    """`--check-config --probe` asks each key's /models and prints per route which model each key
    would serve, and a [[models]] block with what every key offers."""
    two_models.cerebras.more_models.remove(CEREBRAS_OSS)
    config = tmp_path / "config.toml"
    config.write_text(f'[cerebras]\nbase_url = "{two_models.cerebras_url}"\nmodel = "{CEREBRAS_QWEN}"\n'
                      f'[chutes]\nbase_url = "{two_models.chutes_url}"\nmodel = "{CHUTES_QWEN}"\n'
                      + _route(QWEN, '{ provider = "cerebras" }, { provider = "chutes" }')
                      + _route(OSS, f'{{ provider = "cerebras", model = "{CEREBRAS_OSS}" }}, '
                                    f'{{ provider = "chutes", model = "{CHUTES_OSS}" }}')
                      + _route("gone", '{ provider = "cerebras", model = "llama-3.3-70b" }'))
    env = scrubbed_env(CEREBRAS_API_KEYS=f"{two_models.cerebras.api_key},csk-wrong", CHUTES_API_KEY=two_models.chutes.api_key)
    result = await run(["--config", str(config), "--check-config", "--probe"], tmp_path, env)
    assert result.returncode == 1, result.stderr  # the route "gone" has no provider for its model
    out = result.stdout
    assert "cerebras key 1 offers: qwen-3-coder-480b" in out
    assert "cerebras key 2: no answer (401" in out
    assert "chutes key 1 offers: Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8, openai/gpt-oss-120b" in out
    sections = {block.splitlines()[0]: block for block in out.split("\n\n")[1:]}
    assert f"serves key 1: {CEREBRAS_QWEN}" in sections[f"route {QWEN}"].splitlines()[1]
    oss = sections[f"route {OSS}"].splitlines()
    assert "NOT OFFERED" in oss[1] and f"serves key 1: {CHUTES_OSS}" in oss[2]
    block = oss[oss.index("  [[models]]"):]
    assert block == ["  [[models]]", f'  name = "{OSS}"', "  providers = [",
                     f'    {{ provider = "chutes", model = ["{CHUTES_OSS}"] }},', "  ]"]
    pinned = tomllib.loads("\n".join(line.strip() for line in block))  # ready to paste
    assert pinned["models"][0]["providers"] == [{"provider": "chutes", "model": [CHUTES_OSS]}]
    assert "no provider offers any of its models today" in sections["route gone"]
    assert "csk-wrong" not in out + result.stderr


async def test_a_reload_adds_a_route_and_keeps_the_quota_of_the_one_that_stays(
    two_models: Providers, mock_clock: trio.testing.MockClock
) -> None:
    """Start with the original single route, reload with two: Qwen's counts stay, gpt-oss appears."""
    config = qwen_config(two_models, cerebras={"requests_per_minute": 2})
    async with reloadable_proxy(config) as (proxy, send_reloads):
        async with client_for(proxy) as client:
            assert (await post(client, chat(model=QWEN))).status_code == 200
            assert (await post(client, chat(model=OSS))).status_code == 404  # not served yet
            await send_reloads.send(attrs.evolve(config, models=ROUTES))
            await trio.testing.wait_all_tasks_blocked()
            assert [entry["id"] for entry in (await client.get("/models")).json()["data"]] == [QWEN, OSS]
            for model in (QWEN, OSS, QWEN):
                assert (await post(client, chat(model=model))).status_code == 200
    assert models_received(two_models.cerebras) == ["qwen-3-coder-480b", "qwen-3-coder-480b", CEREBRAS_OSS]
    assert models_received(two_models.chutes) == ["Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8"]  # Qwen's 2/min held
