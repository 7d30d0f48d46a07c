"""The provider side, hardened (issue 11): keys in provider texts never passed on, error bodies
bounded, trickling providers timed out, a late cancel still closes the provider's response,
Retry-After and reset headers in all their forms.
(A reload with requests in flight: tests/process/test_reload.py.)"""

import email.utils
import json
import time
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing

from support.chat import chat, stream_text
from support.fault_server import FINISH, HELLO, ROLE, Behaviour, eventually, start_fault_server
from support.proxies import Providers, Proxy, StartProxy, proxy_config
from support.raw_http import SSE_HEAD, json_head
from trioproxy.config.validators import ConfigError
from trioproxy.config.load import load_config
from trioproxy.providers.failures import Kind, UpstreamFailure
from trioproxy.providers.upstream import Deadlines, OpenAnswer, ProviderClient, Upstream
from trioproxy.quota.cooldown import CooldownTimers
from trioproxy.quota.contract import Reservation
from trioproxy.quota.ledger import QuotaLedger
from trioproxy.routing.request import ChatRequest
from trioproxy.routing.router import Router
from trioproxy.secrets import MAX_MESSAGE_CHARS, REDACTED, SECRET_RUN, Sanitizer
from trioproxy.testing.emulator import Faults, completion_text

CEREBRAS_KEY = "csk-4f9k2m8x7q1w3e5r6t8y9u0i2o4p6a8s0d1f3g5h7j9k"
CHUTES_KEY = "cpk_9a8s7d6f5g4h3j2k1l0q9w8e7r6t5y4u3i2o1p"
CLIENT_KEY = "tp-client-3v5b7n9m1q2w3e4r5t6y"


def leaked_runs(text: str, *secrets: str) -> list[str]:
    """Every run of `SECRET_RUN` characters of a secret that `text` contains."""
    return sorted({secret[i : i + SECRET_RUN] for secret in secrets for i in range(len(secret) - SECRET_RUN + 1)
                   if secret[i : i + SECRET_RUN] in text})


def authorized(proxy: Proxy, **kwargs: Any) -> httpx.AsyncClient:
    """A client for the proxy; timeouts come from the test's own `fail_after` (virtual time too)."""
    return httpx.AsyncClient(base_url=proxy.base_url, timeout=None, headers={"authorization": f"Bearer {CLIENT_KEY}"}, **kwargs)


async def read_stream(client: httpx.AsyncClient, body: dict[str, Any]) -> tuple[int, list[Any]]:
    async with client.stream("POST", "/chat/completions", json=body) as response:
        raw = await response.aread()
    events = [line[6:] for line in raw.decode().split("\n") if line.startswith("data: ")]
    return response.status_code, [event if event == "[DONE]" else json.loads(event) for event in events]


# =========================================================================== 1: keys in provider texts


def test_sanitizer_takes_out_whole_keys_and_long_runs_but_leaves_short_hints() -> None:
    sanitizer = Sanitizer([CEREBRAS_KEY, CLIENT_KEY, "short", ""])
    whole = sanitizer.text(f"Incorrect API key provided: {CEREBRAS_KEY}. See docs.")
    assert whole == f"Incorrect API key provided: {REDACTED}. See docs."
    middle = sanitizer.text(f"key ...{CEREBRAS_KEY[10:30]}... and {CLIENT_KEY}{CEREBRAS_KEY}")
    assert leaked_runs(middle, CEREBRAS_KEY, CLIENT_KEY) == [] and middle.count(REDACTED) == 2, middle
    hint = f"Incorrect API key provided: {CEREBRAS_KEY[:4]}...{CEREBRAS_KEY[-4:]}"
    assert sanitizer.text(hint) == hint  # a prefix and a suffix tell the operator which key
    assert sanitizer.text("a short secret") == f"a {REDACTED} secret"
    assert sanitizer.text("nothing to hide") == "nothing to hide"
    long = sanitizer.text("x" * 50_000 + CEREBRAS_KEY)
    assert len(long) <= MAX_MESSAGE_CHARS + 3 and long.startswith("xxx")


