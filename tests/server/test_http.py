"""Raw HTTP against trioproxy: routes, status codes, error shapes, request ids, logs and secrets."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import AsyncIterator
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing

from support.proxies import Providers, Proxy, proxy_config
from support.raw_http import root_of
from trioproxy.config.schema import Config
from trioproxy.logs import RedactingFormatter
from trioproxy.secrets import REDACTED, Sanitizer
from trioproxy.process.supervisor import run_proxy
from trioproxy.testing.emulator import Faults, completion_text

MODEL = "qwen-3-coder"
MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "Say hello."}]
CHAT = "/chat/completions"


def client_for(proxy: Proxy) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=proxy.base_url, timeout=10.0)


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": MESSAGES, **extra}


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is `status` with OpenAI's error shape (and a request id); returns the error."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers.get("x-request-id")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    if code is not None:
        assert error["code"] == code
    return error


async def start_with(nursery: trio.Nursery, config: Config) -> Proxy:
    shutdown = trio.Event()
    base_url = await nursery.start(run_proxy, config, shutdown)
    return Proxy(base_url, config, shutdown)


def without_key(config: Config, provider: str) -> Config:
    """`config` with one provider's key emptied: run_proxy then leaves that provider out."""
    return attrs.evolve(config, **{provider: attrs.evolve(getattr(config, provider), api_key="")})


# --------------------------------------------------------------------------- models, health


async def test_models_list_shape(proxy: Proxy) -> None:
    """GET /v1/models lists exactly the proxy model in OpenAI's list shape."""
    async with client_for(proxy) as client:
        response = await client.get("/models")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["object"] == "list"
    assert len(body["data"]) == 1
    card = body["data"][0]
    assert card["id"] == MODEL
    assert card["object"] == "model"
    assert isinstance(card["created"], int) and card["created"] > 1_600_000_000
    assert isinstance(card["owned_by"], str) and card["owned_by"]


async def test_model_retrieve_and_unknown(proxy: Proxy) -> None:
    """GET /v1/models/qwen-3-coder returns its card; an unknown id is 404 model_not_found."""
    async with client_for(proxy) as client:
        known = await client.get(f"/models/{MODEL}")
        unknown = await client.get("/models/gpt-4o")
    assert known.status_code == 200
    assert known.json()["id"] == MODEL and known.json()["object"] == "model"
    assert_openai_error(unknown, 404, "model_not_found")


async def test_healthz_ok(proxy: Proxy) -> None:
    """GET /healthz is 200 JSON naming both providers as usable."""
    async with httpx.AsyncClient(base_url=root_of(proxy)) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.headers.get("x-request-id")
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["providers"]) == {"cerebras", "chutes"}
    assert all(state["usable"] is True for state in body["providers"].values())


async def test_healthz_503_when_only_provider_cools_down(nursery: trio.Nursery, providers: Providers) -> None:
    """With Cerebras as the only provider, its 429 starts a cooldown and /healthz turns 503."""
    proxy = await start_with(nursery, without_key(proxy_config(providers), "chutes"))
    providers.cerebras.requests_per_minute = 1
    async with client_for(proxy) as client, httpx.AsyncClient(base_url=root_of(proxy)) as root:
        before = await root.get("/healthz")
        first = await client.post(CHAT, json=chat_body())
        await client.post(CHAT, json=chat_body())  # the emulator answers 429: cooldown
        health = await root.get("/healthz")
    assert before.status_code == 200 and first.status_code == 200
    assert len(providers.cerebras.received) == 2
    assert health.status_code == 503
    assert health.headers["content-type"].startswith("application/json")
    body = health.json()
    assert body["status"] == "unavailable"
    assert list(body["providers"]) == ["cerebras"]
    assert body["providers"]["cerebras"]["usable"] is False
    account = body["providers"]["cerebras"]["accounts"]["cerebras"]
    assert account["cooldown_seconds"] > 0
    assert "429" in account["cooldown_reason"]
    assert providers.chutes.received == []


