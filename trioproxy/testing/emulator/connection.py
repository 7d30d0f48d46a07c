"""One client connection over trio and h11: read requests, carry out the answers."""

from __future__ import annotations

import json
import logging
import socket
import struct
from typing import Any

import h11
import trio
from attrs import Factory, define

from .actions import Action, Reply, Request, Reset, Stall, Stream
from .chat import dispatch
from .errors import phrase
from .provider import EmulatedProvider

log = logging.getLogger(__name__)

_MAX_READ = 65536
# Errors meaning the client went away or broke the protocol: close quietly.
_CLIENT_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError,
                ConnectionError)


@define
class HttpConnection:
    """One client connection: the trio stream and its h11 state machine."""

    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
    conn: h11.Connection = Factory(lambda: h11.Connection(h11.SERVER))

    async def _event(self) -> Any:
        """The next h11 event, reading from the socket as needed."""
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.conn.receive_data(await self.stream.receive_some(_MAX_READ))

    async def read_request(self) -> Request | None:
        """The next complete request, or None when the client closed the connection."""
        event = await self._event()
        if not isinstance(event, h11.Request):
            return None
        body = bytearray()
        while isinstance(part := await self._event(), h11.Data):
            body += part.data
        if not isinstance(part, h11.EndOfMessage):
            return None
        return Request(event.method.decode(), event.target.decode().split("?")[0],
                       _header_dict(event.headers), bytes(body))

    async def _send(self, event: Any) -> None:
        data = self.conn.send(event)
        if data:
            await self.stream.send_all(data)

    async def respond(self, reply: Reply) -> None:
        payload = json.dumps(reply.body).encode()
        headers = [("content-type", "application/json"),
                   ("content-length", str(len(payload))), *reply.headers]
        await self._send(h11.Response(status_code=reply.status, headers=headers,
                                      reason=phrase(reply.status)))
        await self._send(h11.Data(data=payload))
        await self._send(h11.EndOfMessage())

    async def stream_events(self, stream: Stream) -> bool:
        """Send an SSE response; False when it ended in a reset (connection gone)."""
        headers = [("content-type", "text/event-stream"), ("cache-control", "no-cache"),
                   ("transfer-encoding", "chunked"), *stream.headers]
        await self._send(h11.Response(status_code=200, headers=headers, reason=b"OK"))
        payloads = [json.dumps(event) for event in stream.events] + ["[DONE]"]
        last_event = len(stream.events) - 1
        try:
            for i, payload in enumerate(payloads):
                # A generated stream's [DONE] follows its last event at once.
                paced = stream.finish is None or i <= last_event
                if i and stream.delay > 0 and paced:
                    await trio.sleep(stream.delay)
                if i == 0 and stream.first_delay > 0:
                    await trio.sleep(stream.first_delay)
                if i == last_event and stream.finish is not None:
                    stream.finish()
                await self._send(h11.Data(data=f"data: {payload}\n\n".encode()))
                if stream.reset_after is not None and i + 1 >= stream.reset_after:
                    await self.reset()
                    return False
            await self._send(h11.EndOfMessage())
            return True
        finally:
            if stream.finish is not None:
                stream.finish()  # the model ran even if the client left; idempotent

    async def reset(self) -> None:
        """Abort the connection with a TCP RST instead of an orderly FIN."""
        tcp = self.stream.transport_stream if isinstance(self.stream, trio.SSLStream) else self.stream
        tcp.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                      struct.pack("ii", 1, 0))
        await self.stream.aclose()

    async def wait_until_gone(self) -> None:
        """Read and discard until the client closes its side."""
        while await self.stream.receive_some(_MAX_READ):
            pass

    def next_cycle(self) -> bool:
        """Prepare for the next request on this connection; False if it must close."""
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
            return True
        return False


def _header_dict(headers: Any) -> dict[str, str]:
    """Lower-cased header names (h11 already lower-cases) joined like HTTP would."""
    result: dict[str, str] = {}
    for name, value in headers:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        result[key] = f"{result[key]}, {text}" if key in result else text
    return result


async def _perform(http_: HttpConnection, action: Action) -> bool:
    """Carry out an answer; True when the connection may serve another request."""
    if isinstance(action, Reset):
        await http_.reset()
        return False
    if isinstance(action, Stall):
        await http_.wait_until_gone()
        return False
    if isinstance(action, Stream):
        return await http_.stream_events(action)
    if action.wait > 0:
        await trio.sleep(action.wait)
    if action.finish is not None:
        action.finish()
    await http_.respond(action)
    return True


async def serve_connection(provider: EmulatedProvider,
                           stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]) -> None:
    """Serve keep-alive requests on one connection; never raises for client misbehaviour."""
    provider.connections += 1
    http_ = HttpConnection(stream)
    try:
        while (request := await http_.read_request()) is not None:
            action = await dispatch(provider, request)
            if not await _perform(http_, action) or not http_.next_cycle():
                break
    except _CLIENT_GONE:
        pass  # the client left or reset: nothing to answer
    except Exception:  # a bug here must not take the whole emulated server down
        log.exception("emulated %s failed on a connection", provider.flavor)
    finally:
        await stream.aclose()
