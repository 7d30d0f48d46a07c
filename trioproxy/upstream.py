"""Talking to one provider over httpx: sending, SSE reading, and mapping failures to one type.

Every httpx exception is translated here, at one boundary, into `UpstreamFailure`.
"""

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import httpx

from .api import ApiError, error_from_upstream
from .config import ProviderConfig
from .jsoncodec import dump_json, load_json
from .transport import LeanTransport

DONE = "[DONE]"


class UpstreamFailure(Exception):
    """A provider did not deliver. `kind` is "status", "timeout", "connection" or "protocol"."""

    def __init__(
        self,
        provider: str,
        kind: str,
        error: ApiError,
        status: int | None = None,
        headers: httpx.Headers | None = None,
    ) -> None:
        super().__init__(f"{provider}: {kind} {status or ''} {error.message}")
        self.provider = provider
        self.kind = kind
        self.error = error
        self.status = status
        self.headers = headers or httpx.Headers()

    @property
    def label(self) -> str:
        """Short reason for logs: the status, the error code, or the kind."""
        if self.status is not None:
            return f"{self.status} {self.error.code}" if self.error.code else str(self.status)
        return self.kind


def _failure_from_exception(provider: str, exc: httpx.HTTPError) -> UpstreamFailure:
    if isinstance(exc, httpx.TimeoutException):
        error = ApiError(504, f"{provider} did not answer in time.", type="api_error", code="upstream_timeout")
        return UpstreamFailure(provider, "timeout", error)
    error = ApiError(502, f"{provider} could not be reached or dropped the connection.", type="api_error", code="upstream_unavailable")
    return UpstreamFailure(provider, "connection", error)


def _sse_data(block: bytes) -> str | None:
    """The joined `data:` lines of one SSE event; None for an event without data.

    Comments (`:`), `event:`, `id:` and `retry:` lines carry nothing we relay.
    """
    data = [line[5:].removeprefix(b" ") for line in block.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(data).decode("utf-8", "replace") if data else None


def protocol_failure(provider: str, what: str) -> UpstreamFailure:
    error = ApiError(502, f"{provider} sent an invalid response: {what}.", type="api_error", code="upstream_bad_response")
    return UpstreamFailure(provider, "protocol", error)


class Upstream:
    """One provider: its settings and its pooled HTTP client (owned by the supervisor)."""

    def __init__(self, config: ProviderConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self.name = config.name
        self._client = client

    @staticmethod
    def client_for(config: ProviderConfig, timeout_seconds: float) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=config.base_url.rstrip("/") + "/",
            timeout=httpx.Timeout(timeout_seconds),
            transport=LeanTransport(max_idle=64),
        )

    async def open_chat(self, body: dict[str, Any], api_key: str) -> httpx.Response:
        """Send a chat request with `api_key`; return the open response once its status is 2xx.

        The caller must `aclose()` the response. A non-2xx status raises UpstreamFailure
        carrying the provider's error mapped to OpenAI's shape.
        """
        content = dump_json(body)
        request = self._client.build_request(
            "POST",
            "chat/completions",
            content=content,
            headers={"content-type": "application/json", "authorization": f"Bearer {api_key}"},
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _failure_from_exception(self.name, exc) from exc
        if response.is_success:
            return response
        try:
            raw = await response.aread()
        except httpx.HTTPError:
            raw = b""
        finally:
            await response.aclose()
        error = error_from_upstream(response.status_code, raw, self.name)
        raise UpstreamFailure(self.name, "status", error, response.status_code, response.headers)

    async def list_models(self) -> list[str]:
        """The model ids the provider lists at `GET /models` (costs no chat quota)."""
        try:
            response = await self._client.get("models", headers={"authorization": f"Bearer {self.config.keys[0]}"})
            raw = await response.aread()
        except httpx.HTTPError as exc:
            raise _failure_from_exception(self.name, exc) from exc
        if not response.is_success:
            error = error_from_upstream(response.status_code, raw, self.name)
            raise UpstreamFailure(self.name, "status", error, response.status_code, response.headers)
        try:
            data = load_json(raw)["data"]
            return [entry["id"] for entry in data if isinstance(entry, dict) and isinstance(entry.get("id"), str)]
        except (ValueError, RecursionError, KeyError, TypeError):
            raise protocol_failure(self.name, "model list is not {\"data\": [...]}") from None

    async def read_json(self, response: httpx.Response) -> dict[str, Any]:
        """The whole body of a non-streamed answer as a JSON object."""
        try:
            raw = await response.aread()
        except httpx.HTTPError as exc:
            raise _failure_from_exception(self.name, exc) from exc
        try:
            document = load_json(raw)
        except (ValueError, RecursionError):
            raise protocol_failure(self.name, "body is not JSON") from None
        if not isinstance(document, dict):
            raise protocol_failure(self.name, "body is not a JSON object")
        return document

    async def event_batches(self, response: httpx.Response) -> AsyncIterator[list[str]]:
        """The `data` payloads of an SSE stream, grouped by the network read that completed them.

        Relaying a group as one write costs the client nothing (those events had all arrived)
        and saves a socket write per event.
        """
        buffer = b""
        try:
            async with aclosing(response.aiter_bytes()) as reads:
                async for raw in reads:
                    buffer = (buffer + raw).replace(b"\r\n", b"\n")
                    *complete, buffer = buffer.split(b"\n\n")
                    batch = [data for block in complete if (data := _sse_data(block)) is not None]
                    if batch:
                        yield batch
            last = _sse_data(buffer)
            if last is not None:
                yield [last]
        except httpx.HTTPError as exc:
            raise _failure_from_exception(self.name, exc) from exc