async def test_a_provider_repeating_its_key_reaches_no_client_endpoint_or_log(
    providers: Providers, start_proxy: StartProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """Both providers answer 401 saying the wrong key back (as OpenAI-style providers do): the
    client's error, /healthz, /v1/status and the log say what happened, with no key in them."""
    caplog.set_level("DEBUG")
    providers.cerebras.echo_key_in_401 = True
    providers.chutes.echo_key_in_401 = True
    proxy = await start_proxy(cerebras={"api_key": CEREBRAS_KEY}, chutes={"api_key": CHUTES_KEY}, client_api_keys=(CLIENT_KEY,))
    secrets = (CEREBRAS_KEY, CHUTES_KEY, CLIENT_KEY)
    async with authorized(proxy) as client:
        with trio.fail_after(10):
            answer = await client.post("/chat/completions", json=chat())
            assert answer.status_code == 502  # the proxy's keys were refused, not the client's
            assert "Incorrect API key provided" in answer.json()["error"]["message"]
            assert leaked_runs(answer.text, *secrets) == [], answer.text
            status, events = await read_stream(client, chat(stream=True))
            assert status == 502 and leaked_runs(str(events), *secrets) == []
            assert await eventually(lambda: providers.chutes.received_headers != [] and len(caplog.records) > 0)
            health = await client.get(proxy.base_url.removesuffix("/v1") + "/healthz")
            while "Incorrect API key" not in health.text:  # the prober's first round is under way
                await trio.sleep(0.02)
                health = await client.get(proxy.base_url.removesuffix("/v1") + "/healthz")
            operator = await client.get("/status")
    assert leaked_runs(health.text, *secrets) == [], health.text
    assert "Incorrect API key" in operator.text and leaked_runs(operator.text, *secrets) == [], operator.text
    assert "Incorrect API key" in caplog.text and leaked_runs(caplog.text, *secrets) == []


async def test_an_error_event_repeating_a_key_is_passed_on_without_it(
    nursery: trio.Nursery, providers: Providers, start_proxy: StartProxy
) -> None:
    """An error event in the middle of a stream comes to the client in OpenAI's shape, keyless
    (continuation off: no other provider finishes the answer)."""
    echo = f'data: {{"error": {{"message": "Key {CEREBRAS_KEY} was revoked mid-stream", "type": "auth"}}}}\n\n'.encode()
    server = await start_fault_server(nursery, lambda s: s.send_all(SSE_HEAD + ROLE + HELLO + echo + FINISH + b"data: [DONE]\n\n"))
    proxy = await start_proxy(cerebras={"base_url": server.url, "api_key": CEREBRAS_KEY}, max_continuations=0)
    async with authorized(proxy) as client:
        with trio.fail_after(10):
            status, events = await read_stream(client, chat(stream=True))
    assert status == 200 and stream_text(events) == "Hello" and events[-1] == "[DONE]"
    errors = [event["error"] for event in events if isinstance(event, dict) and "error" in event]
    assert errors and errors[0]["message"] == f"Key {REDACTED} was revoked mid-stream", events
    assert set(errors[0]) == {"message", "type", "param", "code"}


# =========================================================================== 3: error bodies bounded

HUGE = 32 * 1024 * 1024


@attrs.define
class HugeError:
    """A 500 whose JSON message is `HUGE` bytes, sent in pieces; counts the bodies sent whole."""

    whole: int = 0

    async def __call__(self, stream: trio.SocketStream) -> None:
        opening, closing = b'{"message": "', b'"}'
        await stream.send_all(json_head(500, len(opening) + HUGE + len(closing)) + opening)
        piece = b"x" * 65536
        for _ in range(HUGE // len(piece)):
            await stream.send_all(piece)
        await stream.send_all(closing)
        self.whole += 1


async def test_a_huge_error_body_gives_a_short_message_and_a_small_healthz(
    nursery: trio.Nursery, providers: Providers, start_proxy: StartProxy
) -> None:
    """Both providers answer a 500 with a 32 MB message, models list included: the client gets a
    short error, /healthz stays small, and the proxy stops reading after a bounded prefix."""
    huge = HugeError()
    server = await start_fault_server(nursery, huge)
    server.models = huge
    proxy = await start_proxy(cerebras={"base_url": server.url}, chutes={"base_url": server.url})
    async with authorized(proxy) as client:
        with trio.fail_after(20):
            answer = await client.post("/chat/completions", json=chat())
            health = await client.get(proxy.base_url.removesuffix("/v1") + "/healthz")
            while '"last_error":""' in health.text.replace(" ", ""):
                await trio.sleep(0.02)
                health = await client.get(proxy.base_url.removesuffix("/v1") + "/healthz")
    assert answer.status_code == 502
    assert 0 < len(answer.json()["error"]["message"]) <= MAX_MESSAGE_CHARS + 3
    assert len(answer.content) < 4096 and len(health.content) < 16_384, (len(answer.content), len(health.content))
    assert huge.whole == 0, "the proxy read a huge error body to its end"
    assert await eventually(lambda: server.open == 0)


# =========================================================================== 4: trickling providers

# Virtual time: the clock jumps ahead whenever every task waits; loopback I/O arrives in far
# less than the threshold, so only timers make it jump.
@pytest.fixture
def virtual_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.01)


def trickle(*head: bytes, rest: bytes) -> Behaviour:
    """Send `head`, then `rest` one byte a second: never a gap long enough for a read timeout."""

    async def send(stream: trio.SocketStream) -> None:
        for part in head:
            await stream.send_all(part)
        for index in range(len(rest)):
            await stream.send_all(rest[index : index + 1])
            await trio.sleep(1)
        while await stream.receive_some(65536):
            pass

    return send


PADDING = b"x" * 100_000
TRICKLES: dict[str, tuple[Behaviour, tuple[bool, ...]]] = {
    # name: (behaviour, the request kinds it applies to: stream or not)
    "status-line": (trickle(rest=b"HTTP/1.1 200 OK\r\nx-padding: " + PADDING), (False, True)),
    "error-body": (trickle(json_head(500, 100_000), rest=PADDING), (False, True)),
    "first-event": (trickle(SSE_HEAD, rest=ROLE), (True,)),
    "plain-answer": (trickle(json_head(200, 100_000), rest=PADDING), (False,)),
}
CASES = [(name, stream) for name, (_, kinds) in TRICKLES.items() for stream in kinds]


@pytest.mark.parametrize(("case", "stream"), CASES, ids=[f"{n}-{'stream' if s else 'plain'}" for n, s in CASES])
async def test_a_trickling_provider_is_failed_over_before_the_first_byte(
    virtual_clock: trio.testing.MockClock, nursery: trio.Nursery, providers: Providers, start_proxy: StartProxy,
    case: str, stream: bool,
) -> None:
    """Cerebras sends a byte a second, so no read ever times out; the first-event deadline (the
    whole-answer one for a plain answer) cuts it off and Chutes answers, with no error shown."""
    server = await start_fault_server(nursery, TRICKLES[case][0])
    proxy = await start_proxy(cerebras={"base_url": server.url}, answer_timeout_ms=120_000)
    started = trio.current_time()
    async with authorized(proxy) as client:
        with trio.fail_after(900):
            if stream:
                status, events = await read_stream(client, chat(stream=True))
                assert status == 200 and stream_text(events) == completion_text("chutes"), events
            else:
                answer = await client.post("/chat/completions", json=chat())
                assert answer.status_code == 200, answer.text
    waited = trio.current_time() - started
    deadline = 120 if case == "plain-answer" else 60  # answer_timeout_ms here; first_event_timeout_ms's default
    assert deadline <= waited < deadline + 5, waited
    assert server.requests == 1
    assert await eventually(lambda: server.open == 0, seconds=30)  # virtual: noticed at its next byte


@pytest.mark.parametrize("continuations", [0, 2], ids=["continuation-off", "continuation-on"])
async def test_a_stream_that_falls_silent_ends_with_an_error_event_or_is_continued(
    virtual_clock: trio.testing.MockClock, nursery: trio.Nursery, providers: Providers, start_proxy: StartProxy,
    continuations: int,
) -> None:
    """After its first events the provider trickles bytes that never complete an event: once the
    stream has been silent for stream_idle_timeout_ms, the client gets an error event and [DONE],
    or, with continuation on, Chutes (answering the same text) finishes the answer."""
    providers.chutes.speaks_as = "cerebras"
    server = await start_fault_server(nursery, trickle(SSE_HEAD, ROLE, HELLO, rest=b'data: {"choices": ' + PADDING))
    proxy = await start_proxy(cerebras={"base_url": server.url}, stream_idle_timeout_ms=45_000,
                              max_continuations=continuations)
    started = trio.current_time()
    async with authorized(proxy) as client:
        with trio.fail_after(900):
            status, events = await read_stream(client, chat(stream=True))
    assert 45 <= trio.current_time() - started < 50
    assert status == 200 and events[-1] == "[DONE]"
    if continuations:
        assert stream_text(events) == completion_text("cerebras") and len(providers.chutes.received) == 1
        assert not any(isinstance(event, dict) and "error" in event for event in events)
    else:
        assert stream_text(events) == "Hello"
        assert events[-2]["error"]["code"] == "upstream_timeout", events
        assert providers.chutes.received == []
    assert await eventually(lambda: server.open == 0, seconds=30)  # virtual: noticed at its next byte


def test_upstream_deadlines_are_settings_with_env_names_and_checks() -> None:
    config = load_config(None, environ={"FIRST_EVENT_TIMEOUT": "5000", "ANSWER_TIMEOUT": "90000", "STREAM_IDLE_TIMEOUT": "7000"})
    assert (config.first_event_timeout_ms, config.answer_timeout_ms, config.stream_idle_timeout_ms) == (5000, 90000, 7000)
    defaults = load_config(None, environ={})
    assert (defaults.first_event_timeout_ms, defaults.answer_timeout_ms, defaults.stream_idle_timeout_ms) == (60_000, 600_000, 60_000)
    with pytest.raises(ConfigError, match="stream_idle_timeout_ms: must be greater than 0.*STREAM_IDLE_TIMEOUT"):
        load_config(None, environ={"STREAM_IDLE_TIMEOUT": "0"})


# =========================================================================== 6: a late cancel


class CancellingLedger(QuotaLedger):
    """Cancels `scope` the moment the provider's quota headers are synced: the race of issue 11."""

    scope: trio.CancelScope | None = None

    async def sync(self, reservation: Reservation, figures: Any) -> None:
        if self.scope is not None:
            self.scope.cancel()
        await super().sync(reservation, figures)


class RecordingUpstream(Upstream):
    """Keeps every chat response it opens, so the test can see whether it was closed."""

    opened: list[OpenAnswer]

    async def open_chat(self, body: dict[str, Any], api_key: str) -> OpenAnswer:
        answer = await super().open_chat(body, api_key)
        self.opened.append(answer)
        return answer


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_cancel_while_syncing_quota_headers_closes_the_response(
    nursery: trio.Nursery, providers: Providers, stream: bool
) -> None:
    head = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nx-ratelimit-remaining-tokens-minute: 500\r\n"
            b"x-ratelimit-reset-tokens-minute: 30\r\n\r\n")
    server = await start_fault_server(nursery, lambda s: _send_and_hold(s, head))
    config = attrs.evolve(proxy_config(providers).cerebras, base_url=server.url)
    client = ProviderClient.for_provider(config, 5.0)
    upstream = RecordingUpstream(config, client, Sanitizer(()), Deadlines(10, 10, 10))
    upstream.opened = []
    ledger = CancellingLedger([config])
    router = Router([upstream], ledger, CooldownTimers(nursery, ledger), 300, 5)
    request = ChatRequest(body=chat(stream=stream), stream=stream)
    with trio.fail_after(5):
        with trio.CancelScope() as scope:
            ledger.scope = scope
            if stream:
                async with router.take(request).stream():
                    pytest.fail("the stream opened although its request was cancelled")
            else:
                await router.take(request).complete()
    assert scope.cancelled_caught and len(upstream.opened) == 1
    assert upstream.opened[0].closed, "the provider's response was left open"
    assert await eventually(lambda: server.open == 0)
    await client.aclose()


