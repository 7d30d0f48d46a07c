"""Talking to providers: the upstream client, the lean transport, health probing, rate-limit headers."""
