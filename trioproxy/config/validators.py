"""Checks of one setting's value, as attrs validators, and the errors settings raise.

A validator raises `InvalidValue` naming its field; loading (`load.py`) turns it into one
`ConfigError` line naming the key and where its value came from.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from ..logs import LEVELS
from .redis_target import parse_redis_url

if TYPE_CHECKING:
    from .schema import Candidates, QuotaWindow


class ConfigError(Exception):
    """A setting is wrong; the message is one line naming the key and its source."""


class InvalidValue(ValueError):
    """Raised by field validators; carries the field name so the error can name the key."""

    def __init__(self, attribute: attrs.Attribute, reason: str) -> None:
        super().__init__(reason)
        self.key = attribute.name


class InvalidKey(InvalidValue):
    """A check across fields, reported against one key."""

    def __init__(self, key: str, reason: str) -> None:
        ValueError.__init__(self, reason)
        self.key = key


def positive(instance: object, attribute: attrs.Attribute, value: float | int | None) -> None:
    if value is not None and value <= 0:
        raise InvalidValue(attribute, f"must be greater than 0, got {value}")


def between(low: float, high: float) -> Callable[[object, attrs.Attribute, float | int], None]:
    def check(instance: object, attribute: attrs.Attribute, value: float | int) -> None:
        if not low <= value <= high:
            raise InvalidValue(attribute, f"must be between {low:g} and {high:g}, got {value}")

    return check


def port_number(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if not 0 <= value <= 65535:
        raise InvalidValue(attribute, f"must be a port number 0-65535, got {value}")


def known_log_level(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if value not in LEVELS:
        raise InvalidValue(attribute, f"must be one of {', '.join(LEVELS)}, got {value!r}")


def one_of(*choices: str) -> Callable[[object, attrs.Attribute, str], None]:
    def check(instance: object, attribute: attrs.Attribute, value: str) -> None:
        if value not in choices:
            raise InvalidValue(attribute, f"must be one of {', '.join(choices)}, got {value!r}")

    return check


def normalize_level(value: str) -> str:
    """`info`, `Warning` and `WARN` are all accepted, from the file as from the environment."""
    level = value.upper() if isinstance(value, str) else value
    return "WARN" if level == "WARNING" else level


def parsable_redis_url(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if value == "":
        return  # checked against quota_backend in Config
    try:
        parse_redis_url(value)
    except ValueError as error:
        raise InvalidValue(attribute, str(error)) from None


def no_braces(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if "{" in value or "}" in value:
        raise InvalidValue(attribute, "must not contain { or }: each key's {provider} is its Redis Cluster hash tag")


def http_url(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if not value.startswith(("http://", "https://")):
        raise InvalidValue(attribute, f"must start with http:// or https://, got {value!r}")


def model_ids(instance: object, attribute: attrs.Attribute, value: Candidates | None) -> None:
    if value is not None and (not value or not all(value)):
        raise InvalidValue(attribute, "must name at least one model, and no empty id")


def window_seconds(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if not 1 <= value <= 366 * 86_400:
        raise InvalidValue(attribute, f"must be between 1 and {366 * 86_400} (a year), got {value}")


def distinct_windows(instance: object, attribute: attrs.Attribute, value: tuple[QuotaWindow, ...] | None) -> None:
    seen = set()
    for window in value or ():
        if (window.kind, window.seconds) in seen:
            raise InvalidValue(attribute, f"two {window.kind} windows of {window.seconds} s; one figure per window")
        seen.add((window.kind, window.seconds))
