"""What the rest of the proxy derives from settings: a provider's configured and starting limits
per window, the ledger's account name for a provider's models, a client key's digest."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from ..plans import PLANS, WINDOW_SETTINGS

if TYPE_CHECKING:
    from .schema import ProviderConfig, QuotaWindow


def key_digest(key: str) -> str:
    """A client key as `[[clients]]` may list it instead of the key: `sha256:<hex>`."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def quota_name(provider: ProviderConfig, models: tuple[str, ...]) -> str:
    """The ledger's name for a provider's quota on the candidates `models` (limits are per model).

    The provider's own candidates keep the plain provider name, so settings without routes keep
    their account names (and saved state); other lists add their first id: `cerebras:gpt-oss-120b`.
    One name per list, not per chosen model: the account stays put when the choice moves.
    """
    return provider.name if models == provider.model else f"{provider.name}:{models[0]}"


def configured_limits(provider: ProviderConfig) -> dict[str, int | None]:
    """`{window: the configured figure}`: the operator's ceilings (None: none set), the
    windows of other lengths (`QuotaWindow.name`) after the five named ones."""
    limits = {window: getattr(provider, name) for window, name in WINDOW_SETTINGS.items()}
    return limits | {window.name: window.limit for window in provider.windows or ()}


def extra_windows(provider: ProviderConfig) -> dict[str, QuotaWindow]:
    """`{name: window}` of the windows declared beyond rpm, tpm, utpm, rpd and tpd."""
    return {window.name: window for window in provider.windows or ()}


def starting_limits(provider: ProviderConfig) -> dict[str, tuple[int | None, str]]:
    """`{window: (limit, source)}` before the provider states any: the configured figure
    ("configured"), else the plan's ("preset"), else none (None, "")."""
    preset = PLANS.get(provider.plan or "", {})
    starting: dict[str, tuple[int | None, str]] = {}
    for window, configured in configured_limits(provider).items():
        if configured is not None:
            starting[window] = (configured, "configured")
        elif window in preset:
            starting[window] = (preset[window], "preset")
        else:
            starting[window] = (None, "")
    return starting
