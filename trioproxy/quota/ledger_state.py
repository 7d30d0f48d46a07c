"""The memory ledger's state as the state file keeps it: every account's windows, the provider's
figures and the cooldown, with times as wall-clock seconds (Trio's clock restarts with the
process); and back, for the accounts that still exist."""

from collections.abc import Mapping
from typing import Any

from .account import AccountQuota, Synced
from .contract import WINDOW_NAMES
from .windows import SlidingWindow


def export_accounts(accounts: Mapping[str, AccountQuota], now: float, wall_offset: float) -> dict[str, Any]:
    """Every account's windows, provider figures and cooldown, times as wall-clock seconds.
    Returns a new tree of plain values; the caller owns it."""
    state: dict[str, Any] = {}
    for name, account in accounts.items():
        state[name] = {
            "windows": {
                **{window: account.windows[window].export(now, wall_offset) for window in WINDOW_NAMES},
                "other": {
                    name: window.export(now, wall_offset)
                    for name, window in account.windows.items()
                    if name not in WINDOW_NAMES
                },
            },
            "synced": {
                window: [figure.remaining, figure.valid_until + wall_offset]
                for window, figure in account.synced.items()
                if now < figure.valid_until
            },
            "cooldown": [account.cooldown_until + wall_offset, account.cooldown_reason]
            if now < account.cooldown_until
            else None,
        }
    return state


def import_accounts(
    accounts: Mapping[str, AccountQuota], state: Mapping[str, Any], now: float, trio_offset: float, seq: int
) -> int:
    """Restore what `export_accounts` saved into the accounts that still exist (figures as of
    request `seq`); returns how many were restored."""
    restored = 0
    for name, saved in state.items():
        account = accounts.get(name)
        if account is None:
            continue
        windows = {**saved["windows"].get("other", {}), **saved["windows"]}
        for window, kept in account.windows.items():
            # (state saved before a window existed lacks it; one saved as another metering
            # has another shape)
            if window in windows and isinstance(windows[window], list) == isinstance(kept, SlidingWindow):
                kept.restore(now, windows[window], trio_offset)
        for window, (remaining, valid_until) in saved["synced"].items():
            if window in WINDOW_NAMES and now < valid_until + trio_offset:
                account.synced[window] = Synced(int(remaining), seq, valid_until + trio_offset)
        if saved["cooldown"] is not None:
            until, reason = saved["cooldown"]
            if now < until + trio_offset:
                account.cooldown_until, account.cooldown_reason = until + trio_offset, str(reason)
        restored += 1
    return restored
