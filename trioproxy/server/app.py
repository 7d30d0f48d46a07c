"""The ASGI application: paths, methods, status codes and SSE framing. No routing policy here."""

import json
import logging
import time
import uuid
from contextlib import aclosing
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from ..doors.chat import ApiError, ChatRequest, model_card, models_list, parse_chat_request
from .drain import SHUTDOWN_EVENT, Drain
from ..jsoncodec import dump_json
from ..logs import REQUEST_ID
from .metrics import Metrics
from ..quota.contract import WINDOW_NAMES, Ledger
from ..routing.router import RequestRecord, Router
from ..runtime import Runtime

log = logging.getLogger("trioproxy.request")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
STATUS_PATH = "/v1/status"
HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"
_ALLOWED = {CHAT_PATH: "POST", MODELS_PATH: "GET", STATUS_PATH: "GET", HEALTH_PATH: "GET", METRICS_PATH: "GET"}
OVERHEAD_HEADER = "x-trioproxy-overhead-ms"
_STATUS_CLIENT_CLOSED = 499  # nginx's convention for "client went away", for the log only


class ClientDisconnected(Exception):
    """The client closed its connection before we were done."""


def _json_headers(extra: dict[str, str] | None = None) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", b"application/json")]
    headers.extend((k.encode(), v.encode()) for k, v in (extra or {}).items())
    return headers


