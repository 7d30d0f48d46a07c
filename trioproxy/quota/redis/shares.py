"""Shares of the shared quota: blocks of requests and tokens that Redis books for this process
at once, so that a request admitted from one waits on nobody.

A share is booked in Redis like reservations are (the script grants one only while the account
has more than half of each limit left, a sixteenth of a limit at most), so everything handed
out from shares is inside the limits Redis enforces: no overshoot across replicas. What a share
costs is timing: it is booked before its requests are sent. A share therefore lives a second at
most, then its unspent part goes back; near a limit there are no shares and every request is
booked on its own, as without them.

This module is the bookkeeping of one process, without I/O; `share_keeper` asks and returns.
"""

import math

from attrs import define

SHARE_SECONDS = 1.0  # a share's life: the most that booking can run ahead of sending
SHARE_LEASE_SECONDS = 10.0  # its lease in Redis at least: a request handed out late still finds it
FIRST_ASK = 8  # requests asked for when nothing tells this process's demand yet
MOST_ASKED = 4096
# A refused or idle share means demand or room is low: single reservations until this long after.
QUIET_SECONDS = 1.0


@define
class Share:
    """A block granted on one account. `seq`/`cum` are the account's booked-requests and
    booked-tokens counters just after the block: each request handed out gets the counters it
    would have had if booked alone, so the provider's figures sync as for single reservations."""

    index: int  # the account's place among its provider's keys, from 1
    lease: str
    day: int
    requests: int
    tokens: int
    seq: int
    cum: int
    expires: float
    revision: int  # the account's revision it was granted at: spent only while that holds
    given_requests: int = 0
    given_tokens: int = 0
    returned: bool = False

    def take(self, tokens: int, now: float) -> tuple[int, int] | None:
        """Hand out one request of `tokens`: the `(seq, cum)` it is booked at, or None if the
        share cannot take it (spent, expired or returned)."""
        if not self.fits(tokens, 1, now):
            return None
        self.given_requests += 1
        self.given_tokens += tokens
        return (
            self.seq - self.requests + self.given_requests,
            self.cum - self.tokens + self.given_tokens,
        )

    def fits(self, tokens: int, requests: int, now: float) -> bool:
        """Whether it could hand out `requests` requests of `tokens` in all now."""
        return (
            not self.returned
            and now < self.expires
            and self.given_requests + requests <= self.requests
            and self.given_tokens + tokens <= self.tokens
        )

    @property
    def unspent(self) -> tuple[int, int]:
        return self.requests - self.given_requests, self.tokens - self.given_tokens

    def half_spent(self) -> bool:
        return 2 * self.given_requests >= self.requests or 2 * self.given_tokens >= self.tokens

    def demand(self, now: float) -> int:
        """Requests a share would need for its whole life at the pace this one was spent."""
        age = max(now - (self.expires - SHARE_SECONDS), 0.001)
        return math.ceil(self.given_requests * SHARE_SECONDS / age)


@define
class ShareBook:
    """One provider's shares in this process: the one in use, whether another is being asked
    for, and how big to ask."""

    current: Share | None = None
    asking: bool = False
    quiet_until: float = 0.0
    demand: int = FIRST_ASK  # requests a share should hold: what the last one's pace needs
    mean_tokens: float = 0.0  # tokens per request, smoothed

    def note(self, tokens: int) -> None:
        self.mean_tokens = tokens if not self.mean_tokens else 0.9 * self.mean_tokens + 0.1 * tokens

    def should_ask(self, now: float) -> bool:
        if self.asking or now < self.quiet_until:
            return False
        share = self.current
        return share is None or share.returned or now >= share.expires or share.half_spent()

    def ask(self, tokens: int) -> tuple[int, int, int]:
        """(requests, tokens, at least tokens) to ask for; a request of `tokens` is waiting."""
        self.asking = True
        requests = min(MOST_ASKED, max(FIRST_ASK, self.demand))
        per_request = max(tokens, round(self.mean_tokens))
        return requests, requests * per_request, tokens

    def granted(self, share: Share | None, now: float) -> Share | None:
        """Take the answer to an ask; the share it replaces (to return), if any."""
        self.asking = False
        if share is None:
            self.quiet_until = now + QUIET_SECONDS
            return None
        replaced, self.current = self.current, share
        if replaced is not None and not replaced.returned:
            self.demand = replaced.demand(now)
            return self.retire(replaced)
        return None

    def retire(self, share: Share) -> Share | None:
        """Mark `share` returned; it, if it still had something to return."""
        if share.returned:
            return None
        share.returned = True
        if share.given_requests < 2:  # not worth a share: demand is low
            self.quiet_until = share.expires + QUIET_SECONDS
        return share

    def expired(self, now: float) -> Share | None:
        share = self.current
        if share is not None and not share.returned and now >= share.expires:
            self.demand = share.demand(now)
            return self.retire(share)
        return None
