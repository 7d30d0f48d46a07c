"""Talking to one provider over httpx: sending, SSE reading; failures as `failures` maps them.

Every httpx exception is translated here, at one boundary, into `UpstreamFailure`.
"""

import urllib.request
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from types import TracebackType
from typing import Any

import httpx
import trio
from attrs import define, field, frozen

from .. import __version__
from ..config.schema import ProviderConfig
from ..jsoncodec import dump_json, load_json, load_utf8_json
from ..secrets import MAX_ERROR_BODY_BYTES, Sanitizer
from .failures import (UpstreamFailure, carried_error, carried_failure, protocol_failure, status_failure,
                       timeout_failure, transport_failure)
from .ratelimit import QuotaHeaders, header_dict
from .transport import LeanTransport

_HEADERS = {"user-agent": f"trioproxy/{__version__}"}
_USER_AGENT = (b"user-agent", _HEADERS["user-agent"].encode())
_JSON = (b"content-type", b"application/json")
DONE = "[DONE]"  # the data of the event that ends a chat stream
_DONE_BYTES = DONE.encode()
DRAIN_SECONDS = 1.0  # how long to read on after a stream's [DONE] for its end


@frozen
class Deadlines:
    """How long a provider may take, in seconds, beyond the transport's bound on each gap between
    bytes: a provider that trickles bytes never trips that one."""

    first_event: float  # from sending to the status line, and for a stream to its first event
    answer: float  # from sending to the whole of a non-streamed answer
    stream_idle: float  # between two events of a stream


@frozen
class AnswerBounds:
    """How much of a provider's answer trioproxy holds at once, in bytes (the settings
    max_answer_bytes and max_stream_event_bytes; these defaults are theirs)."""

    answer: int = 32 * 1024 * 1024  # a whole non-streamed answer
    event: int = 4 * 1024 * 1024  # one SSE event of a stream