class ProxyApp:
    """The ASGI callable. State is passed in, so one process can host several proxies."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime  # replaced whole on reload; see runtime.py
        self._created = int(time.time())
        self.metrics = Metrics()
        self.drain = Drain()

    @property
    def _router(self) -> Router:
        return self.runtime.router

    @property
    def _ledger(self) -> Ledger:
        return self.runtime.ledger

    @property
    def _proxy_model(self) -> str:
        return self.runtime.config.proxy_model_name

    @property
    def _max_body_bytes(self) -> int:
        return self.runtime.config.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            # Closing before accepting makes Hypercorn answer the upgrade with 403.
            await receive()
            await send({"type": "websocket.close", "code": 1008})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        # Hypercorn's Trio worker expects a lifespan answer; the supervisor owns real start-up.
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        request_id = _header(scope, b"x-request-id") or uuid.uuid4().hex[:16]
        REQUEST_ID.set(request_id)  # every log line of this request carries it
        extra = {"x-request-id": request_id}
        try:
            if path.startswith("/v1/"):
                self.runtime.client_keys.check(_header(scope, b"authorization"))
            if path == CHAT_PATH and method == "POST":
                await self._chat(scope, receive, send, request_id)
            elif path == MODELS_PATH and method == "GET":
                await _send_json(send, 200, models_list(self._proxy_model, self._created), extra)
            elif path.startswith(MODELS_PATH + "/") and method == "GET":
                await self._model(path[len(MODELS_PATH) + 1 :], send, extra)
            elif path == HEALTH_PATH and method in ("GET", "HEAD"):
                await self._health(send, extra)
            elif path == STATUS_PATH and method == "GET":
                await _send_json(send, 200, self._status(), extra)
            elif path == METRICS_PATH and method == "GET":
                await self._metrics(send, extra)
            elif path in _ALLOWED or path.startswith(MODELS_PATH + "/"):
                allowed = _ALLOWED.get(path, "GET")
                error = ApiError(405, f"Method {method} is not allowed on {path}; use {allowed}.", code="method_not_allowed")
                await _send_error(send, error, {**extra, "allow": allowed})
            else:
                await _send_error(send, ApiError(404, f"Unknown path {path}.", code="not_found"), extra)
        except ApiError as error:
            await _send_error(send, error, extra)

    async def _model(self, model_id: str, send: Send, extra: dict[str, str]) -> None:
        if model_id != self._proxy_model:
            raise ApiError(404, f"The model `{model_id}` does not exist.", code="model_not_found", param="model")
        await _send_json(send, 200, model_card(self._proxy_model, self._created), extra)

    def _provider_state(self, name: str) -> dict[str, Any]:
        health = self._router.health[name]
        return {
            "usable": health.usable and not self._ledger.in_cooldown(name),
            **attrs.asdict(health),
            "accounts": self._ledger.provider_snapshot(name),
        }

    async def _health(self, send: Send, extra: dict[str, str]) -> None:
        providers = {upstream.name: self._provider_state(upstream.name) for upstream in self._router.upstreams}
        usable = any(state["usable"] for state in providers.values())
        body = {"status": "ok" if usable else "unavailable", "providers": providers, "quota_store": self._ledger.store_status()}
        await _send_json(send, 200 if usable else 503, body, extra)

    def _status(self) -> dict[str, Any]:
        """Everything an operator asks: per provider and key, state, quota, traffic, reroutes."""
        providers = []
        for upstream in self._router.upstreams:
            served = {
                "requests": sum(n for (p, _, status), n in self.metrics.requests.items() if p == upstream.name and status == 200),
                "prompt_tokens": self.metrics.tokens[(upstream.name, "prompt")],
                "completion_tokens": self.metrics.tokens[(upstream.name, "completion")],
            }
            providers.append({"name": upstream.name, "model": upstream.config.model, **self._provider_state(upstream.name), "served_since_start": served})
        return {
            "model": self._proxy_model,
            "providers": providers,
            "reroutes": dict(self.metrics.reroutes),
            "quota_store": self._ledger.store_status(),
        }

    async def _metrics(self, send: Send, extra: dict[str, str]) -> None:
        body = self.metrics.render(self._gauges()).encode()
        headers = [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]
        headers.extend((k.encode(), v.encode()) for k, v in extra.items())
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _gauges(self) -> list[tuple[str, str, str, float]]:
        gauges = _quota_store_gauges(self._ledger.store_status())
        for upstream in self._router.upstreams:
            health = self._router.health[upstream.name]
            gauges.append(("trioproxy_provider_up", "1 while the prober finds the provider usable.", f'provider="{upstream.name}"', float(health.usable)))
            for account, state in self._ledger.provider_snapshot(upstream.name).items():
                labels = f'provider="{upstream.name}",account="{account}"'
                gauges.append(("trioproxy_cooldown_active", "1 while an account cools down.", labels, float(state["cooldown_seconds"] > 0)))
                for window in WINDOW_NAMES:
                    limit, remaining = state[window]["limit"], state[window].get("provider_remaining")
                    left = [value for value in (limit - state[window]["used"] if limit else None, remaining) if value is not None]
                    if left:
                        gauges.append(("trioproxy_quota_remaining", "What is left of each limited window (the smaller of ours and the provider's figure).", f'{labels},window="{window}"', float(max(0, min(left)))))
        return gauges

    async def _chat(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        record = RequestRecord(request_id)
        extra = {"x-request-id": request_id}
        try:
            request = parse_chat_request(await self._read_body(scope, receive), self._proxy_model)
            record.stream = request.stream
            if log.isEnabledFor(logging.DEBUG):
                log.debug("request %s tool parameters: %s", request_id, _tool_parameters(request.body))
            await _cancel_on_disconnect(receive, send, lambda send: self._serve_chat(request, record, send, extra))
        except ApiError as error:
            record.status = error.status
            await _send_error(send, error, extra)
        except ClientDisconnected:
            record.status = _STATUS_CLIENT_CLOSED
        finally:
            _finish_request(record, self._ledger, self.metrics, [upstream.name for upstream in self._router.upstreams])

    async def _serve_chat(self, request: ChatRequest, record: RequestRecord, send: Send, extra: dict[str, str]) -> None:
        if not request.stream:
            document = await self._router.complete(request, record)
            record.status = 200
            await _send_json(send, 200, document, {**extra, OVERHEAD_HEADER: _overhead_ms(record)})
            return
        async with self._router.stream(request, record) as relay:
            record.status = 200
            record.first_byte_at = trio.current_time()
            headers = [
                (OVERHEAD_HEADER.encode(), _overhead_ms(record).encode()),
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no"),
                *((k.encode(), v.encode()) for k, v in extra.items()),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            with self.drain.stream() as relaying:
                async with aclosing(relay.chunks()) as chunks:
                    async for chunk in chunks:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if relaying.cancelled_caught:  # shutdown's grace period is over: end it cleanly
                await send({"type": "http.response.body", "body": SHUTDOWN_EVENT + b"data: [DONE]\n\n", "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_body_bytes:
            raise _too_large(self._max_body_bytes)
        chunks: list[bytes] = []
        size = 0
        # A client that stops sending its body would hold a connection and a task forever.
        deadline = trio.current_time() + self.runtime.config.request_timeout_ms / 1000
        while True:
            with trio.move_on_at(deadline):
                message = await receive()
            if trio.current_time() >= deadline:
                raise ApiError(408, "The request body did not arrive in time.", code="request_timeout")
            if message["type"] == "http.disconnect":
                raise ClientDisconnected()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body_bytes:
                raise _too_large(self._max_body_bytes)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _quota_store_gauges(store: dict[str, Any]) -> list[tuple[str, str, str, float]]:
    """A shared ledger's reachability; the memory ledger has none to show."""
    if "connected" not in store:
        return []
    return [
        ("trioproxy_quota_store_up", "1 while the shared quota ledger (Redis) answers.", "", float(store["connected"])),
        ("trioproxy_quota_store_outages", "Times the shared quota ledger became unreachable since start.", "", float(store["outages"])),
        ("trioproxy_quota_store_dropped_updates", "Settlements and header figures that could not reach Redis.", "", float(store["dropped_updates"])),
    ]