async def test_only_provider_429_gives_openai_429(nursery: trio.Nursery, providers: Providers) -> None:
    """When the only provider answers 429, the client gets a 429 in OpenAI's shape with Retry-After."""
    proxy = await start_with(nursery, without_key(proxy_config(providers), "chutes"))
    providers.cerebras.requests_per_minute = 1
    async with client_for(proxy) as client:
        first = await client.post(CHAT, json=chat_body())
        second = await client.post(CHAT, json=chat_body())
        third = await client.post(CHAT, json=chat_body())  # in cooldown: refused by the proxy itself
    assert first.status_code == 200
    assert_openai_error(second, 429)
    assert int(second.headers["retry-after"]) >= 1
    assert_openai_error(third, 429)
    assert int(third.headers["retry-after"]) >= 1
    assert len(providers.cerebras.received) == 2


@pytest.mark.parametrize("stream", [False, True])
async def test_both_providers_500_gives_openai_502(proxy: Proxy, providers: Providers, stream: bool) -> None:
    """Both providers answering 500 gives the client a 502 in OpenAI's error shape, not a bare 500."""
    providers.cerebras.faults = Faults(status=500)
    providers.chutes.faults = Faults(status=500)
    async with client_for(proxy) as client:
        response = await client.post(CHAT, json=chat_body(stream=stream))
    assert_openai_error(response, 502)
    assert len(providers.cerebras.received) == 1 and len(providers.chutes.received) == 1


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        pytest.param(b"{not json", 400, None, id="not-json"),
        pytest.param(b"", 400, None, id="empty-body"),
        pytest.param(b"[1, 2]", 400, None, id="json-list"),
        pytest.param(b'"hello"', 400, None, id="json-string"),
        pytest.param(b"null", 400, None, id="json-null"),
        pytest.param(b"42", 400, None, id="json-number"),
        pytest.param(json.dumps({"model": MODEL}).encode(), 400, None, id="messages-missing"),
        pytest.param(json.dumps({"model": MODEL, "messages": "hi"}).encode(), 400, None, id="messages-string"),
        pytest.param(json.dumps({"model": MODEL, "messages": {"role": "user"}}).encode(), 400, None, id="messages-object"),
        pytest.param(json.dumps({"model": MODEL, "messages": []}).encode(), 400, None, id="messages-empty"),
        pytest.param(json.dumps({"model": MODEL, "messages": ["hi"]}).encode(), 400, None, id="message-not-object"),
        pytest.param(json.dumps(chat_body(stream="yes")).encode(), 400, None, id="stream-string"),
        pytest.param(json.dumps(chat_body(stream=1)).encode(), 400, None, id="stream-number"),
        pytest.param(json.dumps({"messages": MESSAGES}).encode(), 400, None, id="model-missing"),
        pytest.param(json.dumps({"model": 3, "messages": MESSAGES}).encode(), 400, None, id="model-number"),
        pytest.param(json.dumps(chat_body(model="gpt-4o")).encode(), 404, "model_not_found", id="model-unknown"),
        pytest.param(b'{"model":"qwen-3-coder","messages":[{"role":"user","content":"\xff\xfe"}]}', 400, None, id="invalid-utf8"),
        pytest.param(b"\xc3\x28", 400, None, id="invalid-utf8-bare"),
        pytest.param(b'{"model":"qwen-3-coder","messages":[{"role":"user","content":"hi"}],"temperature":1e400}', 400, None, id="number-overflows"),
    ],
)
async def test_bad_chat_body(proxy: Proxy, providers: Providers, raw: bytes, status: int, code: str | None) -> None:
    """A malformed chat body gets an OpenAI-style error with the right status, never an upstream call."""
    async with client_for(proxy) as client:
        response = await client.post(CHAT, content=raw, headers={"content-type": "application/json"})
    assert_openai_error(response, status, code)
    assert providers.cerebras.received == [] and providers.chutes.received == []


