"""The ASGI application: paths, methods, auth, bodies, status codes. No protocol shapes, no policy.

Each front door (doors/) translates its protocol to the routing pipeline's one request shape and
back; this module only moves bytes between Hypercorn and the door, whichever it is.
"""

import json
import logging
import time
from collections.abc import Callable
from contextlib import aclosing
from functools import partial
from typing import Any
from urllib.parse import parse_qs

import trio

from ..doors import chat, gemini, messages, responses
from ..doors.exchange import Door, Exchange
from ..doors.responses_tools import refuse_hosted_tools
from ..errors import ProxyError, quoted
from ..jsoncodec import dump_json
from ..logs import REQUEST_ID
from ..routing.tokens import PromptEstimator
from ..routing.limits import RouteLimits
from ..runtime import Runtime
from . import operator_views as operator
from .accounting import finish_request
from .admission import admit_client, check_route
from .auth import ANYONE, Client
from .asgi import Message, Receive, Scope, Send, encode_headers, header, send_response
from .dashboard import Dashboard
from .disconnect import ClientDisconnected, RequestScope, SentSoFar
from .door_choice import DOORS, RESPONSES_PATH, error_door
from .drain import SHUTDOWN_ERROR, Drain
from .history import TrafficHistory
from .metrics import CONTENT_TYPE, Metrics
from .refusals import MESSAGE_CHARS, Refusals, refusal_reason
from .request_id import request_id_from
from .request_body import body_deadline, body_timeout, read_body, read_body_by
from .request_log import log_refused
from .serving import Serving
from .served import STATUS_CLIENT_CLOSED, ServedRequest

log = logging.getLogger("trioproxy.request")

MODELS_PATH = "/v1/models"
STATUS_PATH = "/v1/status"
HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
_ALLOWED = {**{path: "POST" for path in DOORS}, COUNT_TOKENS_PATH: "POST", MODELS_PATH: "GET",
            STATUS_PATH: "GET", HEALTH_PATH: "GET", METRICS_PATH: "GET"}
OVERHEAD_HEADER = "x-trioproxy-overhead-ms"
DROPPED_TOOLS_HEADER = "x-trioproxy-dropped-tools"  # hosted tools left out of what went upstream
_STREAM_HEADERS = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]