def _sse_data(block: bytes) -> bytes | None:
    """The joined `data:` lines of one SSE event, as bytes; None for an event without data.

    Comments (`:`), `event:`, `id:` and `retry:` lines carry nothing we relay. The data is
    read as UTF-8 with invalid bytes replaced (U+FFFD): `_is_done` and `_event_document` do that
    only when it could matter, the bytes of valid UTF-8 being those of their text already.
    """
    if b"\n" not in block:  # one line, as providers send a chat chunk
        return block[5:].removeprefix(b" ") if block.startswith(b"data:") else None
    data = [line[5:].removeprefix(b" ") for line in block.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(data) if data else None


def _as_text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _is_done(data: bytes) -> bool:
    """Whether an event's data is the [DONE] that ends a chat stream (blanks around it allowed)."""
    return _as_text(data).strip() == DONE


def json_object(provider: str, raw: bytes | str, what: str) -> dict[str, Any]:
    """`raw` parsed as a JSON object; a protocol failure naming `what` (a body, an event) otherwise."""
    try:
        document = load_json(raw)
    except (ValueError, RecursionError):
        raise protocol_failure(provider, f"{what} is not JSON") from None
    if not isinstance(document, dict):
        raise protocol_failure(provider, f"{what} is not a JSON object")
    return document


def _environment_proxy_applies(url: httpx.URL) -> bool:
    """Whether a proxy variable (HTTPS_PROXY, ALL_PROXY, ...) routes this URL, NO_PROXY considered."""
    proxies = urllib.request.getproxies_environment()
    if not (proxies.get(url.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass_environment(url.host, proxies)


@define
class ProviderClient:
    """The pooled connections to one provider address (owned by the supervisor).

    Chat requests, the hot path, go straight to our transport: httpx's client layers (URL
    merging, cookies, auth and redirect hooks) cost about a sixth of a request's CPU and do
    nothing for us. When the environment names a proxy (HTTPS_PROXY, ...), everything goes
    through a plain httpx client instead, which routes it through that proxy; httpx ignores
    those variables for a client given its own transport. The prober's model list always
    uses the client.
    """

    client: httpx.AsyncClient
    chat_url: httpx.URL
    direct: LeanTransport | None
    timeout: dict[str, float | None]
    _host: tuple[bytes, bytes] = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._host = (b"Host", self.chat_url.netloc)

    @classmethod
    def for_provider(cls, config: ProviderConfig, timeout_seconds: float) -> "ProviderClient":
        base_url = config.base_url.rstrip("/") + "/"
        timeout = httpx.Timeout(timeout_seconds)
        chat_url = httpx.URL(base_url + "chat/completions")
        transport = None if _environment_proxy_applies(chat_url) else LeanTransport(max_idle=64)
        # `limits` shape httpx's own transport, the one used when ours is not.
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        client = httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits, transport=transport,
                                   headers=_HEADERS)
        return cls(client, chat_url, transport, timeout.as_dict())

    async def send_chat(self, content: bytes, api_key: str) -> httpx.Response:
        """POST `content` to the chat URL; the response is open (its body unread) and the caller
        must close it. Raises httpx's errors as they come (the caller maps them)."""
        if self.direct is None:
            headers = {**_HEADERS, "content-type": "application/json", "authorization": f"Bearer {api_key}"}
            request = self.client.build_request("POST", self.chat_url, content=content, headers=headers)
            return await self.client.send(request, stream=True)
        # The headers httpx would work out from `content=`, in its order, given whole: that path
        # costs about four times as much (headers normalised twice, the body's stream guessed).
        headers = [self._host, _USER_AGENT, _JSON, (b"authorization", b"Bearer " + api_key.encode("ascii")),
                   (b"Content-Length", str(len(content)).encode())]
        request = httpx.Request("POST", self.chat_url, headers=headers, stream=httpx.ByteStream(content),
                                extensions={"timeout": self.timeout})
        request.read()  # `content` set, as `content=` sets it: the transport takes the body whole
        response = await self.direct.handle_async_request(request)
        response.request = request
        return response

    async def aclose(self) -> None:
        await self.client.aclose()


async def _error_body(response: httpx.Response) -> bytes:
    """At most `MAX_ERROR_BODY_BYTES` of an error body; the rest is left unread, the response closed."""
    raw = b""
    try:
        async with aclosing(response.aiter_bytes()) as chunks:
            async for chunk in chunks:
                raw += chunk
                if len(raw) >= MAX_ERROR_BODY_BYTES:
                    break
    except httpx.HTTPError:
        pass  # what arrived before the failure still explains the error
    finally:
        with trio.CancelScope(shield=True):  # a deadline may cut the read short
            await response.aclose()
    return raw[:MAX_ERROR_BODY_BYTES]


class Upstream:
    """One provider as a route uses it: its settings (with the route's model) and its pooled connections.

    Every text the provider writes into an error passes `sanitizer` here, before it reaches a
    client, an operator endpoint or a log. `quota_key` names its quota in the ledger: the
    provider's limits are per model, so routes on one provider with different models have
    different quotas.
    """

    def __init__(self, config: ProviderConfig, client: ProviderClient, sanitizer: Sanitizer, deadlines: Deadlines,
                 quota_key: str | None = None, bounds: AnswerBounds = AnswerBounds()) -> None:
        self.config = config
        self.bounds = bounds
        self.name = config.name
        self.quota_key = quota_key or config.name
        self.quota_headers = QuotaHeaders.of(config.rate_limit_headers)
        self._client = client
        self._sanitizer = sanitizer
        self.deadlines = deadlines

    def _within(self, seconds: float, what: str) -> "_Deadline":
        return _Deadline(self, seconds, what)

    def timeout(self, seconds: float, what: str) -> UpstreamFailure:
        """The failure to raise when this provider took longer than `seconds` to `what`."""
        return timeout_failure(self.name, seconds, what)

    def first_event_deadline(self) -> "_Deadline":
        """Bounds sending a request until its status line (and, for a stream, its first event)."""
        return self._within(self.deadlines.first_event, "start its answer")

    def answer_deadlines(self) -> "_AnswerDeadlines":
        """Bounds sending a request until its status line, then until its whole non-streamed
        answer (`started()` marks the status line's arrival); the two in one scope."""
        return _AnswerDeadlines(self)

    def _status_failure(self, response: httpx.Response, raw: bytes) -> UpstreamFailure:
        return status_failure(self.name, response.status_code, raw, self._sanitizer, header_dict(response.headers))

    def _document(self, raw: bytes, what: str) -> dict[str, Any]:
        """`raw` as a JSON object; an error document (a 200 that carries an error) raises its
        failure, as the status its code stands for, so it fails over and cools down like one."""
        document = json_object(self.name, raw, what)
        if carried_error(document):
            raise carried_failure(self.name, raw, self._sanitizer)
        return document

    def _event_document(self, data: bytes) -> dict[str, Any]:
        """One stream event's data as `_document` reads it, invalid UTF-8 replaced (U+FFFD)."""
        try:
            document = load_utf8_json(data)
        except (ValueError, RecursionError):  # not UTF-8, or not what msgspec reads: the long way
            return self._document(_as_text(data).encode(), "stream event")
        if isinstance(document, dict) and not carried_error(document):
            return document  # the usual event, in one parse
        return self._document(data, "stream event")  # raises the failure it stands for

    async def open_chat(self, body: dict[str, Any], api_key: str) -> "OpenAnswer":
        """Send a chat request with `api_key`; return the answer, open, once its status is 2xx.

        The caller owns the answer and must `aclose()` it. A non-2xx status raises its UpstreamFailure.
        """
        try:
            response = await self._client.send_chat(dump_json(body), api_key)
        except httpx.HTTPError as exc:
            raise transport_failure(self.name, exc) from exc
        if response.is_success:
            return OpenAnswer(self, response)
        raise self._status_failure(response, await _error_body(response))

    async def list_models(self, api_key: str | None = None) -> list[str]:
        """The model ids the provider lists at `GET /models` for `api_key` (default: its first); costs no chat quota."""
        client = self._client.client
        key = api_key if api_key is not None else self.config.keys[0]
        request = client.build_request("GET", "models", headers={"authorization": f"Bearer {key}"})
        try:
            with self._within(self.deadlines.first_event, "list its models"):
                response = await client.send(request, stream=True)
                if not response.is_success:
                    raise self._status_failure(response, await _error_body(response))
                try:
                    raw = await response.aread()
                finally:
                    await response.aclose()
        except httpx.HTTPError as exc:
            raise transport_failure(self.name, exc) from exc
        try:
            data = load_json(raw)["data"]
            return [entry["id"] for entry in data if isinstance(entry, dict) and isinstance(entry.get("id"), str)]
        except (ValueError, RecursionError, KeyError, TypeError):
            raise protocol_failure(self.name, "model list is not {\"data\": [...]}") from None

    async def _read_json(self, response: httpx.Response, headers: Mapping[str, str]) -> dict[str, Any]:
        """The whole body of a non-streamed answer as a JSON object (`headers`: the answer's, as
        `header_dict` gives them); a protocol failure past `bounds.answer` bytes (the rest is
        left unread; the caller closes the response)."""
        limit = self.bounds.answer
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise self._too_large("answer", limit)
        chunks: list[bytes] = []
        size = 0
        try:
            async with aclosing(_body_reads(response, headers)) as reads:
                async for chunk in reads:
                    size += len(chunk)
                    if size > limit:
                        raise self._too_large("answer", limit)
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise transport_failure(self.name, exc) from exc
        return self._document(b"".join(chunks), "body")

    def _too_large(self, what: str, limit: int) -> UpstreamFailure:
        return protocol_failure(self.name, f"its {what} is larger than the limit of {limit} bytes")

    async def _event_batches(self, response: httpx.Response, headers: Mapping[str, str]) -> AsyncIterator[list[bytes]]:
        """The `data` payloads of an SSE stream, grouped by the network read that completed them.

        Relaying a group as one write costs the client nothing (those events had all arrived)
        and saves a socket write per event.
        """
        buffer = b""
        event_limit = self.bounds.event
        idle = self.deadlines.stream_idle
        deadline = trio.current_time() + idle
        try:
            async with aclosing(_body_reads(response, headers)) as reads:
                async for raw in reads:
                    buffer = (buffer + raw).replace(b"\r\n", b"\n")
                    *complete, buffer = buffer.split(b"\n\n")
                    batch = [data for block in complete if (data := _sse_data(block)) is not None]
                    if batch:  # the whole events go out before an oversized one behind them fails
                        yield batch
                        deadline = trio.current_time() + idle  # silence counts from when we ask again
                    if len(buffer) > event_limit:  # an event still incomplete past the bound
                        raise self._too_large("stream event", event_limit)
                    if not batch and trio.current_time() >= deadline:
                        # Bytes that complete no event (a trickle, comments) do not keep a stream
                        # alive. No bytes at all trip the transport's read timeout instead: a
                        # clock check here costs nothing, a cancel scope per read would.
                        raise self.timeout(idle, "send a stream event")
            last = _sse_data(buffer)
            if last is not None:
                yield [last]
        except httpx.HTTPError as exc:
            raise transport_failure(self.name, exc) from exc


class OpenAnswer:
    """A provider's 2xx chat answer, open: its headers, then its whole document or its events.

    Owned by whoever `open_chat` returned it to, who must `aclose()` it. Read one way only:
    `document()` for a non-streamed answer, `events()` for a stream.
    """

    __slots__ = ("_upstream", "_response", "_events", "headers", "done")

    def __init__(self, upstream: Upstream, response: httpx.Response) -> None:
        self._upstream = upstream
        self._response = response
        self._events: AsyncIterator[list[dict[str, Any]]] | None = None
        self.headers: Mapping[str, str] = header_dict(response.headers)  # lower-case names
        self.done = False  # the stream's [DONE] arrived

    @property
    def closed(self) -> bool:
        return self._response.is_closed

    async def document(self) -> dict[str, Any]:
        """The whole non-streamed answer as a JSON object; an error document raises its failure,
        as does an answer larger than `bounds.answer` bytes (the rest is left unread)."""
        return await self._upstream._read_json(self._response, self.headers)

    def events(self) -> AsyncIterator[list[dict[str, Any]]]:
        """The stream's event documents, those one network read completed together.

        An error event raises its failure once the events before it are out; the stream ends
        at [DONE] (`done` is then set), after the little that follows it is read so the
        connection goes back to the pool.
        """
        if self._events is None:
            self._events = self._documents()
        return self._events

    async def _documents(self) -> AsyncIterator[list[dict[str, Any]]]:
        upstream = self._upstream
        async with aclosing(upstream._event_batches(self._response, self.headers)) as batches:
            async for batch in batches:
                documents: list[dict[str, Any]] = []
                for data in batch:
                    if _DONE_BYTES in data and _is_done(data):
                        self.done = True
                        break
                    try:
                        documents.append(upstream._event_document(data))
                    except UpstreamFailure:
                        if documents:  # what came before a broken event still reaches the client
                            yield documents
                        raise
                if documents:
                    yield documents
                if self.done:
                    await _drain(batches)
                    return

    async def aclose(self) -> None:
        """Close the answer's stream of events, if read, and the response."""
        if self._events is not None:
            await self._events.aclose()  # type: ignore[attr-defined]
        await self._response.aclose()


def _body_reads(response: httpx.Response, headers: Mapping[str, str]) -> AsyncIterator[bytes]:
    """The body of a 2xx answer as the network reads bring it. An encoded body (gzip, ...) goes
    through httpx's `aiter_bytes`, which decodes it; any other is the transport's own stream,
    which `aiter_bytes` would only pass through two more generators, a decoder and a chunker
    on every read. Either way the response is marked consumed; the caller closes it."""
    if "content-encoding" in headers:
        return response.aiter_bytes()
    response.is_stream_consumed = True  # as aiter_raw marks it: a second read raises StreamConsumed
    return response.stream.__aiter__()  # type: ignore[union-attr]  # an AsyncByteStream on an async client


async def _drain(batches: AsyncIterator[list[bytes]]) -> None:
    """Read the little that follows [DONE], so the connection goes back to the pool; a provider
    that holds the body open after it only costs that connection."""
    with trio.move_on_after(DRAIN_SECONDS):
        try:
            async for _ in batches:
                pass
        except UpstreamFailure:
            pass


class _Deadline:
    """A block bounded to `seconds`, whose expiry raises the provider's timeout failure.

    A plain class around one CancelScope: on the hot path (two per request) it costs a fraction
    of a generator-based context manager wrapping trio.fail_after.
    """

    __slots__ = ("_upstream", "_seconds", "_what", "_scope")

    def __init__(self, upstream: Upstream, seconds: float, what: str) -> None:
        self._upstream, self._seconds, self._what = upstream, seconds, what
        self._scope = trio.CancelScope(deadline=trio.current_time() + seconds)

    def __enter__(self) -> None:
        self._scope.__enter__()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> bool:
        handled = self._scope.__exit__(kind, error, traceback)
        if self._scope.cancelled_caught:
            raise self._upstream.timeout(self._seconds, self._what) from None
        return handled


class _AnswerDeadlines:
    """A non-streamed answer's two deadlines, both counted from entering: its status line
    within `first_event` (`started()` marks it), the whole answer within `answer`. Expiry raises
    the provider's timeout failure for the deadline that ran out (the whole answer's when both
    did). One CancelScope whose deadline moves: nested ones cost a second scope's enter and exit."""

    __slots__ = ("_upstream", "_first_at", "_answer_at", "_started", "_scope")

    def __init__(self, upstream: Upstream) -> None:
        now = trio.current_time()
        self._upstream = upstream
        self._first_at = now + upstream.deadlines.first_event
        self._answer_at = now + upstream.deadlines.answer
        self._started = False
        self._scope = trio.CancelScope(deadline=min(self._first_at, self._answer_at))

    def __enter__(self) -> "_AnswerDeadlines":
        self._scope.__enter__()
        return self

    def started(self) -> None:
        """The status line arrived: from here only the whole answer's deadline holds."""
        self._started = True
        if self._answer_at > self._first_at:
            self._scope.deadline = self._answer_at

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> bool:
        handled = self._scope.__exit__(kind, error, traceback)
        if self._scope.cancelled_caught:
            deadlines = self._upstream.deadlines
            if self._started or self._answer_at <= self._first_at:
                raise self._upstream.timeout(deadlines.answer, "finish its answer") from None
            raise self._upstream.timeout(deadlines.first_event, "start its answer") from None
        return handled
