"""A request's one cancel scope: its body bounded in time, then its work cancelled the moment the
client leaves (through our server's ClientGone, or a task waiting on `receive` under another)."""

from typing import Any

import pytest
import trio
import trio.testing

from trioproxy.errors import ProxyError
from trioproxy.server.asgi import CLIENT_GONE, ClientGone, Message
from trioproxy.server.disconnect import ClientDisconnected, RequestScope, SentSoFar

BODY_SECONDS = 30.0


def http_scope(gone: ClientGone | None) -> dict[str, Any]:
    return {"type": "http", "extensions": {CLIENT_GONE: gone} if gone is not None else {}}


async def sending(message: Message) -> None:
    pass


async def never_answered() -> Message:
    await trio.sleep_forever()
    raise AssertionError("unreachable")


async def test_a_body_that_does_not_arrive_in_time_ends_the_block_as_timed_out(autojump_clock: trio.testing.MockClock) -> None:
    started = trio.current_time()
    with RequestScope(http_scope(ClientGone()), SentSoFar(sending), started + BODY_SECONDS) as request_scope:
        await never_answered()
    assert request_scope.body_timed_out
    assert trio.current_time() - started == BODY_SECONDS


async def test_once_the_body_is_read_its_deadline_no_longer_holds(autojump_clock: trio.testing.MockClock) -> None:
    finished = []

    async def work(send: Any) -> None:
        await trio.sleep(BODY_SECONDS * 3)
        finished.append(True)

    with RequestScope(http_scope(ClientGone()), SentSoFar(sending), trio.current_time() + BODY_SECONDS) as request_scope:
        request_scope.body_read()
        await request_scope.serve(never_answered, work)
    assert finished == [True] and not request_scope.body_timed_out


@pytest.mark.parametrize("server", ["client-gone", "receive"])
@pytest.mark.parametrize("refused", [False, True], ids=["working", "refusing"])
async def test_a_client_that_leaves_cancels_the_work_and_is_told_apart(
    autojump_clock: trio.testing.MockClock, server: str, refused: bool
) -> None:
    """Whichever way the server says the client left, the work is cancelled and the block raises
    ClientDisconnected, also over a ProxyError the work raised on its way out."""
    gone = ClientGone() if server == "client-gone" else None
    disconnect = trio.Event()

    async def receive() -> Message:
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def work(send: Any) -> None:
        try:
            await trio.sleep_forever()
        finally:
            if refused:
                raise ProxyError(502, "the provider failed")

    async def leave() -> None:
        await trio.sleep(1)
        if gone is not None:
            gone.notify()
        disconnect.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(leave)
        with pytest.raises(ClientDisconnected):
            with RequestScope(http_scope(gone), SentSoFar(sending), trio.current_time() + BODY_SECONDS) as request_scope:
                request_scope.body_read()
                await request_scope.serve(receive, work)


async def test_a_refusal_without_a_disconnect_comes_out_as_it_is() -> None:
    async def work(send: Any) -> None:
        raise ProxyError(429, "out of quota")

    with pytest.raises(ProxyError, match="out of quota"):
        with RequestScope(http_scope(ClientGone()), SentSoFar(sending), trio.current_time() + BODY_SECONDS) as request_scope:
            request_scope.body_read()
            await request_scope.serve(never_answered, work)


async def test_leaving_after_the_last_body_message_went_out_is_the_normal_end() -> None:
    gone = ClientGone()

    async def work(send: Any) -> None:
        await send({"type": "http.response.body", "body": b"{}"})
        gone.notify()  # the server's end of the response
        await trio.lowlevel.checkpoint()

    with RequestScope(http_scope(gone), SentSoFar(sending), trio.current_time() + BODY_SECONDS) as request_scope:
        request_scope.body_read()
        await request_scope.serve(never_answered, work)
    assert not request_scope.body_timed_out
