"""One process's shares of the shared quota and their traffic with Redis: asking for the next
share in the background, handing out requests, returning what a share did not hand out.

The bookkeeping itself is `shares.py`; the ledger (`ledger.py`) asks this keeper first
and books a request on its own when the keeper cannot admit it. Every answer from Redis comes
through the store's sender task as a callback: nothing here waits.
"""

from collections.abc import Callable

import trio
from attrs import frozen

from .ledger_script import Lane, Reply
from .store import QuotaStore
from .shares import SHARE_LEASE_SECONDS, SHARE_SECONDS, Share, ShareBook


@frozen
class HandedOut:
    """A request admitted from a share: where and as what it is booked."""

    index: int  # the account's place among its provider's keys, from 1
    lease: str  # its own lease, created in Redis by the queued `draw`
    seq: int
    cum: int
    day: int


class ShareKeeper:
    def __init__(
        self,
        store: QuotaStore,
        lanes: dict[str, Lane],
        new_lease: Callable[[], str],
        *,
        lease_seconds: float,
        replica: str,
        enabled: bool,
    ) -> None:
        self._store = store
        self._lanes = lanes
        self._new_lease = new_lease
        self._lease_seconds = lease_seconds
        self._replica = replica
        self.enabled = enabled  # False also once retired: a reload's old ledger asks for none
        self._books = {provider: ShareBook() for provider in lanes}
        self._unreturned: list[tuple[str, str, int, int]] = []  # shares Redis has not heard end of

    def hand_out(self, provider: str, tokens: int, floor: int, now: float) -> HandedOut | None:
        """Admit from this process's share when it can take the request (no round trip); ask
        for the next share in the background when this one is half spent or gone."""
        if not self.enabled or not self._store.can_queue():  # (each request handed out is queued)
            return None
        book = self._books[provider]
        book.note(tokens)
        self._return(provider, book.expired(now))
        share = book.current
        taken = share.take(tokens, now) if share is not None and self._open(provider, share) else None
        if book.should_ask(now):
            self._ask(provider, book, tokens, now)
        if taken is None or share is None:
            return None
        seq, cum = taken
        lease = self._new_lease()
        args = (share.lease, lease, tokens, floor, self._lease_seconds, self._replica)
        self._store.submit(self._lanes[provider], "draw", share.index, args)
        return HandedOut(share.index, lease, seq, cum, share.day)

    def fits(self, provider: str, tokens: int, requests: int, now: float) -> bool:
        """Whether this process's share could take `requests` requests of `tokens` in all now."""
        share = self._books[provider].current
        return (
            self._store.connected and share is not None and self._open(provider, share)
            and share.fits(tokens, requests, now)
        )

    def _open(self, provider: str, share: Share) -> bool:
        """Whether the share may still be spent: no answer since told its account changed
        (a cooldown, or a provider figure that leaves little)."""
        return self._store.revision(self._lanes[provider], share.index) == share.revision

    def _ask(self, provider: str, book: ShareBook, tokens: int, now: float) -> None:
        requests, total, least = book.ask(tokens)
        lease = self._new_lease()
        # Its lease outlives the share by far: a request handed out late must still find it.
        ttl = max(self._lease_seconds, SHARE_LEASE_SECONDS)
        args = (requests, total, least, lease, ttl, self._store.deadline())

        def answered(reply: Reply | None) -> None:
            granted_at = trio.current_time()
            if reply is None:  # Redis may have booked it all the same
                self._unreturned.append((provider, lease, 0, 0))
                book.granted(None, granted_at)
                return
            share = None
            if reply.result[0] == 1:
                _, index, seq, cum, day, granted, granted_tokens, revision = reply.result
                share = Share(index, lease, day, granted, granted_tokens, seq, cum, granted_at + SHARE_SECONDS, revision)
            self._return(provider, book.granted(share, granted_at))
            if share is not None and (not self.enabled or not self._open(provider, share)):
                self._end(provider, share)  # retired or revoked meanwhile

        if not self._store.submit(self._lanes[provider], "share", 0, args, answered):
            book.granted(None, now)

    def _end(self, provider: str, share: Share) -> None:
        """Stop handing out from `share` and give back what it did not hand out."""
        self._return(provider, self._books[provider].retire(share))

    def _return(self, provider: str, share: Share | None) -> None:
        """Give back what a share did not hand out."""
        if share is not None:
            self._unshare(provider, share.lease, share.given_requests, share.given_tokens)

    def _unshare(self, provider: str, lease: str, requests: int, tokens: int) -> None:
        """Tell Redis share `lease` ended, having handed out `requests` of `tokens` in all;
        until it has heard, again at each refresh (a share held in vain until its lease
        expires would idle quota for minutes)."""

        def answered(reply: Reply | None) -> None:
            if reply is None:
                self._unreturned.append((provider, lease, requests, tokens))

        if not self._store.submit(self._lanes[provider], "unshare", 0, (lease, requests, tokens), answered):
            self._unreturned.append((provider, lease, requests, tokens))

    def return_revoked(self) -> None:
        """Return at once the shares whose account changed (see `_open`)."""
        for provider, book in self._books.items():
            if book.current is not None and not self._open(provider, book.current):
                self._end(provider, book.current)

    def return_on(self, provider: str, index: int) -> None:
        """Return the provider's share if it is on account `index` (a cooldown starts there)."""
        share = self._books[provider].current
        if share is not None and share.index == index:
            self._end(provider, share)

    def refresh(self, now: float) -> None:
        """Once a second: return shares that outlived their second, and tell Redis again of
        those it has not heard end."""
        for provider, book in self._books.items():
            self._return(provider, book.expired(now))
        unreturned, self._unreturned = self._unreturned, []
        for provider, lease, requests, tokens in unreturned:
            self._unshare(provider, lease, requests, tokens)

    def retire(self) -> None:
        """Return every share and ask for none again (shutdown, or a reload's old settings)."""
        self.enabled = False
        for provider, book in self._books.items():
            if book.current is not None:
                self._end(provider, book.current)

    def status(self, now: float) -> dict[str, dict[str, int]]:
        """What this process's live shares have left to hand out, by provider."""
        status = {}
        for provider, book in self._books.items():
            share = book.current
            if share is not None and not share.returned and now < share.expires:
                requests, tokens = share.unspent
                status[provider] = {"requests": requests, "tokens": tokens}
        return status