async def test_bad_param_is_named(proxy: Proxy) -> None:
    """The error for a bad field names that field in `param`."""
    async with client_for(proxy) as client:
        stream = await client.post(CHAT, json=chat_body(stream="true"))
        messages = await client.post(CHAT, json={"model": MODEL, "messages": []})
        model = await client.post(CHAT, json={"messages": MESSAGES})
    assert assert_openai_error(stream, 400)["param"] == "stream"
    assert assert_openai_error(messages, 400)["param"] == "messages"
    assert assert_openai_error(model, 400)["param"] == "model"


async def test_lone_surrogate_is_answered(proxy: Proxy, providers: Providers) -> None:
    """A JSON `\\ud800` escape (broken Unicode) gets a well-formed answer, never a crash."""
    raw = b'{"model":"qwen-3-coder","messages":[{"role":"user","content":"bad \\ud800 text"}]}'
    async with client_for(proxy) as client:
        response = await client.post(CHAT, content=raw, headers={"content-type": "application/json"})
    assert response.headers.get("x-request-id")
    if response.status_code == 200:
        assert response.json()["model"] == MODEL
    else:
        assert_openai_error(response, 400)


async def test_body_over_limit_with_content_length(start_proxy: Any, providers: Providers) -> None:
    """A body larger than max_body_bytes, sized by content-length, is a 413 in OpenAI's shape."""
    proxy = await start_proxy(max_body_bytes=1000)
    body = json.dumps(chat_body(messages=[{"role": "user", "content": "x" * 5000}])).encode()
    async with client_for(proxy) as client:
        response = await client.post(CHAT, content=body, headers={"content-type": "application/json"})
        # The same connection still serves a small request afterwards.
        after = await client.post(CHAT, json=chat_body())
    assert_openai_error(response, 413)
    assert after.status_code == 200
    assert providers.cerebras.served == 1
    assert all(len(json.dumps(r)) < 1000 for r in providers.cerebras.received)


async def test_body_over_limit_chunked(start_proxy: Any, providers: Providers) -> None:
    """A chunked body (no content-length) that grows past max_body_bytes is a 413, not a reset."""
    proxy = await start_proxy(max_body_bytes=1000)
    body = json.dumps(chat_body(messages=[{"role": "user", "content": "x" * 5000}])).encode()
    sent_headers: dict[str, str] = {}

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 256):
            yield body[start : start + 256]

    async def remember(request: httpx.Request) -> None:
        sent_headers.update(request.headers)

    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=10.0, event_hooks={"request": [remember]}) as client:
        response = await client.post(CHAT, content=pieces(), headers={"content-type": "application/json"})
    assert "content-length" not in sent_headers and sent_headers.get("transfer-encoding") == "chunked"
    assert_openai_error(response, 413)
    assert providers.cerebras.received == [] and providers.chutes.received == []


async def test_body_at_limit_is_accepted(start_proxy: Any, providers: Providers) -> None:
    """A chunked body under max_body_bytes is read whole and served."""
    proxy = await start_proxy(max_body_bytes=1000)
    body = json.dumps(chat_body()).encode()

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 7):
            yield body[start : start + 7]

    async with client_for(proxy) as client:
        response = await client.post(CHAT, content=pieces(), headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == completion_text("cerebras")


async def test_unknown_path_404(proxy: Proxy) -> None:
    """Paths the proxy does not serve are 404 in OpenAI's error shape."""
    async with httpx.AsyncClient(base_url=root_of(proxy), timeout=10.0) as client:
        responses = [
            await client.get("/v1/completions"),
            await client.post("/v1/embeddings", json={"input": "x"}),
            await client.get("/index.html"),  # `/` itself is the dashboard
            await client.post("/chat/completions", json=chat_body()),
        ]
    for response in responses:
        assert_openai_error(response, 404)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v1/chat/completions", "POST"),
        ("PUT", "/v1/chat/completions", "POST"),
        ("DELETE", "/v1/chat/completions", "POST"),
        ("POST", "/v1/models", "GET"),
        ("POST", f"/v1/models/{MODEL}", "GET"),
        ("POST", "/healthz", "GET"),
    ],
)
async def test_wrong_method_405(proxy: Proxy, method: str, path: str, allow: str) -> None:
    """A known path with the wrong method is 405 with an Allow header naming the right one."""
    async with httpx.AsyncClient(base_url=root_of(proxy), timeout=10.0) as client:
        response = await client.request(method, path, json={} if method in ("POST", "PUT") else None)
    assert_openai_error(response, 405)
    assert allow in [m.strip() for m in response.headers["allow"].split(",")]