class ProxyApp:
    """The ASGI callable. State is passed in, so one process can host several proxies."""

    def __init__(self, runtime: Runtime) -> None:
        self.serving = Serving.of(runtime)  # replaced whole on reload; see runtime.py
        self._created = int(time.time())
        self.metrics = Metrics(live=lambda: operator.live_families(self.runtime))
        self.drain = Drain()
        self.history = TrafficHistory()
        self.refusals = Refusals()
        # The page shows what /v1/status shows, so it asks for the same (operator) key.
        self.dashboard = Dashboard(self.history, lambda: operator.status(self.runtime, self.metrics, self.refusals),
                                   lambda: self.serving.operator_keys)

    @property
    def runtime(self) -> Runtime:
        """The runtime new requests start on."""
        return self.serving.runtime

    @runtime.setter
    def runtime(self, runtime: Runtime) -> None:
        """Swap `runtime` in, with the keys and browser guard its settings describe."""
        self.serving = Serving.of(runtime)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            with self.drain.request():
                await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._refuse_websocket(scope, receive, send)

    async def _refuse_websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a WebSocket handshake with 426 and an error body: trioproxy speaks HTTP only.

        Codex CLI (with `supports_websockets`) tries `GET /v1/responses` with an Upgrade first; on
        426 it falls back to HTTP at once, where a 403 costs it five retries (about 6 s).
        """
        await receive()  # websocket.connect
        request_id = request_id_from(header(scope, b"x-request-id"))
        REQUEST_ID.set(request_id)
        path = scope["path"]
        error = ProxyError(426, "trioproxy speaks HTTP only: send this request as an HTTP POST, not over a WebSocket.",
                           code="websocket_not_supported")
        self._refused(request_id, "none", "GET", path, error)
        if "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": 1008})  # the server can only answer 403
            return
        await send({"type": "websocket.http.response.start", "status": error.status,
                    "headers": encode_headers({"content-type": "application/json", "x-request-id": request_id})})
        await send({"type": "websocket.http.response.body", "body": dump_json(error_door(path, False).body(error))})

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
        request_id = request_id_from(header(scope, b"x-request-id"))
        REQUEST_ID.set(request_id)  # every log line of this request carries it
        extra = {"x-request-id": request_id}
        serving = self.serving
        runtime = serving.runtime
        query = parse_qs(scope["query_string"].decode("latin-1")) if scope.get("query_string") else {}
        google_key = header(scope, b"x-goog-api-key")
        # Known before anything can fail, so that every error on Gemini's paths has Google's shape.
        errors = error_door(path, google_key is not None or "key" in query)
        host, origin = header(scope, b"host"), header(scope, b"origin")
        if origin is not None and (cors := serving.guard.cors_headers(origin, host)):
            send = _with_headers(send, cors)
            if method == "OPTIONS":  # a preflight from an allowed origin
                await send_response(send, 204, b"", "text/plain", {**extra, **serving.guard.preflight_headers(
                    header(scope, b"access-control-request-headers"))})
                return
        try:
            if (refused := serving.guard.refusal(host, origin)) is not None:
                raise refused
            if errors.gemini:
                await self._gemini(scope, query, google_key, receive, send, request_id)
                return
            authorization, x_api_key = header(scope, b"authorization"), header(scope, b"x-api-key")
            client = ANYONE
            if path.startswith("/v1/") and path != STATUS_PATH:
                client = serving.client_keys.identify(authorization, x_api_key)
            door = DOORS.get(path)
            if door is not None and method == "POST":
                await self._door(door, client, scope, receive, send, request_id)
            elif path == COUNT_TOKENS_PATH and method == "POST":
                raw = await read_body(scope, receive, self.runtime.config)
                counted = messages.count_tokens(raw, runtime.models.offering(client.routes), _estimator_for(runtime, client))
                await _send_json(send, 200, counted, extra)
            elif path.startswith(RESPONSES_PATH + "/"):
                raise responses.no_stored_responses()
            elif path == MODELS_PATH and method == "GET":
                listing = messages if header(scope, b"anthropic-version") else chat  # Anthropic's SDKs send it
                await _send_json(send, 200, listing.models_list(runtime.models.for_routes(client.routes), self._created), extra)
            elif path.startswith(MODELS_PATH + "/") and method == "GET":
                model = runtime.models.for_routes(client.routes).card(path[len(MODELS_PATH) + 1 :])
                listing = messages if header(scope, b"anthropic-version") else chat
                await _send_json(send, 200, listing.model_card(model, self._created), extra)
            elif path == HEALTH_PATH and method in ("GET", "HEAD"):
                code, body = operator.health(runtime, serving.operator_keys.accepts(authorization, x_api_key))
                await _send_json(send, code, body, extra)
            elif path == STATUS_PATH and method == "GET":
                serving.operator_keys.check(authorization, x_api_key)
                await _send_json(send, 200, operator.status(runtime, self.metrics, self.refusals), extra)
            elif path == METRICS_PATH and method == "GET":
                serving.operator_keys.check(authorization, x_api_key)
                await self._metrics(send, extra)
            elif Dashboard.owns(path):
                await self.dashboard.handle(path, method, authorization, x_api_key, send, extra)
            elif path in _ALLOWED or path.startswith(MODELS_PATH + "/"):
                allowed = _ALLOWED.get(path, "GET")
                raise ProxyError(405, f"Method {method} is not allowed on {quoted(path)}; use {allowed}.", code="method_not_allowed", headers={"allow": allowed})
            else:
                raise ProxyError(404, f"Unknown path {quoted(path)}.", code="not_found")
        except ProxyError as error:
            self._refused(request_id, errors.api, method, path, error)
            await _send_error(send, errors.body, error, extra)
        except Exception:
            log.exception("request %s failed inside trioproxy", request_id)
            await _send_error(send, errors.body, internal_error(request_id), extra)

    async def _gemini(self, scope: Scope, query: dict[str, list[str]], google_key: str | None, receive: Receive,
                      send: Send, request_id: str) -> None:
        """Gemini's paths: the key from `x-goog-api-key` or `?key=` (one of them), then the call."""
        serving = self.serving
        runtime = serving.runtime
        extra = {"x-request-id": request_id}
        query_keys = query.get("key", [])
        if len(query_keys) + (google_key is not None) > 1:
            raise ProxyError(400, "Send the API key once: in the x-goog-api-key header or in the `key` query "
                             "parameter, not both.", code="invalid_argument")
        presented = google_key or next(iter(query_keys), None) or header(scope, b"x-api-key")
        client = serving.client_keys.identify(header(scope, b"authorization"), presented)
        call = gemini.gemini_call(scope["path"])
        if scope["method"] != call.http_method:
            raise ProxyError(405, f"Method {scope['method']} is not allowed on {quoted(scope['path'])}; use {call.http_method}.",
                             code="method_not_allowed", headers={"allow": call.http_method})
        if call.method in (gemini.GENERATE, gemini.STREAM):
            parse = partial(gemini.parse, call=call, sse=query.get("alt") == ["sse"])
            await self._door(Door(gemini.API, parse, gemini.error_body), client, scope, receive, send, request_id)
        elif call.method == gemini.COUNT:
            raw = await read_body(scope, receive, self.runtime.config)
            counted = gemini.count_tokens(raw, runtime.models.offering(client.routes), call, _estimator_for(runtime, client))
            await _send_json(send, 200, counted, extra)
        elif call.model is None:
            await _send_json(send, 200, gemini.models_list(runtime.models.for_routes(client.routes), _limits(runtime)), extra)
        else:
            route = runtime.models.for_routes(client.routes).resolve(call.model)
            await _send_json(send, 200, gemini.model_card(route, _limits(runtime)(route)), extra)

    def _refused(self, request_id: str, api: str, method: str, path: str, error: ProxyError) -> None:
        """Log and count a request refused before a front door took it; an unknown path is
        counted by method and path family too."""
        scrub = self.runtime.sanitizer.text
        path, message = scrub(path, MESSAGE_CHARS), scrub(error.message, MESSAGE_CHARS)
        if error.code == "not_found":
            self.metrics.unknown_path(*self.refusals.unknown_path(method, path))
        self.refusals.observe(request_id, api, method, path, error.status, refusal_reason(error), message,
                              refused=True)
        log_refused(request_id, api, method, path, error, refusal_reason(error), message)

    async def _metrics(self, send: Send, extra: dict[str, str]) -> None:
        await send_response(send, 200, self.metrics.render(), CONTENT_TYPE, extra)

    async def _door(self, door: Door, client: Client, scope: Scope, receive: Receive, send: Send,
                    request_id: str) -> None:
        """One request through a front door: parse, route, answer; accounted for once at the end."""
        runtime = self.runtime  # a reload mid-request does not change what serves it
        served = ServedRequest(request_id, door.api, client=client.name)
        extra = {"x-request-id": request_id}
        sent = SentSoFar(send)
        config = self.runtime.config
        try:
            with RequestScope(scope, sent, body_deadline(config)) as request_scope:
                raw = await read_body_by(scope, receive, config, request_scope.body_deadline)
                request_scope.body_read()
                exchange = door.parse(raw, runtime.models.offering(client.routes))
                served.stream, served.model = exchange.request.stream, exchange.request.route
                if dropped := exchange.request.dropped_tools:
                    if runtime.config.hosted_tools == "refuse":
                        raise refuse_hosted_tools(list(dropped))
                    served.dropped_tools = dropped
                    extra[DROPPED_TOOLS_HEADER] = ", ".join(dropped)
                admit_client(runtime, client, exchange.request, served)
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("request %s tool parameters: %s", request_id, _tool_parameters(exchange.request.body))
                await request_scope.serve(receive, lambda send: self._serve(runtime, exchange, served, send, extra))
            if request_scope.body_timed_out:
                raise body_timeout()
        except ProxyError as error:
            served.status = error.status
            if served.route.provider == "-":  # refused before any provider was asked
                served.refusal = refusal_reason(error)
            served.message = runtime.sanitizer.text(error.message, MESSAGE_CHARS)
            await _send_error(send, door.error_body, error, extra)
        except ClientDisconnected:
            served.status = STATUS_CLIENT_CLOSED
        except Exception:  # a bug of ours: a 500 in the door's shape, the traceback in the log, once
            log.exception("request %s failed inside trioproxy", request_id)
            if not sent.started:
                served.status = 500
                await _send_error(send, door.error_body, internal_error(request_id), extra)
        finally:
            finish_request(served, runtime, self.metrics, self.history, self.refusals)

    async def _serve(self, runtime: Runtime, exchange: Exchange, served: ServedRequest, send: Send,
                     extra: dict[str, str]) -> None:
        request = exchange.request
        routing = runtime.routers[request.route].take(request)
        served.route = routing.outcome  # the one copy: routing writes it, the request's log line reads it
        if not request.stream:
            document = await routing.complete()
            served.status = 200
            await _send_json(send, 200, exchange.answer(document), {**extra, OVERHEAD_HEADER: _overhead_ms(served)})
            return
        async with routing.stream() as relay:
            served.status = 200
            served.first_byte_at = trio.current_time()
            headers = [*encode_headers({OVERHEAD_HEADER: _overhead_ms(served)}), (b"content-type", exchange.stream_content_type),
                       *_STREAM_HEADERS, *encode_headers(extra)]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            failure: ProxyError | None = None
            with self.drain.stream() as relaying:
                try:
                    async with aclosing(relay.batches()) as batches:
                        async for documents in batches:
                            if events := exchange.stream_events(documents):
                                await send({"type": "http.response.body", "body": events, "more_body": True})
                except ProxyError as error:
                    failure = error
                except Exception:  # after the 200: the stream ends with the door's error event
                    log.exception("request %s failed inside trioproxy mid-stream", served.request_id)
                    failure = internal_error(served.request_id)
            if relaying.cancelled_caught:  # shutdown's grace period is over: end it cleanly
                failure = SHUTDOWN_ERROR
            await send({"type": "http.response.body", "body": exchange.stream_end(failure), "more_body": False})



