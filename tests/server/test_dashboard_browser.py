"""The dashboard in a real headless browser: Debian's chromium, driven by Playwright.

Plain (not Trio) tests: Playwright's sync API runs here, the proxy on its own Trio thread.
Every wait is one of Playwright's polling assertions with a deadline, never a fixed sleep.
"""

import re
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from support.chat import PROXY_MODEL, chat
from support.live_proxy import LiveProxy, browser_context, chromium_browser, live_proxy
from support.routes import (
    CEREBRAS_OSS,
    CEREBRAS_QWEN,
    CHUTES_OSS,
    CHUTES_QWEN,
    OSS,
    QWEN,
    ROUTES,
    list_only,
    qwen_settings,
)
from trioproxy.testing.emulator import Faults

expect.set_options(timeout=10_000)
pytestmark = pytest.mark.xdist_group("browser")  # one worker, so one chromium for them all
CLIENT_KEY = "sk-dashboard-test-key"


@pytest.fixture
def proxy() -> Iterator[LiveProxy]:
    with live_proxy() as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One chromium for the module (one xdist worker runs them all): each test gets a fresh context."""
    with chromium_browser() as running:
        yield running


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    with browser_context(browser, viewport={"width": 1280, "height": 1000}) as context:
        yield context.new_page()


def send(proxy: LiveProxy, request_id: str, key: str = "any", **body: object) -> httpx.Response:
    response = httpx.post(
        proxy.root_url + "/v1/chat/completions",
        json=chat(**body),
        headers={"x-request-id": request_id, "authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response


def recent_row(page: Page, request_id: str) -> Locator:
    return page.locator("#recent tbody tr").filter(has=page.get_by_role("cell", name=request_id, exact=True))


def test_page_shows_providers_and_a_request_within_seconds(proxy: LiveProxy, page: Page) -> None:
    """No console errors; both providers; a proxied request appears in the list and the counts."""
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(proxy.root_url + "/")
    expect(page.locator("#connection")).to_have_text("live")
    for name in ("cerebras", "chutes"):
        card = page.locator(f'article[data-provider="{name}"]')
        expect(card.locator(".badge")).to_have_text("up")
        expect(card).to_contain_text("no cooldown")
    expect(page.locator("#totals")).to_contain_text("no requests yet")
    expect(page.locator("#access")).to_have_text("open: no client keys set")

    send(proxy, "first-request-1", stream=True, stream_options={"include_usage": True})

    row = recent_row(page, "first-request-1")
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(3)).to_have_text(PROXY_MODEL)
    expect(row.locator("td").nth(4)).to_have_text("cerebras")
    expect(row.locator("td").nth(6)).to_have_text("yes")
    expect(row.locator("td").nth(7)).to_have_text("200")
    expect(page.locator("#totals tr", has_text="cerebras").locator("td").first).to_have_text("1")
    expect(page.locator('article[data-provider="cerebras"] .gauge').first).to_contain_text("1 / 15 (preset)")
    assert page.locator("#chart-requests canvas").count() == 1  # uPlot drew the chart
    # /dashboard serves the same page.
    page.goto(proxy.root_url + "/dashboard")
    expect(recent_row(page, "first-request-1")).to_have_count(1)
    assert problems == []


def test_a_provider_card_shows_the_share_of_prompt_tokens_its_cache_held(proxy: LiveProxy, page: Page) -> None:
    """Two turns of one conversation: Cerebras's cache holds most of the second; its card says so."""
    page.goto(proxy.root_url + "/")
    messages = [{"role": "system", "content": "You are a coding agent. " * 400}]
    for turn in range(2):
        messages.append({"role": "user", "content": f"tool result {turn}: " + "x = 1\n" * 200})
        send(proxy, f"turn-{turn}", messages=list(messages))
    served = page.locator('article[data-provider="cerebras"] .served')
    expect(served).to_contain_text("served since start: 2 requests")
    expect(served).to_contain_text(re.compile(r"prompt tokens, [1-9]\d? % of them from its prompt cache"))


def test_forced_cerebras_429_shows_a_cooldown_counting_down(proxy: LiveProxy, page: Page) -> None:
    """A 429 with no reset time cools Cerebras down for cooldown_period_ms; the page counts it down."""
    page.goto(proxy.root_url + "/")
    cooldown = page.locator('[data-account="cerebras"] .cooldown')
    expect(cooldown).to_have_text("no cooldown")
    proxy.call(setattr, proxy.providers.cerebras, "faults", Faults(status=429, remaining=1))

    send(proxy, "rerouted-by-429")

    expect(cooldown).to_contain_text("cooling down, 4:")  # 300 s by default
    expect(cooldown).to_contain_text("429")
    shown = cooldown.text_content()
    expect(cooldown).not_to_have_text(shown or "")  # a second later it shows less
    expect(recent_row(page, "rerouted-by-429").locator("td").nth(4)).to_have_text("chutes")
    expect(page.locator("#reroutes")).to_contain_text("failover: 429")
    expect(page.locator('article[data-provider="cerebras"] .badge').first).to_have_text("not usable")