def _overhead_ms(record: RequestRecord) -> str:
    """The proxy's own share of the time so far, in milliseconds."""
    return f"{max(0.0, record.overhead_seconds(trio.current_time())) * 1000:.3f}"


def _tool_parameters(body: dict[str, Any]) -> str:
    keys = ("tools", "tool_choice", "parallel_tool_calls", "functions", "function_call")
    return json.dumps({key: body[key] for key in keys if key in body})


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"Request body is larger than the limit of {limit} bytes.", code="request_too_large")


async def _cancel_on_disconnect(receive: Receive, send: Send, work: Callable[[Send], Awaitable[None]]) -> None:
    """Run `work(send)`, cancelling it the moment the client disconnects (Hypercorn never cancels us).

    Without this, a proxy keeps reading, and paying for, upstream tokens nobody will read.
    """
    finished = False  # the last body message is on its way: a disconnect now is the normal end
    disconnected = False

    async def tracking_send(message: Message) -> None:
        nonlocal finished
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            finished = True
        await send(message)

    async def watch(cancel_scope: trio.CancelScope) -> None:
        nonlocal disconnected
        while (await receive())["type"] != "http.disconnect":
            pass
        if not finished:
            disconnected = True
            cancel_scope.cancel()

    refused: ApiError | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch, nursery.cancel_scope)
        try:
            await work(tracking_send)
        except ApiError as error:
            refused = error  # raised below, unwrapped: a nursery would put it in an ExceptionGroup
        nursery.cancel_scope.cancel()
    if disconnected:
        raise ClientDisconnected()
    if refused is not None:
        raise refused


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def _send_json(send: Send, status: int, document: Any, extra: dict[str, str] | None = None) -> None:
    body = dump_json(document)
    await send({"type": "http.response.start", "status": status, "headers": _json_headers(extra)})
    await send({"type": "http.response.body", "body": body})


async def _send_error(send: Send, error: ApiError, extra: dict[str, str] | None = None) -> None:
    await _send_json(send, error.status, error.body(), {**error.headers, **(extra or {})})


def _finish_request(record: RequestRecord, ledger: Ledger, metrics: Metrics, providers: list[str]) -> None:
    """The one place a request is accounted for: its log line and its metrics."""
    now = trio.current_time()
    latency = now - record.started
    first_byte = record.first_byte_at - record.started if record.first_byte_at is not None else None
    overhead = record.overhead_seconds(record.first_byte_at or now) if record.status == 200 else None
    metrics.observe(
        record.provider, record.stream, record.status, record.reason,
        record.prompt_tokens, record.completion_tokens, latency, first_byte, overhead,
    )
    if not log.isEnabledFor(logging.INFO):
        return
    quota = " ".join(filter(None, (ledger.summary(provider) for provider in providers)))
    log.info(
        "request %s provider=%s reason=%r stream=%s status=%d prompt_tokens=%s completion_tokens=%s latency_ms=%.0f quota: %s",
        record.request_id,
        record.account if record.account != "-" else record.provider,
        record.reason,
        "yes" if record.stream else "no",
        record.status,
        record.prompt_tokens if record.prompt_tokens is not None else "-",
        record.completion_tokens if record.completion_tokens is not None else "-",
        latency * 1000,
        quota or "-",
    )
