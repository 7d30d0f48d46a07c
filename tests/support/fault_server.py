"""Providers that misbehave on raw sockets: a fault server answers `GET /v1/models` properly and
plays a behaviour (garbage, truncated streams, resets, silence) on every chat request."""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from support.raw_http import SSE_HEAD, abort_with_reset, json_head, read_raw_request
from trioproxy.testing.emulator import CEREBRAS_MODEL, CHUTES_MODEL


async def eventually(check: Callable[[], bool], seconds: float = 2.0) -> bool:
    """Poll `check` until true or `seconds` pass."""
    with trio.move_on_after(seconds):
        while not check():
            await trio.sleep(0.02)
        return True
    return check()


def dumps(document: Any) -> bytes:
    return json.dumps(document).encode()


def tiny_chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {"id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": 0, "model": "upstream-model",
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + dumps(chunk) + b"\n\n"


ROLE = tiny_chunk({"role": "assistant", "content": ""})
HELLO = tiny_chunk({"content": "Hello"})
WORLD = tiny_chunk({"content": " world"})
FINISH = tiny_chunk({}, "stop")


async def hold(stream: trio.SocketStream) -> None:
    """Keep the connection until the proxy closes it."""
    while await stream.receive_some(65536):
        pass


async def send_then_close(stream: trio.SocketStream, *parts: bytes) -> None:
    for part in parts:
        await stream.send_all(part)


async def send_then_hold(stream: trio.SocketStream, *parts: bytes) -> None:
    await send_then_close(stream, *parts)
    await hold(stream)


async def send_then_reset(stream: trio.SocketStream, *parts: bytes) -> None:
    await send_then_close(stream, *parts)
    await trio.sleep(0.05)  # let the proxy read what was sent: a reset discards unread data
    abort_with_reset(stream)  # the handler's aclose() then sends RST, not FIN


Behaviour = Callable[[trio.SocketStream], Awaitable[None]]


@attrs.define
class FaultServer:
    """A raw TCP server: answers `GET /v1/models` properly (the proxy's health prober asks), and
    misbehaves as `behaviour` says on every chat request, once it has read it whole."""

    behaviour: Behaviour
    url: str = ""
    accepted: int = 0
    open: int = 0
    requests: int = 0  # chat requests only
    healed: bool = False  # answer properly from now on
    models: Behaviour | None = None  # answers `GET /v1/models` instead of the proper list

    async def handle(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        self.open += 1
        try:
            request = await read_raw_request(stream)
            if request is not None and request[0].endswith("/models") and self.models is not None:
                await self.models(stream)
            elif request is not None and request[0].endswith("/models"):
                await stream.send_all(json_head(200, len(MODELS_LIST)) + MODELS_LIST)
            elif request is not None and self.healed:
                await self._answer_properly(stream, request[1])
            elif request is not None:
                self.requests += 1
                await self.behaviour(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            self.open -= 1
            with trio.CancelScope(shield=True):
                await stream.aclose()

    @staticmethod
    async def _answer_properly(stream: trio.SocketStream, body: bytes) -> None:
        if json.loads(body).get("stream"):
            await send_then_close(stream, SSE_HEAD, ROLE, HELLO, WORLD, FINISH, b"data: [DONE]\n\n")
            return
        answer = dumps({"id": "chatcmpl-healed", "object": "chat.completion", "created": 0, "model": "upstream-model",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello world"},
                                     "finish_reason": "stop"}]})
        await stream.send_all(json_head(200, len(answer)) + answer)


MODELS_LIST = dumps({"object": "list", "data": [{"id": model, "object": "model"} for model in (CEREBRAS_MODEL, CHUTES_MODEL)]})


async def start_fault_server(nursery: trio.Nursery, behaviour: Behaviour) -> FaultServer:
    server = FaultServer(behaviour)
    listeners = await nursery.start(functools.partial(trio.serve_tcp, host="127.0.0.1"), server.handle, 0)
    server.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/v1"
    return server