# --------------------------------------------------------------------------- request ids


async def test_every_response_has_request_id(proxy: Proxy) -> None:
    """Success, stream, error and unknown-path responses all carry an x-request-id."""
    async with httpx.AsyncClient(base_url=root_of(proxy), timeout=10.0) as client:
        responses = [
            await client.get("/v1/models"),
            await client.get(f"/v1/models/{MODEL}"),
            await client.get("/healthz"),
            await client.post("/v1/chat/completions", json=chat_body()),
            await client.post("/v1/chat/completions", content=b"nope", headers={"content-type": "application/json"}),
            await client.get("/v1/chat/completions"),
            await client.get("/nowhere"),
        ]
        async with client.stream("POST", "/v1/chat/completions", json=chat_body(stream=True)) as stream:
            await stream.aread()
            responses.append(stream)
    ids = [response.headers.get("x-request-id") for response in responses]
    assert all(ids), ids
    assert len(set(ids)) == len(ids)  # fresh per request


async def test_client_request_id_is_echoed(proxy: Proxy) -> None:
    """A client-sent x-request-id comes back unchanged, on success, stream and error."""
    async with client_for(proxy) as client:
        plain = await client.post(CHAT, json=chat_body(), headers={"x-request-id": "roo-abc-1"})
        bad = await client.post(CHAT, content=b"[]", headers={"x-request-id": "roo-abc-2", "content-type": "application/json"})
        models = await client.get("/models", headers={"x-request-id": "roo-abc-3"})
        async with client.stream("POST", CHAT, json=chat_body(stream=True), headers={"x-request-id": "roo-abc-4"}) as stream:
            await stream.aread()
    assert plain.status_code == 200 and plain.headers["x-request-id"] == "roo-abc-1"
    assert bad.status_code == 400 and bad.headers["x-request-id"] == "roo-abc-2"
    assert models.headers["x-request-id"] == "roo-abc-3"
    assert stream.status_code == 200 and stream.headers["x-request-id"] == "roo-abc-4"


# --------------------------------------------------------------------------- secrets and logs


def formatted_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Each captured record as a handler would print it, exception text included."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return [formatter.format(record) for record in caplog.records]


def assert_no_secret(secrets: list[str], texts: list[str]) -> None:
    for secret in secrets:
        for text in texts:
            assert secret not in text, f"secret {secret[:4]}... leaked into: {text[:300]}"


def response_texts(response: httpx.Response) -> list[str]:
    return [response.text, *(f"{k}: {v}" for k, v in response.headers.multi_items())]


async def exercise(proxy: Proxy) -> list[httpx.Response]:
    """A plain request, a stream, a tools request and a models call; the responses."""
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    async with client_for(proxy) as client:
        responses = [
            await client.post(CHAT, json=chat_body()),
            await client.post(CHAT, json=chat_body(tools=tools, tool_choice="auto")),
            await client.get("/models"),
        ]
        async with client.stream("POST", CHAT, json=chat_body(stream=True)) as stream:
            await stream.aread()
        responses.append(stream)
    await trio.testing.wait_all_tasks_blocked()  # let the request log lines be written
    return responses


