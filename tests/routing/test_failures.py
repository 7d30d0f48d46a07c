"""Provider failures as neutral facts, routing's one table for them, and every door's rendering of
what that table can tell a client. Unit specs: no proxy runs."""

import json

import httpx
import pytest

from trioproxy.doors import gemini
from trioproxy.errors import ProxyError, error_types
from trioproxy.providers.failures import (NOT_HERE_CODES, Kind, UpstreamFailure, carried_failure, protocol_failure,
                                          status_failure, timeout_failure, transport_failure)
from trioproxy.routing.failures import HANDLING, backoff_for, client_error
from trioproxy.secrets import REDACTED, Sanitizer
from trioproxy.server.door_choice import DOORS

KEY = "csk-abcdefghijklmnop0123456789"
SCRUB = Sanitizer([KEY])


def failure(status: int, message: str = "", code: str | None = None, headers: dict[str, str] | None = None) -> UpstreamFailure:
    body = json.dumps({"error": {"message": message, "code": code}}).encode() if message or code else b""
    return status_failure("p", status, body, SCRUB, httpx.Headers(headers or {}))


def every_failure() -> list[UpstreamFailure]:
    """A failure of every status a provider can answer, with the bodies that change its kind,
    and every failure without a status."""
    failures = [transport_failure("p", httpx.ConnectError("refused")), transport_failure("p", httpx.ReadTimeout("slow")),
                timeout_failure("p", 5, "start its answer"), protocol_failure("p", "its body is not JSON")]
    for status in range(400, 600):
        failures += [failure(status), failure(status, "Model x does not exist")]
        failures += [failure(status, "refused", code) for code in NOT_HERE_CODES]
    return failures


def test_every_kind_has_a_handling() -> None:
    assert set(HANDLING) == set(Kind)
    assert {f.kind for f in every_failure()} == set(Kind), "a kind no provider answer can produce"


def test_every_door_renders_every_status_routing_can_answer_with() -> None:
    statuses = {client_error(f).status for f in every_failure()}
    assert statuses and all(400 <= status <= 599 for status in statuses)
    shapes = {door.api: door.error_body for door in DOORS.values()} | {gemini.API: gemini.error_body}
    for status in sorted(statuses):
        error = ProxyError(status, f"status {status}", type=error_types(status).openai)
        for api, render in shapes.items():
            body = json.loads(json.dumps(render(error)))
            inner = body["error"]
            assert inner["message"] == f"status {status}", (api, status)
            names = error_types(status)
            expected = {"messages": ("type", names.anthropic), gemini.API: ("status", names.google)}.get(
                api, ("type", names.openai))  # Chat and Responses speak OpenAI's vocabulary
            assert (expected[0], inner.get(expected[0])) == expected, (api, status, inner)


@pytest.mark.parametrize(("status", "message", "code", "kind"), [
    (503, "Model qwen-3-coder-480b does not exist or you do not have access to it.", None, Kind.MODEL_MISSING),
    (404, "model not found: openai/gpt-oss-120b", None, Kind.MODEL_MISSING),
    (404, "Not here", "model_not_found", Kind.MODEL_MISSING),
    (503, "No instances available for this model right now.", None, Kind.OVERLOADED),
    (503, "Service Unavailable", None, Kind.OVERLOADED),
    (400, "Model x does not exist", None, Kind.BAD_REQUEST),
    (400, "too long", "context_length_exceeded", Kind.NOT_HERE),
    (401, "Wrong API key", None, Kind.KEY_REFUSED),
    (429, "Tokens per minute limit exceeded", "token_quota_exceeded", Kind.RATE_LIMITED),
    (500, "oops", None, Kind.PROVIDER_ERROR),
])
def test_a_status_and_its_body_decide_the_kind(status: int, message: str, code: str | None, kind: Kind) -> None:
    assert failure(status, message, code).kind is kind


def test_what_the_client_is_told_follows_the_table() -> None:
    refused_key = client_error(failure(401, "Incorrect API key"))
    assert (refused_key.status, refused_key.code, refused_key.type) == (502, "provider_key_refused", "api_error")
    assert client_error(failure(500, "oops")).status == 502
    assert client_error(failure(504, "slow")).status == 504
    timed_out = client_error(timeout_failure("p", 5, "start its answer"))
    assert (timed_out.status, timed_out.code) == (504, "upstream_timeout")
    passed = client_error(failure(422, "bad field", "invalid_value"))
    assert (passed.status, passed.code, passed.message) == (422, "invalid_value", "bad field")
    assert not HANDLING[failure(422, "bad field").kind].failover
    assert HANDLING[failure(429, "slow down").kind].failover


def test_an_error_event_is_the_failure_of_the_status_its_code_stands_for() -> None:
    event = json.dumps({"error": {"message": "We're experiencing high traffic", "code": "queue_exceeded"}}).encode()
    busy = carried_failure("p", event, SCRUB)
    assert (busy.kind, busy.status, busy.window) == (Kind.RATE_LIMITED, 429, "capacity")
    backoff = backoff_for(busy, quota_cooldown=60, capacity_backoff=5)
    assert backoff is not None and (backoff.seconds, backoff.from_provider) == (5, False)


def test_the_wait_the_provider_names_wins() -> None:
    refused = failure(429, "Tokens per minute limit exceeded", headers={"x-ratelimit-reset-tokens-minute": "42"})
    assert (refused.window, refused.retry_after) == ("tpm", 42)
    backoff = backoff_for(refused, quota_cooldown=60, capacity_backoff=5)
    assert backoff is not None and (backoff.seconds, backoff.window, backoff.from_provider) == (42, "tpm", True)
    assert backoff_for(refused, 60, 5, honour_hints=False).seconds == 60  # type: ignore[union-attr]
    assert backoff_for(failure(503, "busy"), 60, 5, honour_hints=False) is None
    assert backoff_for(failure(500, "oops"), 60, 5) is None


def test_a_key_the_provider_echoes_is_scrubbed_from_every_field() -> None:
    body = json.dumps({"error": {"message": f"Incorrect API key provided: {KEY}", "code": KEY, "type": KEY,
                                 "param": KEY}}).encode()
    refused = status_failure("p", 401, body, SCRUB)
    told = client_error(refused)
    for text in (refused.message, refused.code, refused.type, refused.param, told.message):
        assert text is not None and KEY not in text and KEY[:8] not in text
    assert REDACTED in refused.message
