"""Plan presets: the limits a provider plan states, as starting figures until the provider's own
`x-ratelimit-limit-*` headers say otherwise (see /work/shared/PROVIDERS.md for the sources).

Figures are per organisation and model, by window (`rpm`, `tpm`, `rpd`, `tpd`). They only start
the count: a provider's stated limit replaces them from its first answer, and a configured figure
stays a ceiling over both.
"""

from collections.abc import Mapping

# The setting that holds each window's figure: a provider's field in the configuration and the
# emulated provider's keyword of the same name.
WINDOW_SETTINGS: Mapping[str, str] = {
    "rpm": "requests_per_minute", "tpm": "tokens_per_minute", "utpm": "uncached_tokens_per_minute",
    "rpd": "requests_per_day", "tpd": "tokens_per_day",
}

PLANS: Mapping[str, Mapping[str, int]] = {
    # Cerebras Code Pro: 24M tokens/day; the per-minute figures are those the original proxy
    # was built for (15 requests, 165,000 tokens).
    "code-pro": {"rpm": 15, "tpm": 165_000, "tpd": 24_000_000},
    # Cerebras Code Max: 120M tokens/day; users report about 120 requests and 1.5M tokens a
    # minute (unconfirmed).
    "code-max": {"rpm": 120, "tpm": 1_500_000, "tpd": 120_000_000},
    # Pay as you go, per model: gpt-oss-120b's published 1,000 requests and 1M tokens a minute
    # (one organisation's headers said 250 and 250,000: the headers win).
    "developer": {"rpm": 1_000, "tpm": 1_000_000},
    # The free trial: 5 requests and 30,000 tokens a minute, 1M tokens a day (and an hour).
    "free": {"rpm": 5, "tpm": 30_000, "tpd": 1_000_000},
}