async def test_keys_never_leak_normal(start_proxy: Any, providers: Providers, caplog: pytest.LogCaptureFixture) -> None:
    """In normal operation at DEBUG, no provider key appears in any log record or response."""
    caplog.set_level(logging.DEBUG)
    proxy = await start_proxy(log_level="DEBUG")
    responses = await exercise(proxy)
    assert [r.status_code for r in responses] == [200, 200, 200, 200]
    assert providers.cerebras.served == 3
    secrets = [providers.cerebras.api_key, providers.chutes.api_key]
    assert caplog.records, "expected DEBUG/INFO records to check"
    assert_no_secret(secrets, formatted_records(caplog))
    assert_no_secret(secrets, [t for r in responses for t in response_texts(r)])


async def test_keys_never_leak_failures(start_proxy: Any, providers: Providers, caplog: pytest.LogCaptureFixture) -> None:
    """With both providers failing (500), no key appears in logs or in the error responses."""
    caplog.set_level(logging.DEBUG)
    proxy = await start_proxy()
    providers.cerebras.faults = Faults(status=500)
    providers.chutes.faults = Faults(status=500)
    responses = await exercise(proxy)
    secrets = [providers.cerebras.api_key, providers.chutes.api_key]
    assert_no_secret(secrets, formatted_records(caplog))
    assert_no_secret(secrets, [t for r in responses for t in response_texts(r)])
    # Checked last so a leak is reported first: the error bodies above were real OpenAI errors.
    assert [r.status_code for r in responses] == [502, 502, 200, 502]


async def test_keys_never_leak_on_401(nursery: trio.Nursery, providers: Providers, caplog: pytest.LogCaptureFixture) -> None:
    """A wrong Cerebras key gets 401 upstream, the proxy fails over to Chutes, and no key is logged."""
    caplog.set_level(logging.DEBUG)
    wrong_key = "csk-wrong-0123456789abcdef"
    config = proxy_config(providers)
    config = attrs.evolve(config, cerebras=attrs.evolve(config.cerebras, api_key=wrong_key))
    proxy = await start_with(nursery, config)
    responses = await exercise(proxy)
    assert [r.status_code for r in responses] == [200, 200, 200, 200]
    assert responses[0].json()["choices"][0]["message"]["content"] == completion_text("chutes")
    assert len(providers.cerebras.received) == 3 and providers.cerebras.served == 0
    assert providers.chutes.served == 3
    assert providers.cerebras.received_headers[0]["authorization"] == f"Bearer {wrong_key}"
    secrets = [providers.cerebras.api_key, providers.chutes.api_key, wrong_key]
    assert any("401" in text for text in formatted_records(caplog))  # the failure was logged
    assert_no_secret(secrets, formatted_records(caplog))
    assert_no_secret(secrets, [t for r in responses for t in response_texts(r)])


def test_redacting_formatter_hides_secrets() -> None:
    """RedactingFormatter replaces each configured secret in the message and the traceback."""
    secret = "csk-supersecret-42"
    formatter = RedactingFormatter(Sanitizer([secret, "cpk_other", ""]))
    try:
        raise RuntimeError(f"upstream said Bearer {secret}")
    except RuntimeError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("trioproxy.test", logging.ERROR, __file__, 1, "key is %s and %s", (secret, "cpk_other"), exc_info)
    text = formatter.format(record)
    assert secret not in text and "cpk_other" not in text
    assert text.count(REDACTED) >= 3
    assert "key is [redacted] and [redacted]" in text
    assert "RuntimeError" in text


