"""What a web page can do with a proxy on 127.0.0.1, in Debian's chromium under Playwright.

Plain (not Trio) tests, like the dashboard's: the proxy runs on its own Trio thread. The hostile
page is served from another port of 127.0.0.1 (another origin, and the same address space, so
the browser's own private-network rules do not stop it first); DNS rebinding is played by
chromium's host resolver rules, which map the page's name to 127.0.0.1.
"""

import http.server
import threading
from collections.abc import Iterator

import httpx
import pytest

from support.chat import chat
from support.live_proxy import LiveProxy, chromium, live_proxy

LIMITED = {"requests_per_day": 1_000, "tokens_per_day": 10_000_000}


@pytest.fixture
def proxy() -> Iterator[LiveProxy]:
    with live_proxy(cerebras=LIMITED) as running:
        yield running


@pytest.fixture
def other_origin() -> Iterator[str]:
    """An empty page on another port of 127.0.0.1: another origin than the proxy's."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            body = b"<!doctype html><title>some page</title>"
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def booked(proxy: LiveProxy) -> tuple[int, int, int]:
    """Requests and tokens booked today on Cerebras, and chat requests both providers answered."""
    account = httpx.get(proxy.root_url + "/v1/status", timeout=10).json()["providers"][0]["accounts"]["cerebras"]
    served = proxy.call(lambda: proxy.providers.cerebras.served + proxy.providers.chutes.served)
    return account["rpd"]["used"], account["tpd"]["used"], served


def test_a_page_of_another_origin_cannot_spend_quota_blind(proxy: LiveProxy, other_origin: str) -> None:
    """`fetch(..., {mode: "no-cors"})` with a text/plain JSON body, the request a page may send
    anywhere without asking: the proxy serves none of it, whatever the page cannot read."""
    with chromium() as context:
        page = context.new_page()
        page.goto(other_origin + "/")
        sent = page.evaluate(
            """async ([url, body]) => {
                const sent = [];
                for (const type of ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]) {
                    const response = await fetch(url, {method: "POST", mode: "no-cors", body,
                                                       headers: {"content-type": type}});
                    sent.push(response.type);
                }
                return sent;
            }""",
            [proxy.root_url + "/v1/chat/completions", httpx.Request("POST", "/", json=chat()).content.decode()],
        )
    assert sent == ["opaque", "opaque", "opaque"]  # the browser did send them
    assert booked(proxy) == (0, 0, 0)


def test_a_rebound_name_reads_nothing_and_spends_nothing(proxy: LiveProxy) -> None:
    """After DNS rebinding the page is same-origin with the proxy and could read every answer:
    its requests name its own host, which the proxy does not answer to."""
    port = proxy.root_url.rpartition(":")[2]
    rebound = f"http://rebind.example:{port}"
    with chromium("--host-resolver-rules=MAP rebind.example 127.0.0.1") as context:
        page = context.new_page()
        first = page.goto(rebound + "/")
        assert first is not None and first.status == 403
        results = page.evaluate(
            """async (body) => {
                const read = async (path, init) => {
                    const response = await fetch(path, init);
                    return [response.status, await response.text()];
                };
                return [
                    await read("/v1/status"),
                    await read("/dashboard/api/state"),
                    await read("/v1/models"),
                    await read("/v1/chat/completions", {method: "POST", body,
                                                        headers: {"content-type": "application/json"}}),
                ];
            }""",
            httpx.Request("POST", "/", json=chat()).content.decode(),
        )
    for status, text in results:
        assert status == 403 and "host_not_allowed" in text, (status, text[:200])
        assert "cerebras" not in text
    assert booked(proxy) == (0, 0, 0)
    # The same page through the proxy's own address is served, as the operator's dashboard is.
    with chromium() as context:
        page = context.new_page()
        assert page.goto(proxy.root_url + "/").status == 200
