"""The ASGI application: paths, methods, status codes and SSE framing. No routing policy here."""

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from .api import ApiError, ChatRequest, dump_json, model_card, models_list, parse_chat_request
from .auth import ClientKeys
from .quota import QuotaLedger
from .router import RequestRecord, Router

log = logging.getLogger("trioproxy.request")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
HEALTH_PATH = "/healthz"
_ALLOWED = {CHAT_PATH: "POST", MODELS_PATH: "GET", HEALTH_PATH: "GET"}
_STATUS_CLIENT_CLOSED = 499  # nginx's convention for "client went away", for the log only


class ClientDisconnected(Exception):
    """The client closed its connection before we were done."""


def _json_headers(extra: dict[str, str] | None = None) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", b"application/json")]
    headers.extend((k.encode(), v.encode()) for k, v in (extra or {}).items())
    return headers


class ProxyApp:
    """The ASGI callable. State is passed in, so one process can host several proxies."""

    def __init__(
        self,
        proxy_model: str,
        router: Router,
        ledger: QuotaLedger,
        max_body_bytes: int,
        client_keys: ClientKeys | None = None,
    ) -> None:
        self._proxy_model = proxy_model
        self._client_keys = client_keys or ClientKeys(())
        self._router = router
        self._ledger = ledger
        self._max_body_bytes = max_body_bytes
        self._created = int(time.time())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        # websocket scopes are refused by closing without accepting

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
        extra = {"x-request-id": request_id}
        try:
            if path.startswith("/v1/"):
                self._client_keys.check(_header(scope, b"authorization"))
            if path == CHAT_PATH and method == "POST":
                await self._chat(scope, receive, send, request_id)
            elif path == MODELS_PATH and method == "GET":
                await _send_json(send, 200, models_list(self._proxy_model, self._created), extra)
            elif path.startswith(MODELS_PATH + "/") and method == "GET":
                await self._model(path[len(MODELS_PATH) + 1 :], send, extra)
            elif path == HEALTH_PATH and method in ("GET", "HEAD"):
                await self._health(send, extra)
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

    async def _health(self, send: Send, extra: dict[str, str]) -> None:
        providers = {
            upstream.name: {
                "usable": self._router.health[upstream.name].usable and not self._ledger.in_cooldown(upstream.name),
                **attrs.asdict(self._router.health[upstream.name]),
                "accounts": self._ledger.provider_snapshot(upstream.name),
            }
            for upstream in self._router.upstreams
        }
        usable = any(state["usable"] for state in providers.values())
        body = {"status": "ok" if usable else "unavailable", "providers": providers}
        await _send_json(send, 200 if usable else 503, body, extra)

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
            _log_request(record, self._ledger, [upstream.name for upstream in self._router.upstreams])

    async def _serve_chat(self, request: ChatRequest, record: RequestRecord, send: Send, extra: dict[str, str]) -> None:
        if not request.stream:
            document = await self._router.complete(request, record)
            record.status = 200
            await _send_json(send, 200, document, extra)
            return
        async with self._router.stream(request, record) as relay:
            record.status = 200
            headers = [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no"),
                *((k.encode(), v.encode()) for k, v in extra.items()),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            async for chunk in relay.chunks():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_body_bytes:
            raise _too_large(self._max_body_bytes)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body_bytes:
                raise _too_large(self._max_body_bytes)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


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


def _log_request(record: RequestRecord, ledger: QuotaLedger, providers: list[str]) -> None:
    latency_ms = (trio.current_time() - record.started) * 1000
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
        latency_ms,
        quota or "-",
    )