async def _send_and_hold(stream: trio.SocketStream, head: bytes) -> None:
    await stream.send_all(head)
    while await stream.receive_some(65536):
        pass


# =========================================================================== 12: Retry-After, reloads


def in_seconds(seconds: float) -> str:
    return email.utils.formatdate(time.time() + seconds, usegmt=True)


def quota_429(message: str, headers: dict[str, str]) -> Behaviour:
    body = json.dumps({"message": message, "type": "too_many_requests_error", "param": "quota",
                       "code": "request_quota_exceeded"}).encode()
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())

    async def send(stream: trio.SocketStream) -> None:
        head = f"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n{lines}\r\n"
        await stream.send_all(head.encode() + body)

    return send


RPM = "Requests per minute limit exceeded - too many requests sent."
TPM = "Tokens per minute limit exceeded - too many tokens processed."
HINTS = {
    "retry-after-date": (RPM, lambda: {"retry-after": in_seconds(120)}, 120),
    "retry-after-duration": (RPM, lambda: {"retry-after": "1m30s"}, 90),
    "reset-header-date": (TPM, lambda: {"x-ratelimit-reset-tokens-minute": in_seconds(45)}, 45),
    "reset-header-duration": (TPM, lambda: {"x-ratelimit-reset-tokens-minute": "2m"}, 120),
}


