"""Logging set-up: levels by the original names, and a last line of defence for secrets."""

import logging
import sys
from collections.abc import Iterable
from typing import TextIO

LEVELS = {"ERROR": logging.ERROR, "WARN": logging.WARNING, "INFO": logging.INFO, "DEBUG": logging.DEBUG}
REDACTED = "[redacted]"


class RedactingFormatter(logging.Formatter):
    """Replaces any configured secret that reaches a log line, e.g. inside an exception text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
        self._secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text


def configure_logging(level: str, secrets: Iterable[str], stream: TextIO = sys.stderr) -> None:
    """Send every logger's records to `stream` at `level`, secrets redacted."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter(secrets))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(LEVELS[level])
    # httpx logs every request at INFO; the proxy's own request line says more, once.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(LEVELS[level], logging.WARNING))