def _estimator_for(runtime: Runtime, client: Client) -> Callable[[str], PromptEstimator]:
    """Each route's prompt estimator, for a client that may use the route (a 403 otherwise)."""

    def estimator(route: str) -> PromptEstimator:
        check_route(client, route)
        return runtime.routers[route].estimator

    return estimator


def _limits(runtime: Runtime) -> Callable[[str], RouteLimits]:
    """Each route's limits, as every model list gives them."""
    return lambda route: runtime.models.card(route).limits


def _overhead_ms(served: ServedRequest) -> str:
    """The proxy's own share of the time so far, in milliseconds."""
    return f"{max(0.0, served.overhead_seconds(trio.current_time())) * 1000:.3f}"


def _tool_parameters(body: dict[str, Any]) -> str:
    keys = ("tools", "tool_choice", "parallel_tool_calls", "functions", "function_call")
    return json.dumps({key: body[key] for key in keys if key in body})


def internal_error(request_id: str) -> ProxyError:
    """What a client is told when trioproxy itself failed: the id to find the log's traceback by."""
    return ProxyError(500, f"trioproxy failed on this request (request id {request_id}); its log has the details.",
                      type="api_error", code="internal_error")


def _with_headers(send: Send, headers: dict[str, str]) -> Send:
    """`send` adding `headers` to the response's start."""
    encoded = encode_headers(headers)

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *encoded]}
        await send(message)

    return sending


async def _send_json(send: Send, status: int, document: Any, extra: dict[str, str] | None = None) -> None:
    await send_response(send, status, dump_json(document), "application/json", extra)


async def _send_error(send: Send, shape: Callable[[ProxyError], dict[str, Any]], error: ProxyError,
                      extra: dict[str, str] | None = None) -> None:
    await _send_json(send, error.status, shape(error), {**error.headers, **(extra or {})})