async def cooldown_seconds(proxy: Proxy, provider: str = "cerebras") -> float:
    async with authorized(proxy) as client:
        status = (await client.get("/status")).json()
    entry = next(p for p in status["providers"] if p["name"] == provider)
    return entry["accounts"][provider]["cooldown_seconds"]


@pytest.mark.parametrize("hint", list(HINTS))
async def test_a_429_cools_down_for_the_time_its_headers_name_in_any_form(
    nursery: trio.Nursery, providers: Providers, start_proxy: StartProxy, hint: str
) -> None:
    message, headers, seconds = HINTS[hint]
    server = await start_fault_server(nursery, quota_429(message, headers()))
    proxy = await start_proxy(cerebras={"base_url": server.url}, client_api_keys=(CLIENT_KEY,))
    async with authorized(proxy) as client:
        assert (await client.post("/chat/completions", json=chat())).status_code == 200  # Chutes served it
    assert seconds - 3 <= await cooldown_seconds(proxy) <= seconds, hint


@pytest.mark.parametrize("honour", [True, False], ids=["honoured", "not-honoured"])
async def test_honour_retry_after_false_restores_the_fixed_cooldown(
    providers: Providers, start_proxy: StartProxy, honour: bool
) -> None:
    """A capacity 429 naming one second: honoured, the cooldown is that second; with
    honour_retry_after = false, every 429 waits cooldown_period_ms as the original did."""
    providers.cerebras.faults = Faults(queue_exceeded=True, remaining=1)
    proxy = await start_proxy(honour_retry_after=honour, cooldown_period_ms=200_000, client_api_keys=(CLIENT_KEY,))
    async with authorized(proxy) as client:
        answer = await client.post("/chat/completions", json=chat())
    assert answer.status_code == 200 and providers.chutes.served == 1
    cooldown = await cooldown_seconds(proxy)
    assert cooldown <= 1 if honour else 197 <= cooldown <= 200, cooldown


