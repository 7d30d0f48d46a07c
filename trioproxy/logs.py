"""Logging set-up: levels by the original names, text or JSON lines, request ids on every line
of a request, and a last line of defence against secrets."""

import json
import logging
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import TextIO

from .secrets import Sanitizer

LEVELS = {"ERROR": logging.ERROR, "WARN": logging.WARNING, "INFO": logging.INFO, "DEBUG": logging.DEBUG}
FORMATS = ("text", "json")

# Libraries that log at DEBUG/INFO what a proxy must not print: hpack and h2 log header blocks
# (Authorization included), httpx and httpcore every request. They stay at WARNING.
THIRD_PARTY_LOGGERS = ("hpack", "h2", "h11", "httpx", "httpcore", "hypercorn.access", "coredis")
# Trio's accept loop logs (with a traceback) every 0.1 s while accept() fails for lack of
# file descriptors or memory; one line per episode says as much.
ACCEPT_LOGGER = "trio.serve_listeners"

# Set by the app for the task serving a request; Trio gives child tasks a copy of it.
REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="-")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class OncePerEpisode(logging.Filter):
    """Lets the first record of an episode through, without its traceback; an episode ends
    after `quiet` seconds without a record, and the next one says how many were held back."""

    def __init__(self, quiet: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._quiet = quiet
        self._clock = clock
        self._last: float | None = None
        self._held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = self._clock()
        ongoing = self._last is not None and now - self._last < self._quiet
        self._last = now
        if ongoing:
            self._held += 1
            return False
        if self._held:
            record.msg = f"{record.msg} ({self._held} more in the previous episode were not logged)"
            self._held = 0
        record.exc_info = record.exc_text = None
        record.msg = f"{record.msg}; repeats are not logged until it has stopped for {self._quiet:.0f} s"
        return True


class _Redacting(logging.Formatter):
    """Scrubs each line with the running configuration's `Sanitizer` (the one scrubber), e.g. a
    key inside an exception text; `redact_with` swaps it when a reload brings new keys."""

    def __init__(self, sanitizer: Sanitizer, fmt: str | None = None) -> None:
        super().__init__(fmt, "%Y-%m-%d %H:%M:%S")
        self.sanitizer = sanitizer

    def redact(self, text: str) -> str:
        return self.sanitizer.redact(text)


class RedactingFormatter(_Redacting):
    """Text lines: `time LEVEL logger [request id]: message`."""

    def __init__(self, sanitizer: Sanitizer) -> None:
        super().__init__(sanitizer, "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = "-"
        return self.redact(super().format(record))


class JsonFormatter(_Redacting):
    """One JSON object a line: time, level, logger, request_id, message (and exception)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return self.redact(json.dumps(line, ensure_ascii=False))


def configure_logging(level: str, sanitizer: Sanitizer, stream: TextIO = sys.stderr, fmt: str = "text") -> None:
    """Send every logger's records to `stream` at `level`, scrubbed by `sanitizer`."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(sanitizer) if fmt == "json" else RedactingFormatter(sanitizer))
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(LEVELS[level])
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(max(LEVELS[level], logging.WARNING))
    accept = logging.getLogger(ACCEPT_LOGGER)
    accept.filters = [OncePerEpisode()]


def redact_with(sanitizer: Sanitizer) -> None:
    """From now on the root logger's lines are scrubbed by `sanitizer` (the running
    configuration's, so keys a reload brings are redacted too) and by the one they had: a key a
    reload removed may still be logged by a stream on the old configuration, and stays a secret."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, _Redacting):
            kept = handler.formatter.sanitizer.secrets
            handler.formatter.sanitizer = Sanitizer(kept | sanitizer.secrets)
