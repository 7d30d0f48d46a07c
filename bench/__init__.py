"""Benchmarks and simulations: each module is a script run by its path (see bench/README.md);
the tests import some as `bench.<name>` (the repository's root is on their path)."""
