"""The state file's format, checked before anything of it reaches the ledger.

A file that does not match the schema exactly, or whose values are impossible (negative or
absurd amounts, times beyond what any quota window or cooldown can reach), is refused whole:
half a ledger restored from a damaged file would be worse than a fresh one.
"""

from typing import Annotated, Any, Literal

import msgspec

from .windows import DAY

STATE_VERSION = 1
# A few accounts with a minute of one-second bins each is a few kilobytes.
MAX_STATE_BYTES = 4 * 1024 * 1024
# Far more than any provider's quota in a day, far less than what breaks arithmetic.
_MAX_AMOUNT = 10**12
# Saved times are wall-clock seconds. A booking lies in the past (allowing for a clock that
# stepped back a little); a day boundary, cooldown or provider figure at most a day ahead.
_CLOCK_SKEW = 300.0
_MAX_AHEAD = DAY + 3600.0
_MAX_PERIOD_AHEAD = 366 * DAY + 3600.0  # a declared fixed window's end (windows up to a year)

Amount = Annotated[int, msgspec.Meta(ge=0, le=_MAX_AMOUNT)]
WindowName = Literal["rpm", "tpm", "utpm", "rpd", "tpd"]


class StateFileError(ValueError):
    """The file is not a state file this version can trust; the message says why."""


class _Daily(msgspec.Struct, forbid_unknown_fields=True):
    day_ends_at: float
    used: Amount


class _Windows(msgspec.Struct, forbid_unknown_fields=True):
    rpm: list[tuple[float, Amount]]
    tpm: list[tuple[float, Amount]]
    rpd: _Daily
    tpd: _Daily
    utpm: list[tuple[float, Amount]] = []  # (a file saved before the uncached bucket has none)
    # Declared windows (`QuotaWindow.name`): bookings of a rolling one or a bucket, or a fixed
    # one's period end and count.
    other: dict[Annotated[str, msgspec.Meta(max_length=60)], list[tuple[float, Amount]] | _Daily] = {}


class _Account(msgspec.Struct, forbid_unknown_fields=True):
    windows: _Windows
    synced: dict[WindowName, tuple[Amount, float]]
    cooldown: tuple[float, Annotated[str, msgspec.Meta(max_length=500)]] | None


Name = Annotated[str, msgspec.Meta(max_length=200)]


class _BudgetWindows(msgspec.Struct, forbid_unknown_fields=True):
    rpm: list[tuple[float, Amount]] | None = None
    tpm: list[tuple[float, Amount]] | None = None
    rpd: _Daily | None = None
    tpd: _Daily | None = None


class _Clients(msgspec.Struct, forbid_unknown_fields=True):
    # client -> scope (a route, or * for all) -> its budget's windows
    budgets: dict[Name, dict[Name, _BudgetWindows]]
    # client, route, provider, then the counts in the order of clients.USAGE_FIELDS
    usage: list[tuple[Name, Name, Name, Amount, Amount, Amount, Amount, Amount, Amount]]


class _State(msgspec.Struct, forbid_unknown_fields=True):
    version: Literal[1]
    ledger: dict[Name, _Account]
    clients: _Clients | None = None  # files written before clients existed have none


_decoder = msgspec.json.Decoder(_State)


def encode_state(ledger_state: dict[str, Any], clients_state: dict[str, Any] | None = None) -> bytes:
    """The state file's bytes for what the ledger (and the clients' book) exported; `decode_state`
    reads them back."""
    state = {"version": STATE_VERSION, "ledger": ledger_state}
    if clients_state is not None:
        state["clients"] = clients_state
    return msgspec.json.encode(state)


def decode_state(raw: bytes, wall_now: float) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The ledger part of a saved state, in the shape `QuotaLedger.import_state` takes, and the
    clients' part (None if the file has none), in the shape `ClientBook.import_state` takes.

    Raises StateFileError for anything that is not a well-formed, plausible state file.
    """
    if len(raw) > MAX_STATE_BYTES:
        raise StateFileError(f"larger than {MAX_STATE_BYTES} bytes")
    try:
        state = _decoder.decode(raw)
    except msgspec.DecodeError as error:  # ValidationError included: names the field at fault
        raise StateFileError(str(error)) from None
    for name, account in state.ledger.items():
        _check_times(name, account, wall_now)
    if state.clients is not None:
        for client, scopes in state.clients.budgets.items():
            for windows in scopes.values():
                _check_window_times(client, windows, wall_now)
    clients = None if state.clients is None else msgspec.to_builtins(state.clients)
    if clients is not None:  # windows left out were not saved, not empty
        clients["budgets"] = {
            client: {scope: {name: saved for name, saved in windows.items() if saved is not None}
                     for scope, windows in scopes.items()}
            for client, scopes in clients["budgets"].items()
        }
    return msgspec.to_builtins(state.ledger), clients


def _check_window_times(name: str, windows: _BudgetWindows, wall_now: float) -> None:
    for window in (windows.rpm, windows.tpm):
        for at, _ in window or ():
            if at > wall_now + _CLOCK_SKEW:
                raise StateFileError(f"{name}: a booking is {at - wall_now:.0f} s in the future")
    for daily in (windows.rpd, windows.tpd):
        if daily is not None and daily.day_ends_at > wall_now + _MAX_AHEAD:
            raise StateFileError(f"{name}: a day boundary is {daily.day_ends_at - wall_now:.0f} s in the future")


def _check_times(name: str, account: _Account, wall_now: float) -> None:
    def at_most(value: float, limit: float, what: str) -> None:
        if value > limit:
            raise StateFileError(f"{name}: {what} is {value - wall_now:.0f} s in the future")

    other = account.windows.other.values()
    for window in (account.windows.rpm, account.windows.tpm, account.windows.utpm, *(w for w in other if isinstance(w, list))):
        for at, _ in window:
            at_most(at, wall_now + _CLOCK_SKEW, "a booking")
    for period in (w for w in other if isinstance(w, _Daily)):
        at_most(period.day_ends_at, wall_now + _MAX_PERIOD_AHEAD, "a window's end")
    for daily in (account.windows.rpd, account.windows.tpd):
        at_most(daily.day_ends_at, wall_now + _MAX_AHEAD, "a day boundary")
    for _, valid_until in account.synced.values():
        at_most(valid_until, wall_now + _MAX_AHEAD, "a provider figure's expiry")
    if account.cooldown is not None:
        at_most(account.cooldown[0], wall_now + _MAX_AHEAD, "a cooldown's end")