async def test_an_answer_without_usage_is_settled_from_its_text(nursery: trio.Nursery, providers: Providers) -> None:
    """A non-streamed answer without `usage` books its estimated prompt and its text's tokens,
    not the whole completion budget the reservation held."""
    from trioproxy.routing.tokens import estimate_prompt_tokens

    answer = json.dumps({"id": "x", "object": "chat.completion", "model": "qwen-3-coder", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "a" * 400}}]}).encode()

    async def send(stream: trio.SocketStream) -> None:
        await stream.send_all(json_head(200, len(answer)) + answer)

    server = await start_fault_server(nursery, send)
    config = attrs.evolve(proxy_config(providers).cerebras, base_url=server.url)
    client = ProviderClient.for_provider(config, 5.0)
    ledger = QuotaLedger([config], clock=lambda: 0.0)  # still: the minute's bucket does not refill
    router = Router([Upstream(config, client, Sanitizer(()), Deadlines(10, 10, 10))], ledger,
                    CooldownTimers(nursery, ledger), 300, 5)
    body = chat(max_tokens=5000)
    with trio.fail_after(5):
        await router.take(ChatRequest(body=body, stream=False)).complete()
    (state,) = ledger.provider_snapshot("cerebras").values()
    # about 100 tokens of text and a prompt of some ten, not the 5000 the client allowed
    assert 100 < state["tpm"]["used"] <= 100 + 2 * estimate_prompt_tokens(body) + 10, state["tpm"]
    await client.aclose()


@pytest.mark.parametrize(("first_event", "answer", "status_line_at", "expected"), [
    (5, 30, None, "did not start its answer within 5 s"),  # no status line
    (5, 30, 1, "did not finish its answer within 30 s"),  # the status line came, the body did not
    (60, 30, None, "did not finish its answer within 30 s"),  # the whole answer's deadline is the sooner
])
async def test_a_plain_answer_times_out_on_the_deadline_that_ran_out(
    autojump_clock: trio.testing.MockClock, providers: Providers, first_event: float, answer: float,
    status_line_at: float | None, expected: str,
) -> None:
    """A non-streamed answer's deadlines, to its status line and to its whole body, both count
    from sending; the failure names the one that ran out, at the moment it ran out."""
    config = proxy_config(providers).cerebras
    upstream = Upstream(config, ProviderClient.for_provider(config, 5.0), Sanitizer(()), Deadlines(first_event, answer, 10))
    started = trio.current_time()
    with pytest.raises(UpstreamFailure) as failure:
        with upstream.answer_deadlines() as deadlines:
            if status_line_at is not None:
                await trio.sleep(status_line_at)
                deadlines.started()
            await trio.sleep_forever()
    assert expected in failure.value.message and failure.value.kind is Kind.TIMEOUT
    assert trio.current_time() - started == (min(first_event, answer) if status_line_at is None else answer)