def test_with_client_keys_the_page_asks_for_one(page: Page) -> None:
    """The page asks for a key, says when one is refused, and shows the state with a good one."""
    with live_proxy(client_api_keys=(CLIENT_KEY,)) as proxy:
        refused = httpx.get(proxy.root_url + "/dashboard/api/state", headers={"authorization": "Bearer wrong"})
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"
        send(proxy, "behind-a-key", key=CLIENT_KEY)

        page.goto(proxy.root_url + "/dashboard/")
        expect(page.locator("#key-panel")).to_be_visible()
        expect(page.locator("#content")).to_be_hidden()
        page.locator("#key-input").fill("not-the-key")
        page.locator("#key-form button").click()
        expect(page.locator("#key-error")).to_contain_text("The key was refused (401)")
        expect(page.locator("#content")).to_be_hidden()

        page.locator("#key-input").fill(CLIENT_KEY)
        page.locator("#key-form button").click()
        expect(page.locator("#key-panel")).to_be_hidden()
        expect(recent_row(page, "behind-a-key")).to_have_count(1)
        expect(page.locator('article[data-provider="chutes"]')).to_be_visible()
        expect(page.locator("#access")).to_have_text("client key required")
        assert CLIENT_KEY not in page.content()  # the key is never written into the page


def test_strings_from_outside_are_shown_as_text_not_markup(page: Page) -> None:
    """Markup in a text the page shows (a model name, the prober's error naming it) is shown, not
    run or rendered; markup in a request id never gets that far: it is replaced by a fresh id."""
    hostile = '<img src=x onerror="document.title=\'owned\'"><b id="injected">bold</b>'
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    with live_proxy(cerebras={"model": hostile}) as proxy:
        page.goto(proxy.root_url + "/")
        response = send(proxy, hostile)
        assert response.headers["x-request-id"] != hostile
        expect(recent_row(page, response.headers["x-request-id"])).to_have_count(1)
        expect(page.locator('article[data-provider="cerebras"]')).to_contain_text(f"model {hostile} not listed")
        assert page.locator("#injected").count() == 0 and page.locator("img").count() == 0
        assert page.title() == "trioproxy dashboard" and dialogs == []


def test_the_page_reconnects_after_losing_the_connection(proxy: LiveProxy, page: Page) -> None:
    """Offline: the page says it is reconnecting; back online: live again, and new traffic shows."""
    page.goto(proxy.root_url + "/")
    expect(page.locator("#connection")).to_have_text("live")
    page.context.set_offline(True)
    expect(page.locator("#connection")).to_contain_text("reconnecting")
    send(proxy, "sent-while-offline")
    page.context.set_offline(False)
    expect(page.locator("#connection")).to_have_text("live")
    expect(recent_row(page, "sent-while-offline")).to_have_count(1)



def test_every_route_shows_its_providers_per_model_windows_and_a_missing_model(page: Page) -> None:
    """Two routes on one Cerebras key: a block per route with its own per-model quota windows and
    its requests; when Cerebras stops listing one route's model, that route's Cerebras card says
    the model is missing while the other route's Cerebras stays up."""
    with live_proxy(models=ROUTES, health_check_interval_ms=100, **qwen_settings()) as proxy:
        proxy.call(list_only, proxy.providers.cerebras, CEREBRAS_QWEN, CEREBRAS_OSS)
        proxy.call(list_only, proxy.providers.chutes, CHUTES_QWEN, CHUTES_OSS)
        page.goto(proxy.root_url + "/")
        qwen, oss = (page.locator(f'section.route[data-route="{name}"]') for name in (QWEN, OSS))
        expect(page.locator("#model")).to_have_text(f"models {QWEN}, {OSS}")
        expect(oss.locator('article[data-provider="cerebras"] .badge')).to_have_text("up")  # the prober lists it
        expect(oss).to_contain_text("aliases: oss, gpt-oss-*")

        for request_id, model in (("qwen-1", QWEN), ("qwen-2", QWEN), ("oss-1", OSS)):
            send(proxy, request_id, model=model)

        expect(qwen.locator('[data-account="cerebras"] .gauge').first).to_contain_text("2 / 15 (preset)")
        expect(oss.locator(f'[data-account="cerebras:{CEREBRAS_OSS}"] .gauge').first).to_contain_text("1 / 15 (preset)")
        expect(oss.locator(".route-head")).to_contain_text("1 served since start")
        expect(recent_row(page, "oss-1").locator("td").nth(3)).to_have_text(OSS)
        expect(qwen.locator(".route-head")).to_contain_text("2 served since start")

        proxy.call(proxy.providers.cerebras.more_models.remove, CEREBRAS_OSS)
        missing = oss.locator('article[data-provider="cerebras"]')
        expect(missing.locator(".badge")).to_have_text("model missing")
        expect(missing).to_contain_text(f"models {CEREBRAS_OSS}: none offered here")
        expect(oss.locator('article[data-provider="chutes"] .badge')).to_have_text("up")
        expect(qwen.locator('article[data-provider="cerebras"] .badge')).to_have_text("up")


def test_the_clients_table_names_each_client_never_its_key(page: Page) -> None:
    """Each client's row: its name, weight, requests by provider, budgets; no key on the page."""
    from trioproxy.config.schema import Budget, ClientConfig

    clients = (ClientConfig(name="ci-batch", api_keys=(CLIENT_KEY,), weight=3, budget=Budget(requests_per_minute=5)),
               ClientConfig(name="idle-agent", api_keys=("sk-idle-agent-key",)))
    with live_proxy(clients=clients) as proxy:
        send(proxy, "from-ci", key=CLIENT_KEY)
        page.goto(proxy.root_url + "/dashboard/")
        page.locator("#key-input").fill(CLIENT_KEY)
        page.locator("#key-form button").click()
        ci = page.locator("#clients tr").filter(has=page.locator("th", has_text="ci-batch"))
        expect(ci).to_contain_text("cerebras 1")
        expect(ci).to_contain_text("rpm 1/5")
        expect(ci.locator("td").first).to_have_text("3")
        expect(page.locator("#clients")).to_contain_text("idle-agent")
        assert CLIENT_KEY not in page.content() and "sk-idle-agent-key" not in page.content()
