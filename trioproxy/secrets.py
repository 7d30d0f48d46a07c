"""Making provider text safe to pass on: secrets taken out, size bounded.

Whatever a provider writes into an error (its message, code, a stream's error event) may reach
the client, `/healthz`, `/v1/status` and the logs. Providers in OpenAI's style repeat the key
they were sent ("Incorrect API key provided: csk-..."), and some answer an error with megabytes.
The upstream boundary passes every such text through a `Sanitizer` before it goes anywhere,
and the logs scrub their lines with the running configuration's: the one scrubber, at the package's root
so that both (and everything between them) import it downwards.
"""

import re
from collections.abc import Iterable

REDACTED = "[redacted]"
# An error body is read up to this many bytes; the rest is never read (the connection closes).
MAX_ERROR_BODY_BYTES = 64 * 1024
# A provider's message is cut to this many characters: enough for any real explanation.
MAX_MESSAGE_CHARS = 2000
# A run of this many characters of a secret counts as the secret. Shorter runs pass: providers
# show a prefix and a suffix ("csk-...abcd") so an operator can tell which key was meant.
SECRET_RUN = 8


def short_secrets_pattern(secrets: Iterable[str]) -> re.Pattern[str] | None:
    """Secrets shorter than a run (a test key such as "x") matched as whole tokens only:
    replaced wherever they occur, they would cut up every word that holds them."""
    short = sorted({s for s in secrets if s and len(s) < SECRET_RUN}, key=len, reverse=True)
    if not short:
        return None
    return re.compile(r"(?<![\w-])(?:" + "|".join(map(re.escape, short)) + r")(?![\w-])")


class Sanitizer:
    """Replaces secrets, whole or any run of `SECRET_RUN` characters of them, and cuts text short."""

    def __init__(self, secrets: Iterable[str]) -> None:
        present = {secret for secret in secrets if secret}
        self.secrets = frozenset(present)
        self._short = short_secrets_pattern(present)  # shorter than a run: recognised whole only
        self._runs = frozenset(
            secret[start : start + SECRET_RUN]
            for secret in present
            if len(secret) >= SECRET_RUN
            for start in range(len(secret) - SECRET_RUN + 1)
        )

    def text(self, text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
        """`text` cut to `limit` characters, then every secret in it replaced."""
        if len(text) > limit:
            text = text[:limit] + "..."
        return self.redact(text)

    def redact(self, text: str) -> str:
        """`text` with every stretch that holds a run of a secret replaced by `REDACTED`."""
        if self._short is not None:
            text = self._short.sub(REDACTED, text)
        if not self._runs or len(text) < SECRET_RUN:
            return text
        covered_until = -1  # end of the secret stretch being collected
        pieces: list[str] = []
        kept_from = 0
        for start in range(len(text) - SECRET_RUN + 1):
            if text[start : start + SECRET_RUN] not in self._runs:
                continue
            if start > covered_until:  # a new stretch begins: keep what came before it
                if covered_until >= 0:
                    pieces.append(REDACTED)
                pieces.append(text[kept_from:start])
            covered_until = start + SECRET_RUN
            kept_from = covered_until
        if covered_until >= 0:
            pieces.append(REDACTED)
        pieces.append(text[kept_from:])
        return "".join(pieces)