def test_redacting_formatter_via_handler() -> None:
    """A logger using the formatter writes a redacted line to its stream."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter(Sanitizer(["cpk_live_key"])))
    logger = logging.getLogger("trioproxy.test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("sending Authorization: Bearer cpk_live_key to chutes")
    finally:
        logger.removeHandler(handler)
    assert "cpk_live_key" not in stream.getvalue()
    assert "Bearer [redacted] to chutes" in stream.getvalue()



def test_a_short_secret_is_redacted_as_a_whole_token_and_leaves_words_alone() -> None:
    """A test key such as "x" would otherwise cut every word that holds the letter."""
    formatter = RedactingFormatter(Sanitizer(["x"]))
    record = logging.LogRecord("trioproxy.test", logging.INFO, __file__, 1, "trioproxy sent Bearer %s; key=%s", ("x", "x"), None)
    text = formatter.format(record)
    assert "trioproxy sent Bearer [redacted]; key=[redacted]" in text
    assert Sanitizer(["x"]).text("Incorrect API key provided: x. It expired.") == (
        "Incorrect API key provided: [redacted]. It expired."
    )


REQUEST_LINE = re.compile(r"request (?P<id>\S+) api=(?P<api>\w+) provider=(?P<provider>\S+) reason='(?P<reason>[^']*)'")


async def request_lines(caplog: pytest.LogCaptureFixture) -> dict[str, re.Match[str]]:
    """The INFO lines of logger trioproxy.request, by request id."""
    await trio.testing.wait_all_tasks_blocked()
    lines: dict[str, re.Match[str]] = {}
    for record in caplog.records:
        if record.name == "trioproxy.request" and record.levelno == logging.INFO:
            match = REQUEST_LINE.search(record.getMessage())
            assert match, record.getMessage()
            lines[match["id"]] = match
    return lines


async def test_request_log_preferred_then_fallback_rpm(start_proxy: Any, providers: Providers, caplog: pytest.LogCaptureFixture) -> None:
    """The per-request INFO line says cerebras 'preferred', then chutes 'fallback: rpm' past its RPM."""
    caplog.set_level(logging.INFO)
    proxy = await start_proxy(cerebras={"requests_per_minute": 1})
    async with client_for(proxy) as client:
        first = await client.post(CHAT, json=chat_body(), headers={"x-request-id": "req-one"})
        second = await client.post(CHAT, json=chat_body(), headers={"x-request-id": "req-two"})
    assert first.status_code == 200 and second.status_code == 200
    assert second.json()["choices"][0]["message"]["content"] == completion_text("chutes")
    lines = await request_lines(caplog)
    assert (lines["req-one"]["provider"], lines["req-one"]["reason"]) == ("cerebras", "preferred")
    assert (lines["req-two"]["provider"], lines["req-two"]["reason"]) == ("chutes", "fallback: rpm")
    assert "status=200" in lines["req-two"].string
    assert len(providers.cerebras.received) == 1  # the proxy's own ledger kept the 2nd away


async def test_request_log_failover_500(proxy: Proxy, providers: Providers, caplog: pytest.LogCaptureFixture) -> None:
    """When Cerebras answers 500 the request line names chutes and 'failover: 500'."""
    caplog.set_level(logging.INFO)
    providers.cerebras.faults = Faults(status=500)
    async with client_for(proxy) as client:
        response = await client.post(CHAT, json=chat_body(), headers={"x-request-id": "req-500"})
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == completion_text("chutes")
    line = (await request_lines(caplog))["req-500"]
    assert line["provider"] == "chutes"
    assert line["reason"].startswith("failover: 500")
    assert "status=200" in line.string


async def test_request_log_for_failed_request(proxy: Proxy, providers: Providers, caplog: pytest.LogCaptureFixture) -> None:
    """When every provider fails, the request line records the status the client got (502)."""
    caplog.set_level(logging.INFO)
    providers.cerebras.faults = Faults(status=500)
    providers.chutes.faults = Faults(status=500)
    async with client_for(proxy) as client:
        response = await client.post(CHAT, json=chat_body(), headers={"x-request-id": "req-fail"})
    line = (await request_lines(caplog))["req-fail"]
    assert line["provider"] == "chutes"
    assert line["reason"].startswith("failover: 500")
    assert f"status={response.status_code}" in line.string
    assert "status=502" in line.string


async def test_request_log_for_rejected_request(proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    """A request refused by validation is still logged once, with its status and no provider."""
    caplog.set_level(logging.INFO)
    async with client_for(proxy) as client:
        response = await client.post(CHAT, content=b"{", headers={"x-request-id": "req-bad", "content-type": "application/json"})
    assert response.status_code == 400
    line = (await request_lines(caplog))["req-bad"]
    assert line["provider"] == "-"
    assert "status=400" in line.string
