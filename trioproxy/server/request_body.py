"""Reading a request's body: declared JSON, bounded in size and in time."""

import trio

from ..config.schema import Config
from ..errors import ProxyError
from .asgi import Receive, Scope, header
from .browser_guard import check_json_body
from .disconnect import ClientDisconnected


def body_deadline(config: Config) -> float:
    """When a body whose reading starts now must be in whole (`config`'s request_timeout_ms): a
    client that stops sending its body would hold a connection and a task forever."""
    return trio.current_time() + config.request_timeout_ms / 1000


async def read_body(scope: Scope, receive: Receive, config: Config) -> bytes:
    """The whole body of a request, which must be declared JSON (what a web page cannot send
    unasked), within `config`'s max_body_bytes and request_timeout_ms.

    Raises ProxyError (415, 413, 408) for a body refused, ClientDisconnected for a client gone."""
    deadline = body_deadline(config)
    with trio.move_on_at(deadline):  # one scope for every read of the body
        return await read_body_by(scope, receive, config, deadline)
    raise body_timeout()


async def read_body_by(scope: Scope, receive: Receive, config: Config, deadline: float) -> bytes:
    """`read_body` within a cancel scope of the caller's that ends at `deadline` (the caller
    answers `body_timeout()` when it does); raises the same for a body that came too late."""
    check_json_body(header(scope, b"content-type"))
    max_body_bytes = config.max_body_bytes
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
        raise too_large(max_body_bytes)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if trio.current_time() >= deadline:
            raise body_timeout()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_body_bytes:
            raise too_large(max_body_bytes)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def body_timeout() -> ProxyError:
    return ProxyError(408, "The request body did not arrive in time.", code="request_timeout")


def too_large(limit: int) -> ProxyError:
    return ProxyError(413, f"Request body is larger than the limit of {limit} bytes.", code="request_too_large")
