"""The quota brain: windows and buckets, the ledger, cooldowns and persistence."""
