"""Request ids: the client's `x-request-id` when it is a sane token, otherwise a new one.

The id is echoed in a response header and written into every log line of the request, so a
client must not be able to put control characters, or ten kilobytes, into either.
"""

import os
import re

MAX_LENGTH = 128
# Letters, digits and the punctuation of UUIDs, ULIDs, base64 and trace ids (W3C, X-Ray).
_SANE = re.compile(rf"[A-Za-z0-9._:/+=@-]{{1,{MAX_LENGTH}}}")


def new_request_id() -> str:
    return os.urandom(8).hex()  # secrets.token_hex(8), two calls shorter


def request_id_from(header: str | None) -> str:
    """The client's id if it is 1-128 characters of [A-Za-z0-9._:/+=@-], else a new one."""
    if header is not None and _SANE.fullmatch(header):
        return header
    return new_request_id()
