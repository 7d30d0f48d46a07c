"""The quota ledger shared through Redis: the client for `redis_url`, the store (script, lanes,
outages), the ledger on top of it, and the shares each process books ahead."""
